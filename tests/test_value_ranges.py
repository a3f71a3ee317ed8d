"""Every value of every schema key: composed and checked in process, it is accepted or refused in
one line that names the key; a sample of the accepted values then runs one training step
(cnn-train), a layer table (cnn-summary) and an evaluation (cnn-eval).

Values are drawn per key from its declared bounds (each bound, just inside and just outside it,
every choice), from edge values (0, -1, NaN, +-inf, 2**63, 10**30...), from wrong types
(strings, lists, mappings, booleans, null) and from Hypothesis' integers and floats.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import typing
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from cnn_train.cli import _summary
from cnn_train.config_checks import (
    check_eval_config,
    check_export_config,
    check_lr_find_config,
    check_predict_config,
    check_train_config,
    declared_bounds,
    schema_of,
)
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError, first_line
from cnn_train.schema import EvalConfig, TrainConfig
from tests.helpers import QUICK, compose_config, run_cli

CONFIGS = Path(__file__).parents[1] / "configs"
GROUPS = ("model", "data", "optimizer", "scheduler", "device")
BASE = (*QUICK, "tracking.image_grid=false")  # synthetic 8 px data on the CPU, one epoch
EDGE_VALUES = (
    *("0", "1", "-1", "2", "0.5", "-0.5", "1.0", "1e-300", "-1e-300", "1e300", "-1e300"),
    *("nan", "inf", "-inf", str(2**31), str(2**32), str(2**63), str(2**64), str(-(2**63))),
    *(str(10**30), "true", "false", "null", "abc", "''", "[]", "[1,2]", "[0.5,0.5]"),
    *("[1,2,3]", "[nan,1]", "[-1,2]", "[abc]", "{a:1}", "balanced", "auto", "none", "val"),
)
# Keys whose values name files (checked where they are read), or whose true value costs minutes
# (torch.compile): in the one-step sample they keep their defaults.
NOT_STEPPED = {"resume", "model.weights", "data.root", "trainer.compile"}
# Accepted values that are valid but too big for a test machine's one step: the sample skips them.
STEP_CAPS = {
    "data.native_size": 64,
    "data.image_size": 64,
    "data.train_samples": 2048,
    "data.val_samples": 2048,
    "data.batch_size": 512,
    "data.eval_batch_size": 512,
    "data.num_classes": 1000,
    "data.num_workers": 2,
    "trainer.max_steps": 4,
}


@dataclasses.dataclass(frozen=True)
class Target:
    """One key of one config option: the overrides that choose the option, the key, its type and
    its declared bounds."""

    base: tuple[str, ...]
    key: str
    hint: Any
    bounds: Mapping[str, Any]


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


def _targets_of(node: DictConfig, schema: type, base: tuple[str, ...], path: str) -> list[Target]:
    hints = typing.get_type_hints(schema)
    return [
        Target(
            base, f"{path}.{key}" if path else str(key), hints[key], declared_bounds(schema, key)
        )
        for key in map(str, node)
        if OmegaConf.is_missing(node, key) or not isinstance(node[key], DictConfig)
    ]


@cache
def train_targets() -> tuple[Target, ...]:
    """Every key reachable from `train`: the top level, trainer.*, tracking.*, and each key of
    each option of each group."""
    cfg = compose_config("train", list(BASE))
    targets = _targets_of(cfg, TrainConfig, BASE, "")
    for section in ("trainer", "tracking"):
        targets += _targets_of(cfg[section], schema_of(cfg[section]), BASE, section)
    without_data = tuple(item for item in BASE if not item.startswith("data"))
    for group in GROUPS:
        for option in _options(group):
            base = (*(without_data if group == "data" else BASE), f"{group}={option}")
            node = compose_config("train", list(base))[group]
            targets += _targets_of(node, schema_of(node, group), base, group)
    return tuple(targets)


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def bound_values(bounds: Mapping[str, Any]) -> list[str]:
    """Each bound, and values just inside and just outside it; each choice and a near miss."""
    values = [str(choice) for choice in bounds.get("choices", ())]
    values += [f"{values[0]}x"] if values else []
    for name in ("gt", "ge", "lt", "le"):
        if name in bounds:
            edge = bounds[name]
            values += [_number_text(edge + step) for step in (-1, 1, 0)]
            values += [repr(math.nextafter(float(edge), -math.inf)), repr(edge + 1e-9)]
    return values


def values_for(target: Target) -> st.SearchStrategy[str]:
    """Override text for `target`'s value: bounds, edges, wrong types, any int, any float."""
    known = bound_values(target.bounds)
    item = st.sampled_from([*known, *EDGE_VALUES[:12]]) if known else st.sampled_from(EDGE_VALUES)
    anything = st.one_of(
        st.sampled_from(EDGE_VALUES),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.lists(item, min_size=0, max_size=3).map(lambda items: f"[{','.join(items)}]"),
    )
    return st.one_of(st.sampled_from(known), anything) if known else anything


