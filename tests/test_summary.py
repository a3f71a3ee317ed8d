"""The layer table: shapes, the size arithmetic, parameters, FLOPs, grouped towers."""

from __future__ import annotations

import re

from torch import nn

from cnn_train.models import build_model
from cnn_train.models.summary import layer_table, size_arithmetic
from tests.helpers import run_cli


def test_alexnet_at_224_shows_the_reference_texts_sizes() -> None:
    rows, flops = layer_table(build_model("alexnet", 1000, "imagenet"), 224)
    sides = [row.output[-1] for row in rows if len(row.output) == 3]
    assert sides == [55, 27, 27, 13, 13, 13, 13, 6]
    assert sum(row.params for row in rows) == 62_378_344
    assert rows[0].arithmetic == "floor((224 + 2*2 - 11)/4) + 1 = 55"
    assert rows[1].arithmetic == "(55 + 2*0 - 3)/2 + 1 = 27"
    # 2 FLOPs per multiply-add: conv1 is 96*55*55 outputs of 3*11*11 multiply-adds each.
    assert rows[0].flops == 2 * 96 * 55 * 55 * 3 * 11 * 11
    assert flops == sum(row.flops for row in rows)


def test_a_grouped_conv_shows_each_towers_half() -> None:
    model = build_model("alexnet", 1000, "imagenet")
    model.features[3] = nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)
    rows, _ = layer_table(model, 224)
    conv2 = next(row for row in rows if row.name == "features.3")
    assert conv2.towers == "2 x 128x27x27" and "g2" in conv2.kind
    assert conv2.params == 256 * 48 * 5 * 5 + 256


def test_size_arithmetic_of_a_stride_one_conv() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert size_arithmetic(conv, 13, 13) == "(13 + 2*1 - 3)/1 + 1 = 13"


def test_cnn_summary_takes_the_cnn_train_overrides(tmp_path) -> None:
    result = run_cli("cnn-summary", "model=alexnet", "data.image_size=224", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "alexnet (imagenet variant, 10 classes) at 224x224" in result.stdout
    assert re.search(r"features\.0 .* 96x55x55 .* = 55 ", result.stdout)
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1] == "58,322,314"
    assert not (tmp_path / "outputs").exists()


def test_cnn_summary_reports_a_bad_override_in_one_line(tmp_path) -> None:
    result = run_cli("cnn-summary", "model=vgg17", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: model=vgg17: no such option of model; the options are alexnet, alexnet2012, "
        "resnet34, vgg16"
    )


SUMMARY_UNDER_A_MEMORY_CAP = """
import resource
from cnn_train.models import build_model
from cnn_train.models.summary import layer_table

model = build_model("vgg16", 10, "imagenet")
status = open("/proc/self/status").read().split("VmSize:")[1]
limit = int(status.split()[0]) * 1024 + 2**30  # what is mapped now, and 1 GiB more
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
rows, flops = layer_table(model, 4096)
print(rows[0].output, rows[-1].output, flops)
"""


def test_a_4096_px_vgg16_table_allocates_no_activations() -> None:
    """Its activations would take tens of GB (conv1 alone 4 GiB); the table needs none."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SUMMARY_UNDER_A_MEMORY_CAP],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split(")")[0] == "(64, 4096, 4096"
    assert done.stdout.strip().endswith("(10,) 10263063511040")
