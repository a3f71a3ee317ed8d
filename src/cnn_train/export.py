"""Write a checkpoint's model as an inference artefact and check it reproduces the logits."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_train.errors import UserError
from cnn_train.inference import InferenceModel, load_inference

SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "safetensors": ".safetensors"}


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(
            f"format={extra} needs the '{module}' package; pip install 'cnn-train[{extra}]'"
        ) from error


def _torchscript(loaded: InferenceModel, path: Path, example: torch.Tensor) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance; tracing still works
        traced = torch.jit.trace(loaded.model, example)
        traced.save(str(path))
        reloaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return reloaded(example).numpy()


def _onnx(loaded: InferenceModel, path: Path, example: torch.Tensor) -> np.ndarray:
    _need("onnx", "onnx")
    _need("onnxscript", "onnx")
    runtime = _need("onnxruntime", "onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            loaded.model,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": example.numpy()})[0]


def _safetensors(loaded: InferenceModel, path: Path, example: torch.Tensor) -> np.ndarray:
    from cnn_train.models.registry import build_from_config

    storage = _need("safetensors.torch", "safetensors")
    metadata = {
        "config": json.dumps(loaded.config),
        "class_names": json.dumps(loaded.class_names),
        "preprocessing": json.dumps(loaded.preprocessing),
    }
    state = {key: value.contiguous() for key, value in loaded.model.state_dict().items()}
    storage.save_file(state, str(path), metadata=metadata)
    rebuilt = build_from_config(loaded.config["model"])
    rebuilt.load_state_dict(storage.load_file(str(path)))
    rebuilt.eval()
    with torch.inference_mode():
        return rebuilt(example).numpy()


EXPORTERS: dict[str, Callable[[InferenceModel, Path, torch.Tensor], np.ndarray]] = {
    "onnx": _onnx,
    "torchscript": _torchscript,
    "safetensors": _safetensors,
}


def output_path(checkpoint: Path, output: str | None, suffix: str) -> Path:
    """Where the artefact goes: `output` (a file, or a folder to write into), else beside the
    checkpoint. It never replaces the checkpoint it reads."""
    default_name = checkpoint.with_suffix(suffix).name
    if output is None:
        path = checkpoint.with_suffix(suffix)
    else:
        path = Path(output).expanduser()
        if path.is_dir() or output.endswith(("/", "\\")):
            path = path / default_name
    if path.resolve() == checkpoint.resolve():
        raise UserError(
            f"output={output} is the checkpoint being exported; pass another path, e.g. "
            f"output={checkpoint.with_suffix(suffix)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export(
    checkpoint: str, format: str, output: str | None = None, tolerance: float = 1e-4
) -> dict[str, Any]:
    """Write `checkpoint`'s model as `format`; raise UserError unless it reproduces the logits."""
    if format not in EXPORTERS:
        raise UserError(f"format={format} is not one of {', '.join(EXPORTERS)}")
    loaded = load_inference(checkpoint)
    path = output_path(Path(checkpoint), output, SUFFIXES[format])
    example = loaded.example_input()
    with torch.inference_mode():
        expected = loaded.model(example).numpy()
    produced = EXPORTERS[format](loaded, path, example)
    difference = float(np.abs(produced - expected).max())
    scale = max(float(np.abs(expected).max()), 1.0)
    if not difference <= tolerance * scale:
        raise UserError(
            f"the {format} artefact {path} differs from the checkpoint's logits by {difference:.3g}"
        )
    return {"format": format, "path": str(path), "max_abs_diff": difference}
