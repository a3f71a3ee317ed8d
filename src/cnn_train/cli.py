"""Console entry points. Each composes its config with Hydra and hands it to the engine."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnn_train.command_line import check_command_line, help_text
from cnn_train.errors import (
    ExitRequest,
    Interrupted,
    InterruptedAgain,
    UserError,
    exit_status,
    first_line,
)
from cnn_train.folders import register_resolvers
from cnn_train.sweep import FailedJob, finish_stopped_sweep, write_result

CONFIG_PATH = "pkg://cnn_train.configs"
CONFIG_MODULE = "cnn_train.configs"
log = logging.getLogger("cnn_train")
register_resolvers()  # a SLURM job unpickles the task function, then resolves its folder name


def compose_config(name: str, overrides: list[str], *, with_hydra: bool = False) -> DictConfig:
    """Compose `configs/<name>.yaml` from the installed package with command-line overrides
    (and Hydra's own `hydra.*` node when `with_hydra`)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=with_hydra)


def accept_command_line(config_name: str, *, hydra_flags: bool = True) -> None:
    """Check the command line before Hydra reads it (command_line.py); a refusal is one line,
    exit 1. Path values Hydra could not parse are passed on quoted."""
    try:
        sys.argv[1:] = check_command_line(config_name, sys.argv[1:], hydra_flags=hydra_flags)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
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
        from cnn_train.distributed import launcher_rank

        if message and launcher_rank() == 0:  # one rank says it, not each
            log.warning(message)
        if not multirun or isinstance(failure, Interrupted) or code in (130, 143):
            sys.exit(code)
        raise JobFailed(f"a worker process exited with status {code}") from failure
    log.error(message)
    if multirun:
        raise JobFailed(message.removeprefix("error: ")) from failure
    sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> float | FailedJob:
    from cnn_train.engine.trainer import run_training

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = _run_job(run_training, cfg)
    except JobFailed as failure:
        write_result(job_dir, {"status": "failed", "error": str(failure)})
        return FailedJob(str(failure))  # a failed trial for Optuna; the sweep goes on
    if not summary.pop("is_main", True):
        return summary["best_val_acc1"]  # another rank of a torchrun job: rank 0 reports
    run_dir = Path(summary["run_dir"])
    # The folder the run wrote to (another one when it resumed a run), and the job's own.
    for folder in dict.fromkeys([run_dir, job_dir]):
        write_result(folder, {"status": "completed", **summary})
    stopped = (
        f"stopped early at epoch {summary['stop_epoch'] + 1} ({summary['monitor']} stalled) | "
        if summary["stopped_early"]
        else ""
    )
    print(
        f"best val top-1 {summary['best_val_acc1']:.4f} (epoch {summary['best_epoch'] + 1}) | "
        f"{stopped}run folder {run_dir} | view: tensorboard --logdir {run_dir.parent}"
    )
    return summary["best_val_acc1"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="lr_find")
def _lr_find(cfg: DictConfig) -> None:
    from cnn_train.engine.lr_find import find_lr

    found = _run_job(find_lr, cfg)
    print(f"optimizer.lr={found['suggested_lr']:.3g}")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _eval(cfg: DictConfig) -> None:
    from cnn_train.engine.evaluator import eval_checkpoint

    print(json.dumps(_run_job(eval_checkpoint, cfg)))


def _one_line_override_errors(config_name: str) -> None:
    """Compose the command line's overrides once, so a bad value is one line on stderr, exit 1.

    Hydra would print the same error over several lines. With flags (-m, --cfg...) the
    composition is left to Hydra.
    """
    overrides = sys.argv[1:]
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
        if "not in '" in cause:  # a key this choice of its group does not have
            cause += " (`--cfg job` with the same choices lists the keys there are)"
        print(f"error: {message}" + (f": {cause}" if cause else ""), file=sys.stderr)
        sys.exit(1)


def _known_error(error: Exception) -> tuple[int, str] | None:
    """The exit status and line for an error the user can act on; None for a bug."""
    from hydra.errors import CompactHydraException, HydraException
    from omegaconf.errors import OmegaConfBaseException

    cause: BaseException | None = error
    while cause is not None:  # OmegaConf wraps a resolver's UserError (implicitly chained)
        if (status := exit_status(cause)) is not None:
            return status
        wrapper = isinstance(cause, OmegaConfBaseException)
        cause = cause.__cause__ or (cause.__context__ if wrapper else None)
    if isinstance(error, OSError) and error.filename:  # Hydra creating a folder it was given
        return 1, f"error: cannot use {error.filename}: {error.strerror or error}"
    if type(error).__module__.startswith("submitit"):
        return 1, f"error: the SLURM launcher failed: {first_line(error, type(error).__name__)}"
    if isinstance(error, CompactHydraException):  # Hydra's own message, as Hydra prints it
        cause = error.__cause__
        return 1, f"{error}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(error)
    if isinstance(error, (HydraException, OmegaConfBaseException)):
        return 1, f"error: {first_line(error)}"
    return None


def _error_line(error: Exception) -> tuple[int, str]:
    """The exit status and the line for what ended a Hydra main ('' for a bug, whose traceback
    is printed here). A multirun under way is summed up first (summary.csv)."""
    stopped = finish_stopped_sweep()
    known = _known_error(error)
    if known is not None:
        code, message = known
        return code, message + (f" ({stopped})" if stopped and message else "")
    if stopped:
        return 1, f"error: the sweep stopped: {first_line(error, type(error).__name__)} ({stopped})"
    traceback.print_exception(error)  # a bug: keep its traceback
    return 1, ""


def _interruptible(main: Callable[[], Any]) -> None:
    """Run a Hydra main; what ends it is reported here in one line (a second Ctrl-C, the first
    stopping after a save, exits 130).

    Hydra re-raises instead of printing its own traceback (HYDRA_FULL_ERROR), unless the user
    asked for that full traceback.
    """
    asked = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except InterruptedAgain:
        print(
            "error: interrupted again before the save finished; the last checkpoint is intact "
            "(resume from it)",
            file=sys.stderr,
        )
        sys.exit(130)
    except KeyboardInterrupt:  # before training started, after it ended, or in a tool
        print("error: interrupted; nothing was being saved", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if asked:
            raise
        code, message = _error_line(error)
        if message:
            print(message, file=sys.stderr)
        sys.exit(code)
    finally:
        if asked is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _start(config_name: str) -> bool:
    """The checks before Hydra runs; False when `--help` was answered instead."""
    accept_command_line(config_name)
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(help_text(config_name, sys.argv[1:]))
        return False
    _one_line_override_errors(config_name)
    return True


def _reader_may_leave(entry: Callable[[], None]) -> Callable[[], None]:
    """A console script whose output may be cut short (`cnn-train --help | head`): when the
    reader leaves, stop quietly instead of printing a traceback about the closed pipe."""

    @functools.wraps(entry)
    def run() -> None:
        try:
            entry()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

    return run


@_reader_may_leave
def train() -> None:
    """`cnn-train`: train a model as the composed config says."""
    if _start("train"):
        _interruptible(_train)


@_reader_may_leave
def lr_find() -> None:
    """`cnn-lr-find [cnn-train overrides] [start_lr=... end_lr=... steps=...]`: an LR range test
    whose last line is the override to use, `optimizer.lr=<value>`."""
    if _start("lr_find"):
        _interruptible(_lr_find)


@_reader_may_leave
def evaluate() -> None:
    """`cnn-eval checkpoint=PATH`: re-evaluate a checkpoint."""
    if _start("eval"):
        _interruptible(_eval)


def _run_tool(config_name: str, tool: Callable[[DictConfig], str], usage: str) -> None:
    """Compose `configs/<config_name>.yaml` with the command-line overrides, print the tool's text.

    No run folder is made: these tools only read and print (or write where they are told).
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    accept_command_line(config_name, hydra_flags=False)
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(usage)
        return
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
    from cnn_train.config_checks import check_predict_config
    from cnn_train.predict import format_predictions, predict

    check_predict_config(cfg)
    found = predict(cfg.checkpoint, cfg.images, cfg.topk, weights=cfg.weights, tta=cfg.tta)
    return format_predictions(found)


def _export(cfg: DictConfig) -> str:
    from cnn_train.config_checks import check_export_config
    from cnn_train.export import export

    check_export_config(cfg)
    result = export(
        cfg.checkpoint,
        cfg.format,
        cfg.output,
        cfg.tolerance,
        overwrite=cfg.overwrite,
        weights=cfg.weights,
    )
    return (
        f"wrote {result['path']} ({result['format']}); it reproduces the checkpoint's logits "
        f"(max abs difference {result['max_abs_diff']:.2e})"
    )


@_reader_may_leave
def summary() -> None:
    """`cnn-summary [cnn-train overrides]`: print the model's layer table."""
    _run_tool(
        "train",
        _summary,
        "usage: cnn-summary [cnn-train overrides, e.g. model=NAME data.image_size=224]",
    )


@_reader_may_leave
def predict() -> None:
    """`cnn-predict checkpoint=PATH images=[a.jpg,b.png]`: top-k classes per image."""
    _run_tool(
        "predict",
        _predict,
        "usage: cnn-predict checkpoint=PATH images=[a.jpg,b.png] (or images=FOLDER) [topk=5]",
    )


@_reader_may_leave
def export() -> None:
    """`cnn-export checkpoint=PATH format=onnx|torchscript|safetensors`: an inference artefact."""
    _run_tool(
        "export",
        _export,
        "usage: cnn-export checkpoint=PATH format=onnx|torchscript|safetensors [output=PATH]",
    )


if __name__ == "__main__":  # torchrun -m cnn_train.cli ...
    train()
