"""Every value of every key of cnn-eval's config: it is refused in one line that names the key,
or the evaluation runs; and a checkpoint's stored plain config gets the same check as a composed
one.

The values and the judge are tests/helpers/schema_values.py's.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from omegaconf import OmegaConf

from cnn_train.config_checks import check_eval_config, check_train_config
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import compose_config
from tests.helpers.schema_values import (
    BASE,
    PROPERTY,
    SLOW_SETUP,
    Target,
    eval_cases,
    judge,
    runs_or_refuses,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick run's best.pt, for cnn-eval."""
    run_dir = tmp_path_factory.mktemp("run")
    run_training(compose_config("train", list(BASE)), run_dir)
    return run_dir / "checkpoints" / "best.pt"


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