@st.composite
def train_cases(draw: Callable[..., Any], stepped: bool = False) -> tuple[Target, str]:
    """A key of the train config (of a CPU, synthetic-data option when `stepped`) and a value."""
    targets = train_targets()
    if stepped:
        targets = tuple(
            target
            for target in targets
            if target.key not in NOT_STEPPED
            and not target.key.endswith(".name")
            and not any(choice.startswith(("data=", "device=")) for choice in target.base[-1:])
        )
    target = draw(st.sampled_from(targets))
    if stepped and bound_values(target.bounds):  # lean towards values the check accepts
        return target, draw(
            st.one_of(st.sampled_from(bound_values(target.bounds)), values_for(target))
        )
    return target, draw(values_for(target))


def one_line_naming(message: str, key: str) -> None:
    """The refusal is one line, and it names the key."""
    assert "\n" not in message.strip(), message
    assert key in message, f"{message!r} does not name {key}"


def composition_line(error: ConfigCompositionException) -> str:
    """The line the console scripts print for it (`cli._one_line_override_errors`)."""
    cause = first_line(error.__cause__) if error.__cause__ else ""
    return first_line(error).rstrip(".") + (f": {cause}" if cause else "")


def judge(
    config: str, overrides: list[str], key: str, check: Callable[[DictConfig], None]
) -> DictConfig | None:
    """The composed, checked config; None when it is refused (in one line naming `key`)."""
    try:
        cfg = compose_config(config, overrides)
    except ConfigCompositionException as error:
        one_line_naming(composition_line(error), key)
        event("refused at composition")
        return None
    try:
        check(cfg)
    except UserError as error:
        one_line_naming(str(error), key)
        event("refused by the check")
        return None
    event("accepted")
    return cfg


def judge_train_case(case: tuple[Target, str]) -> DictConfig | None:
    target, value = case
    return judge("train", [*target.base, f"{target.key}={value}"], target.key, check_train_config)


def runs_or_refuses(action: Callable[[], Any], key: str) -> Any:
    """`action()`'s result, or None after a one-line UserError naming `key` (a refusal that
    needs the data: a class count, an image size below the model's)."""
    try:
        result = action()
    except UserError as error:
        one_line_naming(str(error), key)
        event("refused when run")
        return None
    event("ran")
    return result


def step_case(case: tuple[Target, str]) -> None:
    """An accepted value trains one step and prints its layer table, or is refused in one line."""
    target, value = case
    cfg = judge_train_case((target, value))
    assume(cfg is not None)
    assert cfg is not None
    chosen = cfg
    for part in target.key.split("."):
        chosen = chosen[part]
    cap = STEP_CAPS.get(target.key)
    assume(cap is None or not isinstance(chosen, int) or chosen <= cap)
    cfg = compose_config("train", [*target.base, "trainer.max_steps=1", f"{target.key}={value}"])
    runs_or_refuses(lambda: _summary(cfg), target.key)
    with tempfile.TemporaryDirectory() as folder:
        summary = runs_or_refuses(lambda: run_training(cfg, Path(folder)), target.key)
        if summary is not None:
            assert summary["step"] >= 1
            assert (Path(folder) / "checkpoints" / "last.pt").is_file()


PROPERTY = {"deadline": None, "derandomize": True, "database": None}
SLOW_SETUP = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@settings(max_examples=200, **PROPERTY)
@given(case=train_cases())
def test_every_train_key_accepts_a_value_or_refuses_it_in_one_line(case) -> None:
    judge_train_case(case)


@pytest.mark.slow
@settings(max_examples=3000, **PROPERTY)
@given(case=train_cases())
def test_every_train_key_accepts_a_value_or_refuses_it_in_one_line_long(case) -> None:
    judge_train_case(case)


@settings(max_examples=5, suppress_health_check=SLOW_SETUP, **PROPERTY)
@given(case=train_cases(stepped=True))
def test_accepted_train_values_run_one_step_and_a_layer_table(case) -> None:
    step_case(case)


@pytest.mark.slow
@settings(max_examples=60, suppress_health_check=SLOW_SETUP, **PROPERTY)
@given(case=train_cases(stepped=True))
def test_accepted_train_values_run_one_step_and_a_layer_table_long(case) -> None:
    step_case(case)


