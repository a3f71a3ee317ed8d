"""The issue's repros, and the rules between keys: each bad value is refused in one line that
names its key (in process and by the installed cli), values at their bounds are accepted, each
tool's config has its check, and the choices the schema declares are the code's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnn_train.config_checks import (
    check_eval_config,
    check_export_config,
    check_lr_find_config,
    check_predict_config,
    check_train_config,
)
from cnn_train.errors import UserError
from tests.helpers import compose_config, run_cli
from tests.helpers.schema_values import BASE


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
