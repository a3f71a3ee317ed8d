"""User extensions: installed packages that register models or datasets through an entry point.

A package declares, in its pyproject.toml,

    [project.entry-points."cnn_train.plugins"]
    mynet = "mynet_package"

and the named module registers its components on import (`@register_model`, `@register_dataset`).
"""

from __future__ import annotations

import logging
from importlib import metadata

from cnn_train.errors import UserError

ENTRY_POINT_GROUP = "cnn_train.plugins"
log = logging.getLogger(__name__)
_loaded = False


def load_plugins() -> None:
    """Import every installed plugin module once, so that its registrations take effect."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as error:
            raise UserError(
                f"the plugin {entry_point.name} ({entry_point.value}) failed to import: "
                f"{type(error).__name__}: {error}; fix or uninstall that package"
            ) from error