# --- cnn-eval -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick run's best.pt, for cnn-eval."""
    run_dir = tmp_path_factory.mktemp("run")
    run_training(compose_config("train", list(BASE)), run_dir)
    return run_dir / "checkpoints" / "best.pt"


@cache
def eval_targets() -> tuple[Target, ...]:
    """Every key of cnn-eval's config but `checkpoint` (the test's own)."""
    base = ("device=cpu",)
    cfg = compose_config("eval", list(base))
    targets = _targets_of(cfg, EvalConfig, base, "")
    targets += _targets_of(cfg.data, schema_of(cfg.data), base, "data")
    return tuple(target for target in targets if target.key != "checkpoint")


@st.composite
def eval_cases(draw: Callable[..., Any]) -> tuple[Target, str]:
    target = draw(st.sampled_from(eval_targets()))
    return target, draw(values_for(target))


def eval_case(case: tuple[Target, str], checkpoint: Path) -> None:
    """A value of a cnn-eval key is refused in one line, or the evaluation runs."""
    target, value = case
    overrides = [*target.base, f"checkpoint={checkpoint}", f"{target.key}={value}"]
    cfg = judge("eval", overrides, target.key, check_eval_config)
    if cfg is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        record = runs_or_refuses(lambda: eval_checkpoint(cfg, Path(folder)), target.key)
    if record is not None:
        assert 0 <= record["acc1"] <= 1 and record["samples"] > 0


@settings(max_examples=20, suppress_health_check=SLOW_SETUP, **PROPERTY)
@given(case=eval_cases())
def test_every_eval_key_accepts_a_value_or_refuses_it_in_one_line(checkpoint, case) -> None:
    eval_case(case, checkpoint)


@pytest.mark.slow
@settings(max_examples=200, suppress_health_check=SLOW_SETUP, **PROPERTY)
@given(case=eval_cases())
def test_every_eval_key_accepts_a_value_or_refuses_it_in_one_line_long(checkpoint, case) -> None:
    eval_case(case, checkpoint)


def test_every_train_key_is_a_target() -> None:
    """The generated keys cover the groups' options, e.g. a key only one option has."""
    keys = {target.key for target in train_targets()}
    for key in ("seed", "trainer.profile_steps", "data.native_size", "scheduler.milestones"):
        assert key in keys
    assert {"optimizer.betas", "device.num_procs", "model.dropout"} <= keys


