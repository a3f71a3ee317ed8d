"""The real `tensorboard` server shows a run's scalars, read over its HTTP API as the page does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from cnn_train.distributed import free_port
from cnn_train.engine.trainer import run_training
from tests.helpers import get_json, read_metrics

TENSORBOARD_START_S = 90
# Two epochs of one step each, without the graph and the image grid: two points to serve.
SHORT = (
    "trainer.epochs=2",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "tracking.graph=false",
    "tracking.image_grid=false",
)


def test_tensorboard_serves_the_val_acc1_series(train_config, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    # Started before the run, so that its start-up overlaps the training.
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    query = urllib.parse.urlencode({"run": "tb", "tag": "val/acc1"})
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{query}"
    try:
        run_training(train_config(*SHORT), tmp_path)
        records = read_metrics(tmp_path)
        deadline = time.monotonic() + TENSORBOARD_START_S
        series: object = None
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                series = get_json(url)
                if isinstance(series, list) and len(series) == len(records):
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        assert isinstance(series, list), f"no answer from {url}"
        # Each point is [wall_time, step, value].
        assert [point[1] for point in series] == [record["step"] for record in records]
        assert [point[2] for point in series] == pytest.approx(
            [record["val_acc1"] for record in records]
        )
        assert "tb" in get_json(f"http://127.0.0.1:{port}/data/runs")
    finally:
        server.terminate()
        server.wait(timeout=30)
