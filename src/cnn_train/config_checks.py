"""Config checks: the bounds every schema field declares, applied by one generic walk
(`check_fields`), and the rules between keys that a bound cannot state. Each raises a one-line
UserError naming the key."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cnn_train.errors import UserError
from cnn_train.schema import (
    SCHEMAS,
    EvalConfig,
    ExportConfig,
    PredictConfig,
    TrainConfig,
)

NUMPY_SEEDS = 2**32  # np.random.seed takes 0 .. 2**32 - 1; rank r seeds with seed + r
# Loss weights are float32 and relative: outside this range they overflow, or round to 0 (a
# batch of such classes divides 0 by 0).
CLASS_WEIGHTS = (1e-6, 1e6)


def require(ok: bool, message: str) -> None:
    """Raise a UserError with `message` unless `ok`."""
    if not ok:
        raise UserError(message)


# --- The generic check: what each field declares (schema.bounded) --------------------------


def declared_bounds(schema: type, name: str) -> Mapping[str, Any]:
    """The bounds of field `name`: where it is declared with bounds, on `schema` or a base (a
    subclass that only changes a default keeps them)."""
    for cls in schema.__mro__:
        declared = getattr(cls, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata:
            return declared.metadata
    return {}


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint` (a bool is not a number here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, (list, ListConfig)) and all(_matches(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True  # Any, or a node the walk checks by its own schema


def _range_text(bounds: Mapping[str, Any]) -> str | None:
    """`> 0`, `>= 1`, `in (0, 1)`, `in [0, 4096]`... for the numeric bounds; None without any."""
    low = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds.get("ge"))
    high = (")", bounds["lt"]) if "lt" in bounds else ("]", bounds.get("le"))
    if low[1] is not None and high[1] is not None:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low[1] is not None:
        return f"{'>' if low[0] == '(' else '>='} {low[1]}"
    if high[1] is not None:
        return f"{'<' if high[0] == ')' else '<='} {high[1]}"
    return None


def _within(value: Any, bounds: Mapping[str, Any]) -> bool:
    if "off" in bounds and value == bounds["off"]:
        return True
    if "choices" in bounds and value not in bounds["choices"]:
        return False
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True
    return not (
        ("gt" in bounds and not value > bounds["gt"])
        or ("ge" in bounds and not value >= bounds["ge"])
        or ("lt" in bounds and not value < bounds["lt"])
        or ("le" in bounds and not value <= bounds["le"])
    )


def _refusal(where: str, value: Any, bounds: Mapping[str, Any], *, item: bool) -> str:
    shown = f"{where} items" if item else where
    if "choices" in bounds:
        names = ", ".join(dict.fromkeys(str(choice).lower() for choice in bounds["choices"]))
        return f"{shown} must be one of {names}, got {value}"
    off = f"{bounds['off']} (off) or " if "off" in bounds else ""
    return f"{shown} must be {off}{_range_text(bounds)}, got {value}"


def check_value(value: Any, hint: Any, bounds: Mapping[str, Any], where: str) -> None:
    """One field's value: its type, finite numbers, and the bounds the field declares."""
    if value is None or isinstance(value, DictConfig):
        return
    require(_matches(value, hint), f"{where} must be of type {_type_name(hint)}, got {value!r}")
    is_list = isinstance(value, (list, ListConfig))
    items = list(value) if is_list else [value]
    shown = items if is_list else value
    for item in items:
        finite = not isinstance(item, float) or math.isfinite(item)
        require(finite, f"{where} must be a finite number, got {shown}")
    if is_list and "length" in bounds:
        count = bounds["length"]
        require(len(items) == count, f"{where} must hold {count} values, got {shown}")
    for item in items:
        require(_within(item, bounds), _refusal(where, shown, bounds, item=is_list))


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def schema_of(node: DictConfig, group: str | None = None) -> type | None:
    """The dataclass of a config node: its own type, else (a checkpoint's plain config) the
    schema of `group` (`model`, `data`...) with exactly its keys, else the group's base."""
    typed = OmegaConf.get_type(node)
    if typed is not None and dataclasses.is_dataclass(typed):
        return typed
    options = SCHEMAS.get(group or "", {})
    for schema in options.values():
        if {item.name for item in dataclasses.fields(schema)} == set(node):
            return schema
    return options.get("base")


