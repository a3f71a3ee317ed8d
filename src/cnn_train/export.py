"""Write a checkpoint's model as an inference artefact and check it reproduces the logits.

The artefact is written to a temporary file beside the output, read back and checked there, and
only then renamed onto the output (`files.write_through_temporary`): a killed or failed export
never leaves a partial or wrong file under the output's name. An output that exists is replaced
only with `overwrite=true`, and a checkpoint never is (`refuse_checkpoint_output`).
"""

from __future__ import annotations

import json
import math
import os
import stat
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_train.errors import UserError
from cnn_train.files import write_through_temporary
from cnn_train.inference import InferenceModel, load_inference

SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "safetensors": ".safetensors"}
# torch.save's legacy (pre-zip) files start with a pickled magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."

Save = Callable[[Path], None]  # writes the artefact to a file name
Reload = Callable[[Path], np.ndarray]  # reads it back and returns its logits on the example


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(
            f"format={extra} needs the '{module}' package; pip install 'cnn-train[{extra}]'"
        ) from error


def _torchscript(loaded: InferenceModel, example: torch.Tensor) -> tuple[Save, Reload]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance; tracing still works
        traced = torch.jit.trace(loaded.model, example)

    def reload(path: Path) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reloaded = torch.jit.load(str(path))
        with torch.inference_mode():
            return reloaded(example).numpy()

    return lambda path: traced.save(str(path)), reload


def _onnx(loaded: InferenceModel, example: torch.Tensor) -> tuple[Save, Reload]:
    _need("onnx", "onnx")
    _need("onnxscript", "onnx")
    runtime = _need("onnxruntime", "onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            loaded.model,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )

    def reload(path: Path) -> np.ndarray:
        session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"images": example.numpy()})[0]

    return lambda path: program.save(str(path), external_data=False), reload


def _safetensors(loaded: InferenceModel, example: torch.Tensor) -> tuple[Save, Reload]:
    from cnn_train.models.registry import build_from_config

    storage = _need("safetensors.torch", "safetensors")
    metadata = {
        "config": json.dumps(loaded.config),
        "class_names": json.dumps(loaded.class_names),
        "preprocessing": json.dumps(loaded.preprocessing),
    }
    state = {key: value.contiguous() for key, value in loaded.model.state_dict().items()}

    def reload(path: Path) -> np.ndarray:
        rebuilt = build_from_config(loaded.config["model"])
        rebuilt.load_state_dict(storage.load_file(str(path)))
        rebuilt.eval()
        with torch.inference_mode():
            return rebuilt(example).numpy()

    return lambda path: storage.save_file(state, str(path), metadata=metadata), reload


EXPORTERS: dict[str, Callable[[InferenceModel, torch.Tensor], tuple[Save, Reload]]] = {
    "onnx": _onnx,
    "torchscript": _torchscript,
    "safetensors": _safetensors,
}


def holds_pytorch_checkpoint(path: Path) -> bool:
    """Whether `path` is a file torch.save wrote (a zip with data.pkl that is not TorchScript's
    archive, or the legacy format): a checkpoint or a state_dict, whatever its name."""
    try:
        with open(path, "rb") as file:
            if file.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC:
                return True
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = [name.rsplit("/", 1)[-1] for name in archive.namelist()]
    except (OSError, zipfile.BadZipFile):
        return False
    return "data.pkl" in names and "constants.pkl" not in names


def refuse_checkpoint_output(real: Path, checkpoint: Path, output: str | None) -> None:
    """Never write over a checkpoint: the one being exported (by any spelling or hard link), a
    `.pt` file under a `checkpoints/` folder, or any file torch.save wrote."""
    source = Path(os.path.realpath(checkpoint))
    same = real == source or (real.exists() and source.exists() and os.path.samefile(real, source))
    if same:
        raise UserError(
            f"output={output} is the checkpoint being exported; pass another path, e.g. "
            f"output={checkpoint.with_suffix('.ts').name}"
        )
    if real.suffix.lower() == ".pt" and "checkpoints" in real.parent.parts:
        raise UserError(
            f"output={output} would be a checkpoint ({real}: a .pt file under checkpoints/); "
            "exports never write there, pass another path"
        )
    if real.is_file() and holds_pytorch_checkpoint(real):
        raise UserError(
            f"output={output} holds a PyTorch checkpoint ({real}), which an export never "
            "replaces, even with overwrite=true; pass another path"
        )


def output_path(
    checkpoint: Path, output: str | None, suffix: str, *, overwrite: bool = False
) -> Path:
    """Where the artefact goes (resolved: links and `..` followed): `output` (a file, or a
    folder to write into), else beside the checkpoint. An existing file is refused unless
    `overwrite`; a checkpoint, or anything but a regular file, always is."""
    if output is None:
        path = checkpoint.with_suffix(suffix)
    else:
        path = Path(output).expanduser()
        if path.is_dir() or output.endswith(("/", "\\")):
            path = path / checkpoint.with_suffix(suffix).name
    real = Path(os.path.realpath(path))
    shown = output if output is not None else str(path)
    refuse_checkpoint_output(real, checkpoint, shown)
    if os.path.lexists(path) or os.path.lexists(real):
        if not overwrite:
            raise UserError(
                f"output={shown} exists; pass overwrite=true to replace it, or another output="
            )
        if real.exists() and not stat.S_ISREG(os.stat(real).st_mode):
            raise UserError(f"output={shown} is not a regular file ({real}); pass another output=")
    return real


def export(
    checkpoint: str,
    format: str,
    output: str | None = None,
    tolerance: float = 1e-4,
    *,
    overwrite: bool = False,
    weights: str = "auto",
) -> dict[str, Any]:
    """Write `checkpoint`'s model as `format`; raise UserError unless it reproduces the logits.

    `overwrite`: replace an existing output file (never a checkpoint); `weights`: `model`,
    `ema` or `auto` (those the run's monitor chose).
    """
    if format not in EXPORTERS:
        raise UserError(f"format={format} is not one of {', '.join(EXPORTERS)}")
    number = isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool)
    if not (number and math.isfinite(tolerance) and tolerance >= 0):
        raise UserError(f"tolerance must be a finite number >= 0, got {tolerance}")
    path = output_path(Path(checkpoint), output, SUFFIXES[format], overwrite=overwrite)
    loaded = load_inference(checkpoint, weights)
    example = loaded.example_input()
    with torch.inference_mode():
        expected = loaded.model(example).numpy()
    save, reload = EXPORTERS[format](loaded, example)
    measured: dict[str, float] = {}

    def check(written: Path) -> None:
        difference = float(np.abs(reload(written) - expected).max())
        scale = max(float(np.abs(expected).max()), 1.0)
        if not difference <= tolerance * scale:
            raise UserError(
                f"the {format} artefact differs from the checkpoint's logits by {difference:.3g} "
                f"(tolerance={tolerance:g}); {path} was not written"
            )
        measured["max_abs_diff"] = difference

    write_through_temporary(path, save, check=check, replace=overwrite, what=f"{format} file")
    return {"format": format, "path": str(path), "max_abs_diff": measured["max_abs_diff"]}
