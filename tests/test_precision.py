"""`trainer.precision=auto` on the CPU, and evaluation in the precision the run trained in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cnn_train.engine.precision as precision_module
from cnn_train.engine.evaluator import eval_checkpoint
from cnn_train.engine.precision import cpu_has_native_bf16, resolve_precision
from cnn_train.engine.trainer import run_training
from tests.helpers import compose_config, read_metrics, run_cli

CPU = torch.device("cpu")
TINY = ["data.train_samples=16", "data.val_samples=12", "data.batch_size=8", "trainer.max_steps=1"]
DDP = [
    "device=ddp",
    "device.num_procs=2",
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=32",
    "data.val_samples=15",
    "data.batch_size=8",
    "trainer.epochs=1",
]


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU).name == ("bf16" if native else "fp32")
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, CPU).name == name
    assert resolve_precision("auto", torch.device("mps")).name == "fp32"


@pytest.mark.parametrize(
    ("capabilities", "native"),
    [
        ({"avx512_f": True, "avx512_bf16": True}, True),  # e.g. Cooper Lake, Zen 4
        ({"amx_bf16": True, "amx_tile": True}, True),  # Sapphire Rapids and later
        ({"avx2": True, "avx512_f": True, "avx512_bf16": False}, False),  # bf16 only emulated
        ({"avx2": True}, False),
    ],
)
def test_native_bf16_is_what_torch_reports_for_this_cpu(
    monkeypatch: pytest.MonkeyPatch, capabilities: dict[str, bool], native: bool
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    assert cpu_has_native_bf16() is native


def test_a_run_under_auto_saves_the_precision_this_cpu_got(train_config, tmp_path: Path) -> None:
    run_training(train_config(*TINY), tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["trainer"]["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")


def _eval(checkpoint: Path, folder: Path, *overrides: str) -> dict:
    folder.mkdir()
    cfg = compose_config("eval", [f"checkpoint={checkpoint}", "device=cpu", *overrides])
    return eval_checkpoint(cfg, folder)


def test_auto_on_a_bf16_cpu_validates_and_evaluates_in_bf16_to_the_same_numbers(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny on purpose: where the CPU lacks native bf16, bf16 runs an order of magnitude slower.
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    cfg = train_config(*TINY)
    run_training(cfg, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["config"]["trainer"]["precision"] == "bf16"
    last = read_metrics(tmp_path / "run")[-1]
    evaluated = _eval(checkpoint, tmp_path / "auto")
    assert evaluated["acc1"] == last["val_acc1"] and evaluated["loss"] == last["val_loss"]
    # told otherwise, cnn-eval computes in fp32: other logits, another loss
    in_fp32 = _eval(checkpoint, tmp_path / "fp32", "precision=fp32")
    assert in_fp32["loss"] != last["val_loss"]
    assert in_fp32["loss"] == pytest.approx(last["val_loss"], rel=0.05)


@pytest.mark.slow
def test_one_process_eval_reproduces_a_two_process_bf16_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*DDP, "trainer.precision=bf16", f"hydra.run.dir={run_dir}"]
    trained = run_cli("cnn-train", *args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained.stderr
    checkpoint = run_dir / "checkpoints" / "last.pt"
    result = run_cli("cnn-eval", f"checkpoint={checkpoint}", "device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    last = read_metrics(run_dir)[-1]
    assert evaluated["samples"] == 15 and evaluated["acc1"] == last["val_acc1"]
    assert evaluated["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
