"""Helpers the tests share: composing the packaged configs, running the console scripts, and
writing small datasets in their real on-disk formats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnn_train.cli import compose_config

__all__ = [
    "MODES",
    "QUICK",
    "compose_config",
    "console_script",
    "get_json",
    "read_metrics",
    "run_cli",
    "write_image",
    "write_tree",
]

# A quick CPU run: synthetic 8 px data, one epoch.
QUICK = [
    "data=synthetic",
    "data.native_size=8",
    "data.train_samples=64",
    "data.val_samples=32",
    "data.batch_size=16",
    "trainer.epochs=1",
    "device=cpu",
    "tracking.graph=false",  # tracing the graph doubles a quick run; tests that want it say so
]
MODES = ("RGB", "L", "P", "RGBA", "CMYK")


def console_script(name: str) -> str:
    """The path of an installed console script next to this interpreter."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else (shutil.which(name) or name)


def run_cli(
    name: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an installed console script in `cwd` and capture its output."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [console_script(name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def get_json(url: str) -> Any:
    """GET a local URL (a TensorBoard server's API) and parse its JSON."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per epoch."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def write_image(path: Path, mode: str, seed: int, size: tuple[int, int] = (48, 40)) -> None:
    """A random image in a Pillow mode, saved as JPEG or PNG by its suffix."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    image = base.convert(mode) if mode != "P" else base.quantize(16)
    image.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")


def write_tree(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6) -> None:
    """A class-folder tree whose images cycle through JPEG/PNG and every Pillow mode."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            mode = MODES[i % len(MODES)]
            suffix = ".jpg" if mode in ("RGB", "L", "CMYK") else ".png"
            write_image(root / name / f"{i}{suffix}", mode, seed=c * 100 + i)
