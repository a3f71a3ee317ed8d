"""A whole training run: build, then train and validate every epoch, track and checkpoint."""

from __future__ import annotations

import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cnn_train.build import ModelAndData, build_model_and_data, load_weights, split_loader
from cnn_train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from cnn_train.distributed import resolve_device
from cnn_train.engine.loop import TrainState, current_lr, evaluate, train_one_epoch
from cnn_train.engine.precision import resolve_precision
from cnn_train.errors import UserError
from cnn_train.optim import build_optimizer, build_schedule
from cnn_train.schema import validate_train
from cnn_train.tracking import RunTracker, write_run_info

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolved_config(cfg: DictConfig, built: ModelAndData, precision: str) -> dict[str, Any]:
    """The config as a plain dict with every `auto`/`null` that the run resolved filled in."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    config["model"].update(variant=built.variant, num_classes=built.num_classes)
    config["data"]["image_size"] = built.image_size
    config["trainer"]["precision"] = precision
    return config


def _resume_path(resume: str) -> Path:
    path = Path(resume).expanduser()
    return path / "checkpoints" / "last.pt" if path.is_dir() else path


def fit(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data`; write the run folder; return the best validation result."""
    validate_train(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    built = build_model_and_data(cfg.model, cfg.data)
    if cfg.model.weights:
        load_weights(built.model, cfg.model.weights)
    model = built.model.to(device)
    config = resolved_config(cfg, built, precision.name)

    train_loader = split_loader(
        built, "train", cfg.data.batch_size, device, train=True, seed=cfg.seed
    )
    eval_batch_size = cfg.data.eval_batch_size or cfg.data.batch_size
    val_loader = split_loader(built, "val", eval_batch_size, device, train=False)
    steps_per_epoch = min(len(train_loader), cfg.trainer.limit_train_batches or math.inf)
    if steps_per_epoch == 0:
        raise UserError(
            f"the training split has {train_loader.dataset_size} images, fewer than "
            f"data.batch_size={cfg.data.batch_size}; use a smaller data.batch_size"
        )
    val_batches = min(len(val_loader), cfg.trainer.limit_val_batches or math.inf)
    total_steps = steps_per_epoch * cfg.trainer.epochs
    if cfg.trainer.max_steps:
        total_steps = min(total_steps, cfg.trainer.max_steps)

    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = build_schedule(cfg.scheduler, optimizer, total_steps, cfg.optimizer.lr)
    scaler = precision.grad_scaler()
    state = TrainState(max_steps=cfg.trainer.max_steps)
    start_epoch, best = 0, {"val_acc1": -1.0, "epoch": -1}
    if cfg.resume:
        saved = load_checkpoint(_resume_path(cfg.resume))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if schedule.scheduler is not None and saved.get("scheduler"):
            schedule.scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved.get("scaler") or {})
        start_epoch, state.step = saved["epoch"] + 1, saved["step"]
        best = {"val_acc1": saved["best_metric"], "epoch": saved.get("best_epoch", -1)}
        restore_rng(saved["rng"])
        log.info(f"resumed from {cfg.resume} at epoch {start_epoch}, step {state.step}")

    write_run_info(run_dir)
    tracker = RunTracker(run_dir, purge_step=state.step if cfg.resume else None)
    parameters = sum(p.numel() for p in model.parameters())
    log.info(
        f"{cfg.model.name} ({built.variant} variant, {parameters:,} parameters, "
        f"{built.num_classes} classes) on {cfg.data.name} at {built.image_size} px: "
        f"{train_loader.dataset_size} train / {val_loader.dataset_size} val images, "
        f"{device}, {precision.name}"
    )
    checkpoints = run_dir / "checkpoints"
    try:
        for epoch in range(start_epoch, cfg.trainer.epochs):
            if state.done:
                break
            train_loader.set_epoch(epoch)
            lr = current_lr(optimizer)
            train = train_one_epoch(
                model,
                train_loader,
                steps_per_epoch,
                optimizer=optimizer,
                schedule=schedule,
                scaler=scaler,
                precision=precision,
                state=state,
                topk=built.topk,
                log_every=cfg.trainer.log_every_steps,
                on_log=lambda step, values: tracker.scalars(values, step),
                desc=f"epoch {epoch + 1}/{cfg.trainer.epochs}",
            )
            schedule.step_epoch()
            skipped = train_loader.skipped_files
            tracker.scalars({"data/skipped_files": skipped}, state.step)
            if skipped:
                log.warning(f"epoch {epoch + 1}: skipped {skipped} unreadable image files")
            val = evaluate(model, val_loader, val_batches, precision=precision, topk=built.topk)
            record = {
                "epoch": epoch,
                "step": state.step,
                "train_loss": train["loss"],
                "train_acc1": train["acc1"],
                "val_loss": val["loss"],
                "val_acc1": val["acc1"],
                "val_acc5": val["acc5"],
                "val_samples": val["samples"],
                "lr": lr,
                "images_per_sec": train["images_per_sec"],
                "epoch_time_s": train["time_s"],
            }
            tracker.log_epoch(record)
            is_best = val["acc1"] > best["val_acc1"]
            if is_best:
                best = {"val_acc1": val["acc1"], "epoch": epoch}
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.scheduler.state_dict() if schedule.scheduler else {},
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "step": state.step,
                "best_metric": best["val_acc1"],
                "best_epoch": best["epoch"],
                "val_acc1": val["acc1"],
                "config": config,
                "class_names": list(built.dataset.class_names),
                "rng": capture_rng(),
            }
            save_checkpoint(checkpoints / "last.pt", checkpoint)
            if is_best:
                _copy_atomically(checkpoints / "last.pt", checkpoints / "best.pt")
            log.info(
                f"epoch {epoch + 1}/{cfg.trainer.epochs} | train loss {train['loss']:.4f} "
                f"acc1 {train['acc1']:.4f} | val loss {val['loss']:.4f} acc1 {val['acc1']:.4f} "
                f"acc5 {val['acc5']:.4f} | lr {lr:.4g} | {train['images_per_sec']:.0f} img/s | "
                f"{train['time_s']:.1f} s"
            )
    finally:
        tracker.close()
    return {"best_val_acc1": best["val_acc1"], "best_epoch": best["epoch"], "step": state.step}


def _copy_atomically(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(source, temporary)
        temporary.replace(target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserError(
            f"could not write checkpoint {target}: {error.strerror or error}"
        ) from error
