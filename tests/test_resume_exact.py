"""Resume is exact or refused: every setting that changes the result must be the checkpoint's
(seed, class names, model, data, optimizer, every trainer key but the run's length, logging and
saving); a difference is one line naming the keys, and the checkpoint is left as it was."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from cnn_train.checkpoint import load_checkpoint
from cnn_train.engine.resume import CHANGEABLE_ON_RESUME, check_resumable
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.schema import TrainerConfig
from tests.helpers import QUICK, compose_config, write_tree

# QUICK with a folder dataset in place of the synthetic one
FOLDER = ["data=folder", *(o for o in QUICK if not o.startswith("data"))]
FIRST_RUN = ("seed=3", "trainer.label_smoothing=0.3", "trainer.grad_clip_norm=1.0")
# The trainer keys that change only the run's length, logging or saving.
LENGTH_LOGGING_SAVING = {
    "epochs",
    "max_steps",
    "log_every_steps",
    "checkpoint_every_steps",
    "profile_steps",
    "save_top_k",
    "save_every_epochs",
    "detect_anomaly",
}


def refusal(run: Any, tmp_path: Path) -> str:
    """The one-line refusal of a resume `run()`; the checkpoint must be untouched."""
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(UserError, match="trained with other settings") as raised:
        run()
    assert last.read_bytes() == before
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_resume_without_the_first_runs_settings_is_refused(train_config, tmp_path: Path):
    """Issue 20, repro 7: seed, label smoothing and clipping were silently dropped."""
    run_training(train_config(*FIRST_RUN), tmp_path)
    message = refusal(lambda: run_training(train_config("resume=auto"), tmp_path), tmp_path)
    for shown in (
        "seed (3 -> 0)",
        "trainer.grad_clip_norm (1.0 -> None)",
        "trainer.label_smoothing (0.3 -> 0.1)",  # the recipe's (model_recipe/resnet34_sgd),
    ):
        assert shown in message


def test_resume_with_the_same_settings_may_run_longer_and_log_and_save_otherwise(
    train_config, tmp_path: Path
) -> None:
    run_training(train_config(*FIRST_RUN), tmp_path)
    changed = (
        "trainer.epochs=2",
        "trainer.max_steps=5",  # one step into the second epoch: enough to show it continues
        "trainer.log_every_steps=1",
        "trainer.checkpoint_every_steps=3",
        "trainer.save_top_k=2",
        "trainer.save_every_epochs=1",
        "data.num_workers=1",
    )
    run_training(train_config(*FIRST_RUN, "resume=auto", *changed), tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_resume_on_data_of_other_class_names_is_refused(tmp_path: Path) -> None:
    """Issue 20, repro 7: a data.root of other classes (same count) trained on."""
    write_tree(tmp_path / "pets", classes=("cat", "dog"))
    write_tree(tmp_path / "bugs", classes=("ant", "bee"))
    folder = [*FOLDER, "data.image_size=32", "data.num_workers=0", "data.batch_size=4"]
    run_dir = tmp_path / "run"
    run_training(compose_config("train", [*folder, f"data.root={tmp_path / 'pets'}"]), run_dir)
    resumed = compose_config("train", [*folder, f"data.root={tmp_path / 'bugs'}", "resume=auto"])
    message = refusal(lambda: run_training(resumed, run_dir), run_dir)
    assert "class names (cat, dog -> ant, bee)" in message


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One finished quick run's checkpoint and its path."""
    run_dir = tmp_path_factory.mktemp("run")
    run_training(compose_config("train", QUICK), run_dir)
    path = run_dir / "checkpoints" / "last.pt"
    return load_checkpoint(path), path


def other_value(value: Any) -> Any:
    """A value of the same kind that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value > 1 else value / 2 + 0.25
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return [*value, 1]
    return 2  # None: any value is another


@pytest.mark.parametrize("key", [item.name for item in dataclasses.fields(TrainerConfig)])
def test_every_trainer_key_but_length_logging_and_saving_must_match(
    saved_run: tuple[dict[str, Any], Path], key: str
) -> None:
    saved, path = saved_run
    config = copy.deepcopy(saved["config"])
    config["trainer"][key] = other_value(config["trainer"][key])
    names = saved["class_names"]
    if key in LENGTH_LOGGING_SAVING:
        assert f"trainer.{key}" in CHANGEABLE_ON_RESUME
        check_resumable(saved, config, path, names)
        return
    with pytest.raises(UserError, match=rf"trained with other settings: trainer\.{key} \("):
        check_resumable(saved, config, path, names)


def test_seed_and_class_names_must_match(saved_run: tuple[dict[str, Any], Path]) -> None:
    saved, path = saved_run
    check_resumable(saved, saved["config"], path, saved["class_names"])
    config = {**saved["config"], "seed": 7}
    with pytest.raises(UserError, match=r"seed \(0 -> 7\)"):
        check_resumable(saved, config, path, saved["class_names"])
    renamed = [f"other_{name}" for name in saved["class_names"]]
    with pytest.raises(UserError, match=r"class names \(class_0, class_1, class_2 and 7 more ->"):
        check_resumable(saved, saved["config"], path, renamed)


def test_a_setting_the_checkpoint_predates_counts_as_its_default(
    saved_run: tuple[dict[str, Any], Path],
) -> None:
    saved, path = saved_run
    older = copy.deepcopy(saved)
    del older["config"]["trainer"]["monitor"], older["config"]["trainer"]["class_weights"]
    check_resumable(older, saved["config"], path, saved["class_names"])
    config = copy.deepcopy(saved["config"])
    config["trainer"]["monitor"] = "val/loss"
    with pytest.raises(UserError, match=r"trainer\.monitor \(val/acc1 -> val/loss\)"):
        check_resumable(older, config, path, saved["class_names"])
