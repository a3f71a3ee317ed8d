"""Every value of every key of cnn-train's config: composed and checked in process, it is
accepted or refused in one line that names the key; a sample of the accepted values then runs one
training step (cnn-train) and a layer table (cnn-summary).

The values and the judge are tests/helpers/schema_values.py's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings

from cnn_train.cli import _summary
from cnn_train.engine.trainer import run_training
from tests.helpers import compose_config
from tests.helpers.schema_values import (
    PROPERTY,
    SLOW_SETUP,
    Target,
    judge_train_case,
    runs_or_refuses,
    train_cases,
    train_targets,
)

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


@settings(max_examples=60, **PROPERTY)
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


def test_every_train_key_is_a_target() -> None:
    """The generated keys cover the groups' options, e.g. a key only one option has."""
    keys = {target.key for target in train_targets()}
    for key in ("seed", "trainer.profile_steps", "data.native_size", "scheduler.milestones"):
        assert key in keys
    assert {"optimizer.betas", "device.num_procs", "model.dropout"} <= keys
