"""What a hostile user tries against the installed CLI's command line: overrides that name code
to run, values that would reach torch unchecked, a broken, unsafe or misnamed checkpoint, an export
onto the checkpoint it reads, a decompression bomb among the images to predict. Each gets one line
and exit 1, or a clean recovery, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cnn_train.config_checks import check_train_config
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import QUICK, compose_config, run_cli
from tests.helpers.cli_errors import SCRIPTS_AND_ARGS, one_error_line

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
