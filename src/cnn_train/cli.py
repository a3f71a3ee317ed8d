"""Console entry points. Each composes its config with Hydra and hands it to the engine."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnn_train.errors import ExitRequest, Interrupted, exit_status, first_line
from cnn_train.sweep import write_result

CONFIG_PATH = "pkg://cnn_train.configs"
CONFIG_MODULE = "cnn_train.configs"
# Config keys that make Hydra or logging import and call code: never from the command line.
CODE_KEYS = frozenset({"_target_", "callbacks", "class", "()", "_partial_", "_args_"})
log = logging.getLogger("cnn_train")


def compose_config(name: str, overrides: list[str], *, with_hydra: bool = False) -> DictConfig:
    """Compose `configs/<name>.yaml` from the installed package with command-line overrides
    (and Hydra's own `hydra.*` node when `with_hydra`)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=with_hydra)


def refuse_code_overrides(arguments: list[str]) -> None:
    """Command-line text chooses components by name; it never names code to import or run.

    A Hydra callback, `_target_` or logging class on the command line would run any importable
    function (`+hydra.callbacks.x._target_=...`): refuse it in one line, exit 1.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    candidates = [argument for argument in arguments if not argument.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return  # not an override Hydra accepts: Hydra reports it
    for override in overrides:
        parts = set(override.key_or_group.replace("/", ".").split("."))
        text = override.input_line or ""
        if parts & CODE_KEYS or any(key in text for key in ("_target_", "callbacks")):
            print(
                f"error: {text} is not accepted: the command line cannot name code to run "
                "(callbacks, _target_, logging classes); put trusted settings in your own "
                "config files (hydra.searchpath)",
                file=sys.stderr,
            )
            sys.exit(1)


class JobFailed(Exception):
    """A job of a multirun failed; the sweep records it and goes on with the next job."""


def _run_job(job: Callable[[DictConfig, Path], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run a job in Hydra's output folder; an error the user can act on ends it with the status
    and the one line that `errors.exit_status` gives.

    In a multirun, a failure becomes JobFailed instead, so that the other jobs still run; a stop
    signal ends the sweep too.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return job(cfg, run_dir)
    except Exception as error:
        status = exit_status(error)
        if status is None and not multirun:
            raise  # a bug: keep its traceback
        if status is None:
            log.exception("the job failed")
        failure = error
    code, message = status or (1, f"error: {type(failure).__name__}: {failure}")
    if isinstance(failure, ExitRequest):  # a signal, or a worker that ended with its status
        if message and int(os.environ.get("RANK", "0")) == 0:  # one rank says it, not each
            log.warning(message)
        if not multirun or isinstance(failure, Interrupted) or code in (130, 143):
            sys.exit(code)
        raise JobFailed(f"a worker process exited with status {code}") from failure
    log.error(message)
    if multirun:
        raise JobFailed(message.removeprefix("error: "))
    sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> float:
    from cnn_train.engine.trainer import run_training

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = _run_job(run_training, cfg)
    except JobFailed as failure:
        write_result(job_dir, {"status": "failed", "error": str(failure)})
        return math.nan
    if not summary.pop("is_main", True):
        return summary["best_val_acc1"]  # another rank of a torchrun job: rank 0 reports
    write_result(job_dir, {"status": "completed", **summary})
    run_dir = Path(summary["run_dir"])
    print(
        f"best val top-1 {summary['best_val_acc1']:.4f} (epoch {summary['best_epoch'] + 1}) | "
        f"run folder {run_dir} | view: tensorboard --logdir {run_dir.parent}"
    )
    return summary["best_val_acc1"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _eval(cfg: DictConfig) -> None:
    from cnn_train.engine.evaluator import eval_checkpoint

    print(json.dumps(_run_job(eval_checkpoint, cfg)))


def _one_line_override_errors(config_name: str) -> None:
    """Compose the command line's overrides once, so a bad value is one line on stderr, exit 1.

    Hydra would print the same error over several lines. Flags (-m, --cfg, --help...) and an
    unknown option of a group, whose list of valid options Hydra prints, are left to Hydra.
    """
    overrides = sys.argv[1:]
    refuse_code_overrides(overrides)
    if not overrides or any(argument.startswith("-") for argument in overrides):
        return
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        compose_config(config_name, overrides)
    except MissingConfigException:
        return
    except ConfigCompositionException as error:
        cause = first_line(error.__cause__) if error.__cause__ else ""
        message = first_line(error).rstrip(".")
        print(f"error: {message}" + (f": {cause}" if cause else ""), file=sys.stderr)
        sys.exit(1)


def _interruptible(main: Callable[[], Any]) -> None:
    """Run a Hydra main; a second Ctrl-C (the first stops after a save) exits 130, no traceback."""
    try:
        main()
    except KeyboardInterrupt:
        print(
            "error: interrupted again before the save finished; the last checkpoint is intact "
            "(resume from it)",
            file=sys.stderr,
        )
        sys.exit(130)


def train() -> None:
    """`cnn-train`: train a model as the composed config says."""
    _one_line_override_errors("train")
    _interruptible(_train)


def evaluate() -> None:
    """`cnn-eval checkpoint=PATH`: re-evaluate a checkpoint."""
    _one_line_override_errors("eval")
    _interruptible(_eval)


def _run_tool(config_name: str, tool: Callable[[DictConfig], str], usage: str) -> None:
    """Compose `configs/<config_name>.yaml` with the command-line overrides, print the tool's text.

    No run folder is made: these tools only read and print (or write where they are told).
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if {"-h", "--help"} & set(sys.argv[1:]):
        print(usage)
        return
    refuse_code_overrides(sys.argv[1:])
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # our own messages; other libraries' INFO chatter stays quiet
    try:
        cfg = compose_config(config_name, sys.argv[1:])
        print(tool(cfg))
    except Exception as error:
        status = exit_status(error)
        if status is None and not isinstance(error, (HydraException, OmegaConfBaseException)):
            raise
        code, message = status or (1, f"error: {first_line(error)}")
        log.error(message)
        sys.exit(code)


def _summary(cfg: DictConfig) -> str:
    from cnn_train.build import model_for_summary
    from cnn_train.models.summary import format_layer_table

    model, variant, size, classes = model_for_summary(cfg.model, cfg.data)
    title = f"{cfg.model.name} ({variant} variant, {classes} classes) at {size}x{size}"
    return format_layer_table(model, size, title)


def _predict(cfg: DictConfig) -> str:
    from cnn_train.predict import format_predictions, predict

    return format_predictions(predict(cfg.checkpoint, cfg.images, cfg.topk))


def _export(cfg: DictConfig) -> str:
    from cnn_train.export import export

    result = export(cfg.checkpoint, cfg.format, cfg.output, cfg.tolerance)
    return (
        f"wrote {result['path']} ({result['format']}); it reproduces the checkpoint's logits "
        f"(max abs difference {result['max_abs_diff']:.2e})"
    )


def summary() -> None:
    """`cnn-summary [cnn-train overrides]`: print the model's layer table."""
    _run_tool(
        "train",
        _summary,
        "usage: cnn-summary [cnn-train overrides, e.g. model=NAME data.image_size=224]",
    )


def predict() -> None:
    """`cnn-predict checkpoint=PATH images=[a.jpg,b.png]`: top-k classes per image."""
    _run_tool(
        "predict",
        _predict,
        "usage: cnn-predict checkpoint=PATH images=[a.jpg,b.png] (or images=FOLDER) [topk=5]",
    )


def export() -> None:
    """`cnn-export checkpoint=PATH format=onnx|torchscript|safetensors`: an inference artefact."""
    _run_tool(
        "export",
        _export,
        "usage: cnn-export checkpoint=PATH format=onnx|torchscript|safetensors [output=PATH]",
    )


if __name__ == "__main__":  # torchrun -m cnn_train.cli ...
    train()
