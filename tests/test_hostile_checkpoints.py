"""Checkpoints under attack: an export never clobbers an existing output or any spelling of a
checkpoint, nor leaves a truncated file when killed; and a tampered checkpoint is refused in one
line before a model is built."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from tests.helpers import QUICK, compose_config, run_cli, write_image
from tests.helpers.cli_errors import one_error_line

# --- Exports never clobber ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a quick run (synthetic 8 px, 10 classes): checkpoints/best.pt, last.pt."""
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    run_training(compose_config("train", QUICK), run_dir)
    return run_dir


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_an_existing_export_output_is_refused_unless_overwrite(quick_run, tmp_path) -> None:
    from cnn_train.export import export

    best, target = quick_run / "checkpoints" / "best.pt", tmp_path / "model.ts"
    target.write_text("an older export")
    with pytest.raises(UserError, match=r"output=.*model\.ts exists; pass overwrite=true"):
        export(str(best), "torchscript", str(target))
    assert target.read_text() == "an older export"
    export(str(best), "torchscript", str(target), overwrite=True)
    assert torch.jit.load(str(target)) is not None
    assert [path.name for path in tmp_path.iterdir()] == ["model.ts"]  # no temporary left


def test_cnn_export_refuses_an_existing_output_in_one_line(quick_run, tmp_path) -> None:
    (tmp_path / "good.ts").write_text("precious")
    best = quick_run / "checkpoints" / "best.pt"
    done = run_cli("cnn-export", f"checkpoint={best}", "format=torchscript", "output=good.ts",
                   cwd=tmp_path)  # fmt: skip
    assert "good.ts exists; pass overwrite=true" in one_error_line(done)
    assert (tmp_path / "good.ts").read_text() == "precious"


def _spellings(run: Path, tmp_path: Path) -> dict[str, Path]:
    checkpoints = run / "checkpoints"
    (tmp_path / "link.ts").symlink_to(checkpoints / "best.pt")
    os.link(checkpoints / "best.pt", tmp_path / "hard.ts")
    torch.save({"fc.weight": torch.ones(2)}, tmp_path / "weights.bin")
    (tmp_path / "renamed.onnx").write_bytes((checkpoints / "last.pt").read_bytes())
    return {
        "dotdot": checkpoints / ".." / "checkpoints" / "best.pt",
        "symlink": tmp_path / "link.ts",
        "hardlink": tmp_path / "hard.ts",
        "other_checkpoint": checkpoints / "last.pt",
        "new_pt_in_checkpoints": checkpoints / "export.pt",
        "state_dict": tmp_path / "weights.bin",
        "renamed_checkpoint": tmp_path / "renamed.onnx",
    }


@pytest.mark.parametrize(
    "spelling",
    ["dotdot", "symlink", "hardlink", "other_checkpoint", "new_pt_in_checkpoints", "state_dict",
     "renamed_checkpoint"],
)  # fmt: skip
def test_an_export_never_overwrites_a_checkpoint_even_with_overwrite(
    quick_run, tmp_path, spelling: str
) -> None:
    from cnn_train.export import export

    target = _spellings(quick_run, tmp_path)[spelling]
    before = folder_bytes(quick_run / "checkpoints"), folder_bytes(tmp_path)
    with pytest.raises(UserError, match="checkpoint") as raised:
        export(str(quick_run / "checkpoints" / "best.pt"), "safetensors", str(target),
               overwrite=True)  # fmt: skip
    assert "\n" not in str(raised.value)
    assert (folder_bytes(quick_run / "checkpoints"), folder_bytes(tmp_path)) == before


def test_an_export_never_replaces_a_device(quick_run) -> None:
    from cnn_train.export import export

    best = str(quick_run / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="is not a regular file"):
        export(best, "torchscript", "/dev/null", overwrite=True)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_export_tolerance_must_be_finite_and_not_negative(quick_run, tmp_path, tolerance) -> None:
    from cnn_train.export import export

    best = str(quick_run / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="tolerance must be a finite number >= 0"):
        export(best, "torchscript", str(tmp_path / "m.ts"), tolerance)
    assert not (tmp_path / "m.ts").exists()


