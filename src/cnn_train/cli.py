"""Console entry points. Each composes its config with Hydra and hands it to the engine."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from cnn_train.errors import ExitRequest, UserError
from cnn_train.schema import register_configs

CONFIG_PATH = "pkg://cnn_train.configs"
log = logging.getLogger("cnn_train")

register_configs()


def _run_job(job: Callable[[DictConfig, Path], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """Run a job in Hydra's output folder; a UserError becomes one line on stderr and exit 1."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return job(cfg, run_dir)
    except UserError as error:
        log.error(f"error: {error}")
        sys.exit(1)
    except ExitRequest as error:
        if str(error):
            log.warning(str(error))
        sys.exit(error.exit_code)
    except MissingMandatoryValue as error:
        log.error(f"error: {error.full_key} is required; pass {error.full_key}=...")
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> float:
    from cnn_train.engine.trainer import fit

    summary = _run_job(fit, cfg)
    run_dir = Path(summary["run_dir"])
    print(
        f"best val top-1 {summary['best_val_acc1']:.4f} (epoch {summary['best_epoch'] + 1}) | "
        f"run folder {run_dir} | view: tensorboard --logdir {run_dir.parent}"
    )
    return summary["best_val_acc1"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _eval(cfg: DictConfig) -> None:
    from cnn_train.engine.evaluator import run_eval

    print(json.dumps(_run_job(run_eval, cfg)))


def train() -> None:
    """`cnn-train`: train a model as the composed config says."""
    _train()


def evaluate() -> None:
    """`cnn-eval checkpoint=PATH`: re-evaluate a checkpoint."""
    _eval()