def check_fields(node: DictConfig, schema: type, path: str = "", *, strict: bool = True) -> None:
    """Apply every bound that `schema` declares to `node`, and walk into its group nodes.

    `strict`: a key the schema does not have is refused (a key added with `+` is a typo).
    """
    known = {item.name: item for item in dataclasses.fields(schema)}
    for key in node:
        where = f"{path}.{key}" if path else str(key)
        if key not in known:
            require(not strict, f"unknown key {where}; valid keys: {', '.join(sorted(known))}")
            continue
        if OmegaConf.is_missing(node, key):
            continue  # required: the code that reads it says so
        value = node[key]
        check_value(value, _hints(schema)[key], declared_bounds(schema, key), where)
        if isinstance(value, DictConfig):
            hint = _hints(schema)[key]
            inner = schema_of(value, str(key)) or (hint if dataclasses.is_dataclass(hint) else None)
            if inner is not None:
                check_fields(value, inner, where, strict=strict)


def _finite_numbers(node: Any, path: str) -> None:
    """Every float in the config is a number: `nan` and `inf` are refused wherever they appear."""
    if isinstance(node, DictConfig):
        for key in node:
            if not OmegaConf.is_missing(node, key):
                _finite_numbers(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, value in enumerate(node):
            _finite_numbers(value, f"{path}.{index}")
    elif isinstance(node, float):
        require(math.isfinite(node), f"{path} must be a finite number, got {node}")


def _reject_targets(node: Any, path: str = "") -> None:
    """Components are chosen by name from this package's registries, never by a `_target_`."""
    if isinstance(node, DictConfig):
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            require(
                key != "_target_",
                f"{where} is not accepted: pick components by name (model=..., optimizer=...)",
            )
            _reject_targets(node._get_node(key), where)


def _check_tool_config(cfg: DictConfig, schema: type) -> None:
    """What every console script's config gets: no `_target_`, finite numbers, the bounds of
    its schema (unknown keys refused at the top; `data.<key>` is the checkpoint's to judge)."""
    _reject_targets(cfg)
    _finite_numbers(cfg, "")
    check_fields(cfg, schema, strict=False)
    known = {item.name for item in dataclasses.fields(schema)}
    for key in cfg:
        require(key in known, f"unknown key {key}; valid keys: {', '.join(sorted(known))}")


# --- The console scripts' configs --------------------------------------------------------


def check_train_config(cfg: DictConfig) -> None:
    """A cnn-train config before anything is built: no `_target_`, no unknown key, every
    declared bound, names the registries know, and the rules between keys."""
    _reject_targets(cfg)
    _finite_numbers(cfg, "")
    check_fields(cfg, schema_of(cfg) or TrainConfig)
    from cnn_train.data.rules import check_data_rules

    check_names(cfg)
    check_data_rules(cfg.data)  # keys of the data group that bind each other
    check_trainer_rules(cfg.trainer)
    check_seed(cfg.seed, cfg.device)
    check_batch_norm_batch(cfg)
    if "milestones" in cfg.scheduler:
        milestones = list(cfg.scheduler.milestones)
        require(
            milestones == sorted(milestones),
            f"scheduler.milestones must be increasing epochs, got {milestones}",
        )


def check_lr_find_config(cfg: DictConfig) -> None:
    """A cnn-lr-find config: a cnn-train config, and an LR range that rises."""
    check_train_config(cfg)
    require(
        cfg.start_lr < cfg.end_lr,
        f"start_lr={cfg.start_lr} must be below end_lr={cfg.end_lr}: the test raises the LR",
    )


def check_eval_config(cfg: DictConfig) -> None:
    """A cnn-eval config (its `data.*` overrides are checked again, merged with the checkpoint's
    data config, by `check_data_config`)."""
    _check_tool_config(cfg, EvalConfig)
    check_device_name(cfg.device)


def check_predict_config(cfg: DictConfig) -> None:
    """A cnn-predict config: top-k, weights, TTA, and images as a path or a list of paths."""
    _check_tool_config(cfg, PredictConfig)
    if not OmegaConf.is_missing(cfg, "images"):
        images = cfg.images
        paths = list(images) if isinstance(images, ListConfig) else [images]
        require(
            bool(paths) and all(isinstance(path, str) for path in paths),
            f"images must be a file, a folder or a list of files, got {images}",
        )


def check_export_config(cfg: DictConfig) -> None:
    """A cnn-export config: the format, weights and a finite, non-negative tolerance."""
    _check_tool_config(cfg, ExportConfig)


def check_data_config(data: DictConfig) -> None:
    """A data config on its own (a checkpoint's, with cnn-eval's `data.*` overrides on top)."""
    from cnn_train.data.rules import check_data_rules

    _finite_numbers(data, "data")
    schema = schema_of(data, "data")
    if schema is not None:
        check_fields(data, schema, "data", strict=False)
    check_data_rules(data)


# --- Rules between keys, and names the registries hold ----------------------------------------


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    require(value in allowed, f"{key}={value} is not one of {', '.join(allowed)}")


def check_device_name(device: DictConfig) -> None:
    """A device option that `distributed.DEVICES` knows."""
    from cnn_train.distributed import DEVICES

    _one_of(device.name, tuple(DEVICES), "device.name")


def check_names(cfg: DictConfig) -> None:
    """The model, its variant, the dataset, its preset and the device: names registries know."""
    from cnn_train.data.registry import get_dataset_builder
    from cnn_train.data.transforms import check_preset
    from cnn_train.models import get_spec
    from cnn_train.optim import OPTIMIZERS, SCHEDULERS

    get_dataset_builder(cfg.data.name)  # the data first, as it loads; its refusal lists names
    spec = get_spec(cfg.model.name)
    _one_of(cfg.model.variant, ("auto", *spec.min_size), "model.variant")
    check_preset(cfg.data.augment)
    _one_of(cfg.optimizer.name, tuple(OPTIMIZERS), "optimizer.name")
    _one_of(cfg.scheduler.name, tuple(SCHEDULERS), "scheduler.name")
    check_device_name(cfg.device)


def _batch_limit(value: Any, key: str) -> None:
    """A count of batches (an int >= 1) or a share of them (a float in (0, 1))."""
    count = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    share = isinstance(value, float) and 0 < value < 1
    require(
        value is None or count or share,
        f"{key} must be a count of batches (an int >= 1) or a share of them (a float in "
        f"(0, 1)), got {value!r}",
    )


def check_trainer_rules(trainer: DictConfig) -> None:
    """Batch limits, class weights, the profiled steps, and an EMA for an EMA monitor."""
    for key in ("limit_train_batches", "limit_val_batches"):
        _batch_limit(trainer[key], f"trainer.{key}")
    weights = trainer.class_weights
    low, high = CLASS_WEIGHTS
    listed = isinstance(weights, ListConfig) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and low <= w <= high
        for w in weights
    )
    require(
        weights in (None, "balanced") or (listed and len(weights) > 0),
        f"trainer.class_weights must be null, balanced or a list of weights in [{low:g}, {high:g}] "
        f"(one per class), got {weights}",
    )
    steps = trainer.profile_steps
    require(
        steps is None or steps[0] <= steps[1],
        f"trainer.profile_steps must be [A, B] with 1 <= A <= B, got {steps}",
    )
    require(
        not trainer.monitor.startswith("val_ema/") or trainer.ema_decay is not None,
        f"trainer.monitor={trainer.monitor} needs an EMA: set trainer.ema_decay (e.g. 0.999)",
    )


