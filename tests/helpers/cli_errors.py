"""How a console script refuses: exit 1, no traceback, and a last line that starts `error: `;
and each console script with the least it needs to start."""

from __future__ import annotations

import subprocess

from tests.helpers import QUICK

SCRIPTS_AND_ARGS = {  # each console script, with the arguments it needs to start
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
