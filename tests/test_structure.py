"""The code's shape: sizes, one-way dependencies, and model facts asked of the spec, not a name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cnn_train"
BUILT_IN_MODELS = ("alexnet", "alexnet2012", "vgg16", "resnet34")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_or_function_is_too_long() -> None:
    too_long = []
    for path in sources():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.name}: {length} lines")
    assert not too_long


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # The hot loop trains and says why it stopped: it neither builds a run nor saves one.
        ("engine/loop.py", ("cnn_train.engine.setup", "cnn_train.engine.snapshot", "checkpoint")),
        # The parts and progress types neither build nor write.
        (
            "engine/state.py",
            ("cnn_train.engine.setup", "cnn_train.engine.snapshot", "cnn_train.checkpoint"),
        ),
        # cnn-eval evaluates: no optimizer, stepper, loop or checkpoint writing.
        (
            "engine/evaluator.py",
            (
                "cnn_train.optim",
                "cnn_train.engine.stepper",
                "cnn_train.engine.snapshot",
                "cnn_train.engine.loop",
                "cnn_train.engine.setup",
            ),
        ),
        # Devices ask the model's spec; they import no architecture.
        (
            "distributed.py",
            tuple(
                f"cnn_train.models.{name}"
                for name in ("alexnet", "alexnet2012", "vgg", "resnet", "split")
            ),
        ),
    ],
)
def test_dependencies_go_one_way(module: str, forbidden: tuple[str, ...]) -> None:
    imported = imported_modules(SRC / module)
    wrong = sorted(name for name in imported for bad in forbidden if bad in name)
    assert not wrong, f"{module} imports {wrong}"


def test_no_architecture_is_named_outside_models_and_data() -> None:
    pattern = re.compile(r"\b(" + "|".join(BUILT_IN_MODELS) + r")\b")
    named = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sources()
        if path.relative_to(SRC).parts[0] not in ("models", "data")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not named


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return result.stdout.strip()


def test_inference_tools_load_no_dataset_code() -> None:
    predict_only = run_python(
        "import sys, cnn_train.predict, cnn_train.export\n"
        "print(sorted(m for m in sys.modules if m.startswith(('sklearn', 'cnn_train.data.folder',"
        " 'cnn_train.data.vision', 'cnn_train.data.digits', 'cnn_train.engine'))))"
    )
    assert predict_only == "[]"
    evaluator = run_python(
        "import sys, cnn_train.engine.evaluator\n"
        "print(sorted(m for m in sys.modules if m in ('cnn_train.optim',"
        " 'cnn_train.engine.stepper', 'cnn_train.engine.snapshot', 'cnn_train.engine.loop')))"
    )
    assert evaluator == "[]"


def test_configs_compose_without_the_cli() -> None:
    composed = run_python(
        "import sys\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('cnn_train.configs', version_base='1.3'):\n"
        "    cfg = compose('train', ['data=synthetic'])\n"
        "print(cfg.data.name, cfg.trainer.epochs > 0, 'cnn_train.cli' in sys.modules)"
    )
    assert composed == "synthetic True False"
