"""cnn-train's config tree (`cnn_train.configs`). Importing it registers the schemas that its
YAML files extend in Hydra's ConfigStore and the resolvers that name run folders, so
`initialize_config_module("cnn_train.configs")` and `compose("train")` work from any script,
without importing `cnn_train.cli`."""

from cnn_train.folders import register_resolvers
from cnn_train.schema import register_configs

register_configs()
register_resolvers()
