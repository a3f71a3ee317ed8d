"""What a hostile user tries against the installed CLI: each gets one line and exit 1, or a clean
recovery, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnn_train.engine.loop as loop
import cnn_train.engine.trainer as trainer_module
from cnn_train.config_checks import check_train_config
from cnn_train.engine.stepper import Stepper
from cnn_train.engine.trainer import run_training
from cnn_train.errors import Interrupted, UserError
from tests.helpers import QUICK, compose_config, run_cli, write_image, write_tree
from tests.helpers.runs import LONG_RUN, assert_same_state, finish, start_training

SCRIPTS_AND_ARGS = {
    "cnn-train": QUICK,
    "cnn-eval": ["checkpoint=x.pt"],
    "cnn-summary": [],
    "cnn-predict": ["checkpoint=x.pt", "images=x.png"],
    "cnn-export": ["checkpoint=x.pt", "format=onnx"],
}


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr
    return line


CODE_OVERRIDES = [
    "+hydra.callbacks.x._target_=builtins.open +hydra.callbacks.x.file=VICTIM "
    "+hydra.callbacks.x.mode=w",
    "+hydra.callbacks.x._target_=torch.load +hydra.callbacks.x.f=VICTIM",
    "hydra.callbacks.sweep_summary._target_=builtins.print",
    "++hydra.job_logging.handlers.console.class=logging.FileHandler",
]


@pytest.mark.parametrize(
    ("script", "callback"),
    [("cnn-train", code) for code in CODE_OVERRIDES]
    + [(script, CODE_OVERRIDES[0]) for script in sorted(SCRIPTS_AND_ARGS) if script != "cnn-train"],
)
def test_the_command_line_cannot_name_code_to_run(tmp_path: Path, script: str, callback: str):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    overrides = callback.replace("VICTIM", str(victim)).split()
    done = run_cli(script, *SCRIPTS_AND_ARGS[script], *overrides, cwd=tmp_path)
    assert "the command line cannot name code to run" in one_error_line(done)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["model=vgg16"], "model.name (resnet34 -> vgg16)"),
        (["data.num_classes=4"], "data.num_classes (10 -> 4)"),
        (["optimizer=adamw"], "optimizer.name (sgd -> adamw)"),
        (["data.native_size=16"], "data.native_size (8 -> 16)"),
    ],
)
def test_resume_refuses_a_checkpoint_of_other_settings(
    train_config, tmp_path: Path, overrides: list[str], names: str
) -> None:
    run_training(train_config(), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"trained with other settings: .*") as raised:
        run_training(train_config("resume=auto", *overrides), tmp_path)
    assert names in str(raised.value) and "\n" not in str(raised.value)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_allows_a_longer_run_moved_data_and_other_workers(train_config, tmp_path) -> None:
    run_training(train_config(), tmp_path)
    run_training(train_config("resume=auto", "trainer.epochs=2", "data.num_workers=1"), tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("requested", [3, 12])
def test_a_class_count_other_than_the_datasets_is_refused_up_front(
    train_config, tmp_path: Path, requested: int
) -> None:
    with pytest.raises(UserError, match=f"model.num_classes={requested} but the dataset has 10"):
        run_training(train_config(f"model.num_classes={requested}"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_one_class_dataset_is_refused(train_config, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least 2"):
        run_training(train_config("data.num_classes=1"), tmp_path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.image_size=100000", "data.image_size"),
        ("optimizer.momentum=-1", "optimizer.momentum"),
        ("optimizer.momentum=nan", "optimizer.momentum"),
        ("optimizer=adamw optimizer.eps=-1", "optimizer.eps"),
        ("optimizer=adamw optimizer.betas=[nan,2]", "optimizer.betas"),
        ("optimizer=adamw optimizer.betas=[0.9,2]", "optimizer.betas"),
        ("scheduler=step scheduler.step_size=0", "scheduler.step_size"),
        ("scheduler.pct_start=2", "scheduler.pct_start"),
        ("scheduler=cosine scheduler.warmup_start_factor=0", "scheduler.warmup_start_factor"),
        ("+trainer.epoch=5", "trainer.epoch"),
        ("+foo=bar", "foo"),
    ],
)
def test_values_that_would_reach_torch_unchecked_are_refused(override: str, key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as raised:
        check_train_config(compose_config("train", [*QUICK, *override.split()]))
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_cnn_export_never_overwrites_the_checkpoint_it_reads(tmp_path: Path, train_config):
    run_training(train_config(), tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    before = best.read_bytes()
    done = run_cli("cnn-export", f"checkpoint={best}", "format=torchscript", f"output={best}",
                   cwd=tmp_path)  # fmt: skip
    assert "is the checkpoint being exported" in one_error_line(done)
    assert best.read_bytes() == before
    (tmp_path / "out").mkdir()
    done = run_cli(
        "cnn-export", f"checkpoint={best}", "format=torchscript", "output=out", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "best.ts").is_file()


@pytest.mark.slow
def test_cnn_predict_skips_a_decompression_bomb_and_classifies_the_rest(tmp_path, train_config):
    run_training(train_config("data.num_classes=3"), tmp_path / "run")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a_good.png")
    Image.new("1", (20000, 20000)).save(folder / "b_bomb.png")  # 400 Mpx: over Pillow's limit
    Image.new("RGB", (8, 8), "blue").save(folder / "c_good.png")
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    done = run_cli("cnn-predict", f"checkpoint={best}", f"images={folder}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "b_bomb.png" in done.stderr
    blocks = done.stdout.split(str(folder))
    assert len([block for block in blocks if "class_" in block]) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty (0 bytes)"),
        (b"\x80\x04K", "cut short, damaged or not a PyTorch checkpoint"),
        (b"PK\x03\x04garbage", "cut short, damaged or not a PyTorch checkpoint"),
    ],
)
def test_a_broken_checkpoint_is_named_in_plain_words(tmp_path: Path, content, expected):
    (tmp_path / "bad.pt").write_bytes(content)
    done = run_cli("cnn-eval", "checkpoint=bad.pt", cwd=tmp_path)
    line = one_error_line(done)
    assert expected in line and "weights_only" not in line and "<class" not in line


def test_an_unsafe_pickle_is_refused_without_advice_to_unpickle_it(tmp_path: Path) -> None:
    torch.save({"model": {}, "sneaky": Path("x")}, tmp_path / "evil.pt")
    line = one_error_line(run_cli("cnn-eval", "checkpoint=evil.pt", cwd=tmp_path))
    assert "never unpickles" in line and "weights_only=False" not in line


def test_a_folder_passed_as_a_checkpoint_names_the_file_to_pass(tmp_path, train_config):
    run_training(train_config(), tmp_path / "run")
    line = one_error_line(run_cli("cnn-eval", "checkpoint=run", cwd=tmp_path))
    assert "is a folder" in line and "run/checkpoints/best.pt" in line


def poison_at_call(call: int):
    """A Stepper.train_batch that makes the weights NaN just before the n-th batch."""
    original, calls = Stepper.train_batch, {"count": 0}

    def train_batch(stepper: Stepper, images, targets):
        calls["count"] += 1
        if calls["count"] == call:
            with torch.no_grad():
                for parameter in stepper.raw_model.parameters():
                    parameter.fill_(float("nan"))
        return original(stepper, images, targets)

    return train_batch


@pytest.mark.parametrize(
    ("where", "call", "overrides"),
    [
        ("a checkpoint_every_steps step", 2, ["trainer.checkpoint_every_steps=2"]),
        ("the last step of an epoch", 4, []),
        ("the last step of the run", 8, []),
    ],
)
def test_a_deferred_nonfinite_check_never_saves_nan_weights(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where, call, overrides
) -> None:
    """The GPU's one-step-late check, forced on the CPU: every save reads the last flag first."""
    monkeypatch.setattr(loop, "DEFERRED_DEVICE_TYPES", frozenset({"cpu"}))
    monkeypatch.setattr(Stepper, "train_batch", poison_at_call(call))
    cfg = train_config("trainer.epochs=2", *overrides)  # 64 images / 16 = 4 steps an epoch
    with pytest.raises(UserError, match=f"non-finite at step {call};"):
        run_training(cfg, tmp_path)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        assert state["step"] < call, where
        assert all(
            torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
        )