KILLED_EXPORT = """
import sys, time, torch
from cnn_train.export import export

def save_half(self, path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"PK half an archive")
        handle.flush()
    open(sys.argv[3], "w").close()
    time.sleep(600)

torch.jit.ScriptModule.save = save_half
export(sys.argv[1], "torchscript", sys.argv[2], overwrite=True)
"""


@pytest.mark.parametrize("existing", [True, False])
def test_a_killed_export_never_leaves_a_truncated_output(quick_run, tmp_path, existing) -> None:
    import sys

    target, ready = tmp_path / "good.ts", tmp_path / "ready"
    if existing:
        target.write_bytes(b"the previous good export")
    best = quick_run / "checkpoints" / "best.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_EXPORT, str(best), str(target), str(ready)]
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:
            assert process.poll() is None
            time.sleep(0.05)
        assert ready.exists()
    finally:
        process.kill()
        process.wait()
    if existing:
        assert target.read_bytes() == b"the previous good export"
    else:
        assert not target.exists()


# --- Checkpoints are validated before anything is allocated -----------------------------------


def _tampered(run: Path, tmp_path: Path, change) -> Path:
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    change(state)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    return path


TAMPERING = {
    "huge_head": (lambda s: s["config"]["model"].update(num_classes=10**9), "model.num_classes"),
    "huge_images": (lambda s: s["preprocessing"].update(image_size=100_000), "image_size"),
    "nan_std": (lambda s: s["preprocessing"].update(std=[float("nan")] * 3), "std"),
    "names_and_head_differ": (
        lambda s: s["config"]["model"].update(num_classes=5),
        "model.num_classes=5 but it names 10 classes",
    ),
    "head_and_weights_differ": (
        lambda s: (
            s["config"]["model"].update(num_classes=20),
            s.update(class_names=list("abcdefghijklmnopqrst")),
        ),
        "do not fit",
    ),
    "missing_key": (lambda s: s.pop("preprocessing"), "lacks preprocessing"),
    "unknown_model": (lambda s: s["config"]["model"].update(name="vgg17"), "vgg17"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
@pytest.mark.parametrize("tool", ["predict", "export"])
def test_a_tampered_checkpoint_is_refused_before_a_model_is_built(
    quick_run, tmp_path, monkeypatch, tampering: str, tool: str
) -> None:
    import cnn_train.inference as inference
    from cnn_train.export import export
    from cnn_train.predict import predict

    change, expected = TAMPERING[tampering]
    path = _tampered(quick_run, tmp_path, change)
    real_build = inference.build_from_config

    def meta_only(model_cfg, *args, **kwargs):
        assert torch.empty(0).is_meta, "a model was built with real tensors"
        return real_build(model_cfg, *args, **kwargs)

    monkeypatch.setattr(inference, "build_from_config", meta_only)
    write_image(tmp_path / "a.png", "RGB", seed=0)
    with pytest.raises(UserError, match=expected) as raised:
        if tool == "predict":
            predict(str(path), str(tmp_path / "a.png"))
        else:
            export(str(path), "torchscript", str(tmp_path / "m.ts"))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("tampering", "scripts"),
    [
        ("huge_head", ("cnn-predict", "cnn-eval")),
        ("huge_images", ("cnn-predict",)),  # cnn-eval reads the config's data, not the record
        ("missing_key", ("cnn-predict", "cnn-eval")),
    ],
)
def test_the_tools_refuse_a_tampered_checkpoint_in_one_line(
    quick_run, tmp_path, tampering: str, scripts: tuple[str, ...]
) -> None:
    path = _tampered(quick_run, tmp_path, TAMPERING[tampering][0])
    write_image(tmp_path / "a.png", "RGB", seed=0)
    for script in scripts:
        extra = ["images=a.png"] if script == "cnn-predict" else []
        done = run_cli(script, f"checkpoint={path}", *extra, cwd=tmp_path)
        assert TAMPERING[tampering][1].split()[0] in one_error_line(done)