def process_count_of(device: DictConfig) -> int:
    """How many processes (ranks) a run of this device option has."""
    if "num_procs" not in device:  # not data parallel
        return 1
    from cnn_train.distributed import launched_by_torchrun, process_count

    if launched_by_torchrun():  # a torchrun or SLURM job
        return int(os.environ["WORLD_SIZE"])
    return process_count(device)


def check_seed(seed: int, device: DictConfig) -> None:
    """Every rank seeds NumPy with seed + rank: the last must stay within NumPy's range."""
    processes = process_count_of(device)
    require(
        seed + processes - 1 < NUMPY_SEEDS,
        f"seed={seed} is too large for {processes} processes (rank r seeds NumPy with seed + r, "
        f"below 2**32); use seed <= {NUMPY_SEEDS - processes}",
    )


def has_batch_norm(model: DictConfig) -> bool:
    """Whether the model has BatchNorm layers (built on the meta device: nothing allocated)."""
    import torch
    from torch import nn

    from cnn_train.models import get_spec
    from cnn_train.models.registry import build_from_config

    spec = get_spec(model.name)
    variant = model.variant if model.variant in spec.min_size else next(iter(spec.min_size))
    with torch.device("meta"):
        built = build_from_config(model, num_classes=2, variant=variant)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(module, norms) for module in built.modules())


def check_batch_norm_batch(cfg: DictConfig) -> None:
    """BatchNorm cannot train on one image per process (its statistics need two or more)."""
    if cfg.data.batch_size == 1 and not cfg.device.get("sync_bn") and has_batch_norm(cfg.model):
        raise UserError(
            f"data.batch_size=1: {cfg.model.name} has BatchNorm, which cannot train on one "
            "image per process; use data.batch_size=2 or more"
        )
