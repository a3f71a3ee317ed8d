"""Re-evaluate a checkpoint on a split of its dataset (the `cnn-eval` job)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cnn_train.build import build_model_and_data, split_loader
from cnn_train.checkpoint import chosen_weights, load_checkpoint
from cnn_train.config_checks import check_data_config, check_eval_config
from cnn_train.data.loaders import views_loader
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.distributed import place_model, resolve_device
from cnn_train.engine.evaluation import eval_pass, views_pass
from cnn_train.engine.metrics import class_report
from cnn_train.engine.precision import resolve_precision, use_channels_last
from cnn_train.errors import UserError
from cnn_train.files import write_text_atomically
from cnn_train.inference import checked_run
from cnn_train.models import get_spec


def eval_data_config(saved: DictConfig, overrides: DictConfig) -> DictConfig:
    """The checkpoint's data config with the user's `data.<key>=...` overrides on top."""
    overrides = OmegaConf.create({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(overrides) - set(saved))
    if unknown:
        raise UserError(
            f"data.{unknown[0]} is not a setting of this checkpoint's dataset "
            f"({saved.name}); valid keys: {', '.join(sorted(saved))}"
        )
    data = OmegaConf.merge(saved, overrides)
    check_data_config(data)
    return data


def eval_checkpoint(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate `cfg.checkpoint`; write eval.json and confusion_matrix.csv, return the record."""
    check_eval_config(cfg)  # every key's bounds, before the checkpoint is read
    state = load_checkpoint(cfg.checkpoint)
    checked_run(state, cfg.checkpoint)  # the stored config and preprocessing, before building
    saved = OmegaConf.create(state["config"])
    data_cfg = eval_data_config(saved.data, cfg.data)
    built = build_model_and_data(saved.model, data_cfg)
    names = list(built.dataset.class_names)
    if names != list(state["class_names"]):
        raise UserError(
            f"the data's classes ({len(names)}) differ from the checkpoint's "
            f"({len(state['class_names'])}); point data.root at the dataset it was trained on"
        )
    built.model.load_state_dict(chosen_weights(state, cfg.weights, cfg.checkpoint))
    device = resolve_device(cfg.device)
    # The run's memory format too: the same kernels give the run's numbers to the last bit.
    spec = get_spec(saved.model.name)
    channels_last = use_channels_last(
        saved.trainer.get("channels_last"), device, spec, built.image_size
    )
    model = place_model(built.model, cfg.device, device, spec=spec, channels_last=channels_last)
    device = getattr(model, "input_device", device)
    # auto: the precision the run validated in (resolved and saved with it), whatever this CPU has
    precision_name = saved.trainer.precision if cfg.precision == "auto" else cfg.precision
    settings = {"precision": resolve_precision(precision_name, device), "topk": built.topk}
    batch_size = data_cfg.eval_batch_size or data_cfg.batch_size
    if cfg.tta == "none":
        loader = split_loader(built, data_cfg.split, batch_size, device, train=False)
        batches = min(len(loader), cfg.limit_batches or math.inf)
        sums = eval_pass(model, loader, batches, num_classes=len(names), **settings)
    else:
        evaluation = EvalPreprocessing.from_record(state["preprocessing"])
        loader = views_loader(
            built.dataset, data_cfg.split, evaluation, cfg.tta, batch_size=batch_size, device=device
        )
        batches = min(len(loader), cfg.limit_batches or math.inf)
        sums = views_pass(model, loader, batches, num_classes=len(names), **settings)
    result, confusion = sums.read(), sums.confusion_matrix()
    record = {
        "checkpoint": str(cfg.checkpoint),
        "split": data_cfg.split,
        "samples": result["samples"],
        "loss": result["loss"],
        "acc1": result["acc1"],
        "acc5": result["acc5"],
        "weights": cfg.weights,
        "tta": cfg.tta,
        **class_report(confusion, names),
    }
    write_text_atomically(run_dir / "eval.json", json.dumps(record) + "\n")
    write_text_atomically(run_dir / "confusion_matrix.csv", confusion_csv(confusion, names))
    return record


def confusion_csv(confusion: torch.Tensor, names: list[str]) -> str:
    """The matrix as CSV: a header of the predicted class names, then one row per true class."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *names])
    for name, row in zip(names, confusion.tolist(), strict=True):
        writer.writerow([name, *row])
    return out.getvalue()
