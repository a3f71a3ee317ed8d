"""cnn-predict and cnn-export on a checkpoint of a quick run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.export import export
from cnn_train.inference import load_inference
from cnn_train.predict import predict
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a two-step run on 8 px digits."""
    from tests.helpers import compose_config

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", ["data=digits", "device=cpu", "trainer.max_steps=2"])
    run_training(cfg, run_dir)
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a grey PNG and a colour JPEG of another size."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / "b.jpg")
    return folder


def test_predict_gives_topk_names_and_probabilities(checkpoint, images) -> None:
    results = predict(str(checkpoint), [str(images / "a.png"), str(images / "b.jpg")], topk=3)
    assert [Path(r["image"]).name for r in results] == ["a.png", "b.jpg"]
    for result in results:
        probabilities = [top["probability"] for top in result["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert {top["class"] for top in result["top"]} <= {str(d) for d in range(10)}


def test_predict_uses_the_checkpoints_preprocessing(checkpoint, images) -> None:
    loaded = load_inference(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert loaded.preprocessing == state["preprocessing"]
    assert loaded.preprocessing["image_size"] == 8 and loaded.preprocessing["channels"] == 1
    with Image.open(images / "a.png") as image:
        pixels = torch.from_numpy(np.array(image)).float() / 255
    expected = (pixels - state["preprocessing"]["mean"][0]) / state["preprocessing"]["std"][0]
    with Image.open(images / "a.png") as image:
        batch = loaded.preprocess(image)
    assert batch.shape == (3, 8, 8) and torch.allclose(batch[1], expected, atol=1e-6)


def test_cnn_predict_takes_a_folder(checkpoint, images, tmp_path) -> None:
    result = run_cli("cnn-predict", f"checkpoint={checkpoint}", f"images={images}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("a.png") and len(lines) == 2 * (1 + 5)


def test_cnn_predict_reports_a_missing_image(checkpoint, tmp_path) -> None:
    result = run_cli("cnn-predict", f"checkpoint={checkpoint}", "images=[nope.jpg]", cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.jpg does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("format", ["torchscript", "safetensors", "onnx"])
def test_export_reproduces_the_logits(checkpoint, tmp_path, format: str) -> None:
    if format == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    result = export(str(checkpoint), format, str(tmp_path / f"model.{format}"))
    assert Path(result["path"]).is_file() and result["max_abs_diff"] < 1e-4


def test_onnx_without_its_package_names_the_extra(checkpoint, tmp_path, monkeypatch) -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'cnn-train\[onnx\]'"):
        export(str(checkpoint), "onnx", str(tmp_path / "model.onnx"))


def test_cnn_export_writes_next_to_the_checkpoint(checkpoint, tmp_path) -> None:
    result = run_cli("cnn-export", f"checkpoint={checkpoint}", "format=torchscript", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert checkpoint.with_suffix(".ts").is_file()
    assert "reproduces the checkpoint's logits" in result.stdout


def test_cnn_export_rejects_an_unknown_format(checkpoint, tmp_path) -> None:
    result = run_cli("cnn-export", f"checkpoint={checkpoint}", "format=tflite", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: format must be one of onnx, torchscript, safetensors, got tflite"
    )


def test_an_exported_safetensors_file_is_a_starting_point(checkpoint, tmp_path) -> None:
    from cnn_train.models import build_model
    from cnn_train.models.weights import load_weights

    pytest.importorskip("safetensors")
    path = export(str(checkpoint), "safetensors", str(tmp_path / "w.safetensors"))["path"]
    model = build_model("resnet34", 3, "small")
    load_weights(model, path, "resnet34", "small")
    saved = torch.load(checkpoint, weights_only=True)["model"]
    assert torch.equal(model.conv1.weight, saved["conv1.weight"]) and model.fc.out_features == 3


def test_cnn_predict_help_prints_its_usage(tmp_path) -> None:
    result = run_cli("cnn-predict", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: cnn-predict checkpoint=")


def test_imagenet_style_checkpoints_predict_on_a_centre_crop() -> None:
    from types import SimpleNamespace

    from cnn_train.data.preprocessing import eval_preprocessing
    from cnn_train.inference import InferenceModel

    rgb = SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3, splits={})
    prep = eval_preprocessing(rgb, 224, "imagenet").to_record()
    assert prep["resize_short_side"] == 256
    loaded = InferenceModel(torch.nn.Identity(), ["a"], prep, {})
    left_black = np.zeros((300, 400, 3), dtype=np.uint8)
    left_black[:, 200:] = 255  # the right half white: the centre crop straddles the edge
    batch = loaded.preprocess(Image.fromarray(left_black))
    assert batch.shape == (3, 224, 224)
    assert batch[0, 0, 0] == pytest.approx(-2.0) and batch[0, 0, -1] == pytest.approx(2.0)
    square = eval_preprocessing(rgb, 32, "cifar").to_record()
    assert square["resize_short_side"] is None


def test_a_16_bit_image_predicts_as_its_8_bit_version(checkpoint, tmp_path) -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    eight, sixteen = predict(
        str(checkpoint), [str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")]
    )
    assert eight["top"] == sixteen["top"]
