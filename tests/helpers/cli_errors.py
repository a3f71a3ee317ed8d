"""How a console script refuses: exit 1, no traceback, and a last line that starts `error: `."""

from __future__ import annotations

import subprocess


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr
    return line
