"""The config schema: every key's type and default value, registered in Hydra's ConfigStore.

This module is the one home of every default. A YAML file under `configs/<group>/` extends its
option's schema here and names only the values that option changes (see each file's header);
`cnn-train --cfg job` shows the composed result.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from cnn_train.schema.data import (
    AUTO_AUGMENT_POLICIES,
    DataConfig,
    DigitsConfig,
    FolderDataConfig,
    SyntheticConfig,
    VisionDataConfig,
)
from cnn_train.schema.fields import (
    EXPORT_FORMATS,
    MAX_CLASSES,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MONITORS,
    PRECISIONS,
    TTA,
    WEIGHTS,
    bounded,
)
from cnn_train.schema.groups import (
    AdamConfig,
    AdamWConfig,
    CosineConfig,
    DDPConfig,
    DeviceConfig,
    DropoutModelConfig,
    ModelConfig,
    MultiStepConfig,
    OneCycleConfig,
    OptimizerConfig,
    PlateauConfig,
    ResNetModelConfig,
    RMSpropConfig,
    SchedulerConfig,
    SGDConfig,
    SplitDeviceConfig,
    StepLRConfig,
)
from cnn_train.schema.run import (
    EvalConfig,
    EvalDataConfig,
    ExportConfig,
    LrFindConfig,
    PredictConfig,
    TrackingConfig,
    TrainConfig,
    TrainerConfig,
)

SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"base": ModelConfig, "resnet": ResNetModelConfig, "dropout": DropoutModelConfig},
    "data": {
        "base": DataConfig,
        "digits": DigitsConfig,
        "synthetic": SyntheticConfig,
        "vision": VisionDataConfig,
        "folder": FolderDataConfig,
    },
    "optimizer": {
        "base": OptimizerConfig,
        "sgd": SGDConfig,
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "rmsprop": RMSpropConfig,
    },
    "scheduler": {
        "base": SchedulerConfig,
        "step": StepLRConfig,
        "multistep": MultiStepConfig,
        "plateau": PlateauConfig,
        "cosine": CosineConfig,
        "onecycle": OneCycleConfig,
    },
    "device": {"base": DeviceConfig, "ddp": DDPConfig, "split": SplitDeviceConfig},
}


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore as `schema/<group>/<name>`."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="lr_find_schema", node=LrFindConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "EXPORT_FORMATS",
    "MAX_CLASSES",
    "MAX_EPOCHS",
    "MAX_IMAGE_SIZE",
    "MONITORS",
    "PRECISIONS",
    "SCHEMAS",
    "TTA",
    "WEIGHTS",
    "AdamConfig",
    "AdamWConfig",
    "CosineConfig",
    "DDPConfig",
    "DataConfig",
    "DeviceConfig",
    "DigitsConfig",
    "DropoutModelConfig",
    "EvalConfig",
    "EvalDataConfig",
    "ExportConfig",
    "FolderDataConfig",
    "LrFindConfig",
    "ModelConfig",
    "MultiStepConfig",
    "OneCycleConfig",
    "OptimizerConfig",
    "PlateauConfig",
    "PredictConfig",
    "RMSpropConfig",
    "ResNetModelConfig",
    "SGDConfig",
    "SchedulerConfig",
    "SplitDeviceConfig",
    "StepLRConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainerConfig",
    "VisionDataConfig",
    "bounded",
    "register_configs",
]