# --- The repros, and the rules between keys ---------------------------------------


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ("scheduler=cosine scheduler.min_lr=-0.5", "scheduler.min_lr must be >= 0"),
        ("scheduler=plateau scheduler.min_lr=-1e-9", "scheduler.min_lr must be >= 0"),
        ("data.val_samples=0", "data.val_samples must be >= 1"),
        ("data.num_classes=0", "data.num_classes must be in [2, "),
        ("data.native_size=0", "data.native_size must be in [1, "),
        ("data.channels=2", "data.channels must be one of 1, 3"),
        ("data.batch_size=1", "data.batch_size=1: resnet34 has BatchNorm"),
        ("device=ddp device.num_procs=2 seed=4294967295", "seed=4294967295 is too large for 2"),
        ("seed=-1", "seed must be in [0, 4294967296)"),
        ("trainer.monitor=val_ema/loss", "trainer.monitor=val_ema/loss needs an EMA"),
        ("trainer.limit_train_batches=1.0", "trainer.limit_train_batches must be a count"),
        ("trainer.limit_val_batches=0", "trainer.limit_val_batches must be a count"),
        ("trainer.overfit_batches=0", "trainer.overfit_batches must be >= 1"),
        ("trainer.class_weights=[1,0]", "trainer.class_weights must be null, balanced or"),
        ("trainer.class_weights=inverse", "trainer.class_weights must be null, balanced or"),
        ("trainer.profile_steps=[5,2]", "trainer.profile_steps must be [A, B] with 1 <= A <= B"),
        ("trainer.profile_steps=[0,2]", "trainer.profile_steps items must be >= 1"),
        ("trainer.profile_steps=[1,2,3]", "trainer.profile_steps must hold 2 values"),
        ("data.sampler=weighted", "data.sampler must be one of shuffle, balanced"),
        ("data.mixup_alpha=1e-300", "data.mixup_alpha must be 0.0 (off) or >= 1e-06"),
        ("optimizer=adamw optimizer.betas=[0.9,1]", "optimizer.betas items must be in [0, 1)"),
        ("scheduler=multistep scheduler.milestones=[5,2]", "scheduler.milestones must be incr"),
        ("optimizer.name=lamb", "optimizer.name=lamb is not one of"),
        ("data.name=imagenet22k", "unknown dataset 'imagenet22k' (data.name)"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_key(overrides: str, refusal: str) -> None:
    with pytest.raises(UserError) as raised:
        check_train_config(compose_config("train", [*BASE, *overrides.split()]))
    message = str(raised.value)
    assert message.startswith(refusal) and "\n" not in message, message


@pytest.mark.parametrize(
    "overrides",
    [
        "device=ddp device.num_procs=2 seed=4294967294",
        "model=vgg16 data.batch_size=1",  # no BatchNorm: one image per batch can train
        "trainer.ema_decay=0.999 trainer.monitor=val_ema/acc1",
        "trainer.limit_train_batches=0.5 trainer.limit_val_batches=3",
        "trainer.class_weights=balanced",
        "trainer.class_weights=[1,2,0.5,1,1,1,1,1,1,1]",
        "trainer.profile_steps=[2,2]",
        "data.cutmix_alpha=1.0",
    ],
)
def test_values_at_their_bounds_are_accepted(overrides: str) -> None:
    check_train_config(compose_config("train", [*BASE, *overrides.split()]))


@pytest.mark.parametrize(
    ("config", "check", "overrides", "refusal"),
    [
        ("eval", check_eval_config, "limit_batches=0", "limit_batches must be >= 1"),
        ("eval", check_eval_config, "weights=best", "weights must be one of auto, model, ema"),
        ("eval", check_eval_config, "tta=five_crop", "tta must be one of none, flip, ten_crop"),
        ("eval", check_eval_config, "data.eval_batch_size=0", "data.eval_batch_size must be"),
        ("eval", check_eval_config, "precision=fp64", "precision must be one of auto, fp32"),
        ("predict", check_predict_config, "images=a.png topk=0", "topk must be in [1, "),
        ("predict", check_predict_config, "images=a.png tta=x", "tta must be one of"),
        ("export", check_export_config, "format=onnx tolerance=-1", "tolerance must be >= 0"),
        ("export", check_export_config, "format=onnx tolerance=nan", "tolerance must be a fin"),
        ("export", check_export_config, "format=pdf", "format must be one of onnx, torchscript"),
        ("lr_find", check_lr_find_config, "start_lr=1 end_lr=0.1", "start_lr=1.0 must be below"),
        ("lr_find", check_lr_find_config, "steps=1", "steps must be in [2, "),
        ("lr_find", check_lr_find_config, "start_lr=0", "start_lr must be > 0"),
    ],
)
def test_each_tools_config_has_its_check(config, check, overrides: str, refusal: str) -> None:
    base = list(BASE) if config == "lr_find" else ["checkpoint=x.pt"]
    with pytest.raises(UserError) as raised:
        check(compose_config(config, [*base, *overrides.split()]))
    message = str(raised.value)
    assert message.startswith(refusal) and "\n" not in message, message


def test_the_installed_cli_refuses_a_negative_lr_floor_in_one_line(tmp_path: Path) -> None:
    """Issue 20, repro 11: `scheduler=cosine scheduler.min_lr=-0.5` trained with a negative LR."""
    done = run_cli("cnn-train", *BASE, "scheduler=cosine", "scheduler.min_lr=-0.5", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("error: scheduler.min_lr must be >= 0, got -0.5"), done.stderr


def test_choices_declared_in_the_schema_are_the_codes_own() -> None:
    from cnn_train.engine.monitor import MONITORS as CODE_MONITORS
    from cnn_train.engine.precision import PRECISIONS as CODE_PRECISIONS
    from cnn_train.schema import MONITORS, PRECISIONS

    assert set(PRECISIONS) == set(CODE_PRECISIONS)
    assert set(MONITORS) == set(CODE_MONITORS)


@pytest.mark.parametrize(
    ("key", "value", "refusal"),
    [
        ("trainer.epochs", 0, "trainer.epochs must be in [1, "),
        ("model.num_classes", 10**9, "model.num_classes must be in [2, 100000]"),
        ("data.image_size", 100_000, "data.image_size must be in [1, 4096]"),
        ("optimizer.lr", math.nan, "optimizer.lr must be a finite number"),
        ("trainer.label_smoothing", "x", "trainer.label_smoothing must be of type float"),
    ],
)
def test_a_checkpoints_plain_config_gets_the_same_check(
    checkpoint: Path, key: str, value: Any, refusal: str
) -> None:
    """A checkpoint stores its config as a plain dict: the check finds each node's schema."""
    import torch

    config = torch.load(checkpoint, weights_only=True)["config"]
    check_train_config(OmegaConf.create(config))
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(UserError, match=re.escape(refusal)):
        check_train_config(OmegaConf.create(config))
