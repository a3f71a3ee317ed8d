"""Values for every key of the packaged configs, as Hypothesis strategies, and the judge of
each value: the config is composed and checked in process, and a value is accepted or refused in
one line that names its key.

Values are drawn per key from its declared bounds (each bound, just inside and just outside it,
every choice), from edge values (0, -1, NaN, +-inf, 2**63, 10**30...), from wrong types
(strings, lists, mappings, booleans, null) and from Hypothesis' integers and floats.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, event
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from cnn_train.config_checks import check_train_config, declared_bounds, schema_of
from cnn_train.errors import UserError, first_line
from cnn_train.schema import EvalConfig, TrainConfig
from tests.helpers import QUICK, compose_config

CONFIGS = Path(__file__).parents[2] / "configs"
GROUPS = ("model", "data", "optimizer", "scheduler", "device")
BASE = (*QUICK, "tracking.image_grid=false")  # synthetic 8 px data on the CPU, one epoch
EDGE_VALUES = (
    *("0", "1", "-1", "2", "0.5", "-0.5", "1.0", "1e-300", "-1e-300", "1e300", "-1e300"),
    *("nan", "inf", "-inf", str(2**31), str(2**32), str(2**63), str(2**64), str(-(2**63))),
    *(str(10**30), "true", "false", "null", "abc", "''", "[]", "[1,2]", "[0.5,0.5]"),
    *("[1,2,3]", "[nan,1]", "[-1,2]", "[abc]", "{a:1}", "balanced", "auto", "none", "val"),
)
# Keys whose values name files (checked where they are read), or whose true value costs minutes
# (torch.compile): in the one-step sample (tests/test_value_ranges_train.py) they keep their
# defaults.
NOT_STEPPED = {"resume", "model.weights", "data.root", "trainer.compile"}


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


PROPERTY = {"deadline": None, "derandomize": True, "database": None}
SLOW_SETUP = [HealthCheck.too_slow, HealthCheck.filter_too_much]


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
