"""scripts/gpu_check.py: its dry run on CPU takes every code path and prints one full table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_dry_run_prints_one_table_with_every_check() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check on CPU (dry run)")
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[3:]]
    assert all(len(row) == 6 for row in rows)
    trained = {(row[1], row[2].split(" ")[0]) for row in rows if row[0] == "train"}
    modes = ["fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"]
    assert trained == {(m, mode) for m in ["alexnet", "vgg16", "resnet34"] for mode in modes}
    for row in rows:
        assert not row[5].startswith("FAIL"), row
        if row[0] in {"train", "split", "ddp"}:
            assert float(row[3].replace(",", "")) > 0, row
    split = [row for row in rows if row[0] == "split" and row[2].startswith("split [cpu, cpu]")]
    assert len(split) == 1 and split[0][5].startswith("ok: max rel diff")
    ddp = [row for row in rows if row[0] == "ddp"]
    assert len(ddp) == 1 and ddp[0][2].startswith("gloo 2 procs")
    assert ddp[0][5].startswith("ok: weights agree")
    assert [row[5] for row in rows if row[0] == "imports"] == ["ok: no hydra/omegaconf"]