def test_a_stop_signal_during_validation_saves_and_the_resumed_run_is_bitwise_equal(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tmp_path / "straight"
    run_training(train_config("trainer.epochs=2"), straight)
    real_evaluate = trainer_module.eval_pass
    calls = {"count": 0}

    def signal_in_last_validation(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:  # the last epoch's validation: SIGTERM arrives mid-way
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "eval_pass", signal_in_last_validation)
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted) as raised:
        run_training(train_config("trainer.epochs=2"), stopped)
    assert raised.value.exit_code == 143
    state = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["epoch_done"], state["batch_in_epoch"]) == (1, False, 4)
    monkeypatch.setattr(trainer_module, "eval_pass", real_evaluate)
    run_training(train_config("trainer.epochs=2", "resume=auto"), stopped)
    assert_same_state(straight, stopped)


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start_training(run_dir, base=[*LONG_RUN, "trainer.epochs=30"])
    lock = run_dir / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1]
        time.sleep(0.05)
    try:
        second = run_cli("cnn-train", *LONG_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        line = one_error_line(second)
        assert f"in use by process {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    # The lock died with its holder (SIGKILL): the folder is usable again, and the killed save's
    # temporary file is cleared.
    stale = run_dir / "checkpoints" / ".last.pt.999999.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x" * 1000)
    finish(run_dir, "resume=auto", "trainer.max_steps=2")
    assert not stale.exists()


def test_a_symlink_loop_is_skipped_and_no_file_lands_in_two_splits(tmp_path: Path) -> None:
    from cnn_train.data.folder import scan_folder

    root = tmp_path / "images"
    write_tree(root, classes=("a", "b", "c"), per_class=8)
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "twin.jpg").symlink_to(root / "c" / "0.jpg")
    dataset = scan_folder(str(root), val_fraction=0.25)
    train, val = dataset.splits["train"].paths, dataset.splits["val"].paths
    real = [os.path.realpath(path) for path in [*train, *val]]
    assert len(real) == len(set(real)) == 24
    assert not any("/self/" in path for path in train + val)


def test_an_unreadable_class_folder_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from cnn_train.data import folder as folder_module

    root = tmp_path / "images"
    write_tree(root, classes=("a", "b"), per_class=4)
    real_scandir = os.scandir

    def locked(path="."):
        if str(path).endswith("/b"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", locked)
    with pytest.raises(UserError, match=r"cannot read .*/b \(Permission denied\)"):
        folder_module.scan_folder(str(root), val_fraction=0.25)


def test_too_few_images_per_class_says_so_in_a_short_line(tmp_path: Path) -> None:
    from cnn_train.data.folder import scan_folder

    root = tmp_path / "images"
    for index in range(300):
        (root / f"class{index:03d}").mkdir(parents=True)
        write_image(root / f"class{index:03d}" / "only.png", "RGB", seed=index, size=(4, 4))
    with pytest.raises(UserError) as raised:
        scan_folder(str(root), val_fraction=0.1)
    message = str(raised.value)
    assert "300 images in 300 classes (the smallest has 1)" in message and len(message) < 400
