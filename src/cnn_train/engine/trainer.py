"""A whole training run: build, then train and validate every epoch, track and checkpoint."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnn_train.build import ModelAndData, build_model_and_data, split_loader
from cnn_train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from cnn_train.distributed import (
    DistContext,
    all_gather_objects,
    init_process_group,
    launched_by_torchrun,
    process_count,
    resolve_context,
    spawn_workers,
    wrap_model,
)
from cnn_train.engine.guards import StepGuard, StopSignal
from cnn_train.engine.loop import current_lr, evaluate
from cnn_train.engine.metrics import MetricSums
from cnn_train.engine.precision import resolve_precision, use_channels_last
from cnn_train.engine.resume import find_resume_checkpoint, trim_metrics
from cnn_train.engine.stepper import Stepper
from cnn_train.errors import ExitRequest, Interrupted, UserError
from cnn_train.inference import dataset_channels, preprocessing_of
from cnn_train.models.split import place_model
from cnn_train.models.weights import freeze_features, load_weights
from cnn_train.optim import build_optimizer, build_schedule
from cnn_train.schema import validate_train
from cnn_train.tracking import RunTracker, progress, write_hparams, write_run_info

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_determinism(cfg: DictConfig, built: ModelAndData, device: torch.device) -> None:
    """Deterministic kernels when asked (and fail early where none exist); fast ones otherwise."""
    if not cfg.trainer.deterministic:
        torch.backends.cudnn.benchmark = device.type == "cuda"
        return
    pooled = getattr(built.model, "pooled_size", None)
    if device.type == "cuda" and pooled is not None:
        probe = copy.deepcopy(built.model.features).to("meta")
        side = built.image_size
        features = probe(torch.empty(1, 3, side, side, device="meta"))
        if tuple(features.shape[-2:]) != tuple(pooled):
            raise UserError(
                f"trainer.deterministic=true: {cfg.model.name} at {built.image_size} px needs "
                "adaptive average pooling, which has no deterministic CUDA backward; use "
                "data.image_size=224 or trainer.deterministic=false"
            )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def resolved_config(
    cfg: DictConfig, built: ModelAndData, precision: str, channels_last: bool
) -> dict[str, Any]:
    """The config as a plain dict with every `auto`/`null` that the run resolved filled in."""
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    config["model"].update(variant=built.variant, num_classes=built.num_classes)
    config["data"]["image_size"] = built.image_size
    config["trainer"].update(precision=precision, channels_last=channels_last)
    config["resume"] = None
    return config


class Trainer:
    """Holds a run's parts and runs its epochs; rank 0 alone writes files."""

    def __init__(self, cfg: DictConfig, run_dir: Path, ctx: DistContext) -> None:
        validate_train(cfg)
        seed_everything(cfg.seed + ctx.rank)
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        self.built = build_model_and_data(cfg.model, cfg.data)
        if cfg.model.weights:
            load_weights(self.built.model, cfg.model.weights, cfg.model.name, self.built.variant)
        if cfg.model.freeze_features:
            freeze_features(self.built.model)
        channels_last = use_channels_last(
            cfg.trainer.channels_last, self.device, cfg.model.name, self.built.image_size
        )
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if cfg.device.name == "alexnet_split":
            self.model: nn.Module = place_model(self.built.model, list(cfg.device.devices))
            self.device = self.model.input_device
        else:
            self.model = self.built.model.to(self.device, memory_format=memory_format)
        self.precision = resolve_precision(cfg.trainer.precision, self.device)
        set_determinism(cfg, self.built, self.device)
        self.train_model = wrap_model(self.model, cfg.device, ctx)
        if cfg.trainer.compile:
            self.train_model = torch.compile(self.train_model)
        self.config = resolved_config(cfg, self.built, self.precision.name, channels_last)

        shard = {"rank": ctx.rank, "world_size": ctx.world_size}
        batch, eval_batch = cfg.data.batch_size, cfg.data.eval_batch_size or cfg.data.batch_size
        self.train_loader = split_loader(
            self.built, "train", batch, self.device, train=True, seed=cfg.seed, **shard
        )
        self.val_loader = split_loader(
            self.built, "val", eval_batch, self.device, train=False, **shard
        )
        accumulate = cfg.trainer.accumulate_steps
        batches = min(len(self.train_loader), cfg.trainer.limit_train_batches or math.inf)
        self.steps_per_epoch = batches - batches % accumulate
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the training split has {self.train_loader.dataset_size} images, too few for "
                f"data.batch_size={batch} per process x trainer.accumulate_steps={accumulate}; "
                "use a smaller data.batch_size"
            )
        self.val_batches = min(len(self.val_loader), cfg.trainer.limit_val_batches or math.inf)
        total_steps = self.steps_per_epoch // accumulate * cfg.trainer.epochs
        if cfg.trainer.max_steps:
            total_steps = min(total_steps, cfg.trainer.max_steps)
        self.total_steps = total_steps

        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.schedule = build_schedule(
            cfg.scheduler,
            self.optimizer,
            total_steps,
            cfg.optimizer.lr,
            self.steps_per_epoch // accumulate,
        )
        self.stepper = Stepper(
            self.train_model,
            self.model,
            cfg,
            precision=self.precision,
            optimizer=self.optimizer,
            schedule=self.schedule,
            num_classes=self.built.num_classes,
            channels_last=channels_last,
        )
        self.step, self.start_epoch, self.resume_batch = 0, 0, 0
        self.best = {"val_acc1": -1.0, "epoch": -1}
        self.output_device = getattr(self.model, "output_device", self.device)
        self.epoch_sums = MetricSums(self.output_device, self.built.topk)
        self.run_dir = run_dir
        resume_from = find_resume_checkpoint(cfg, run_dir)
        if resume_from is not None:
            self._restore(resume_from)
        self.tracker = self._open_tracker(resumed=resume_from is not None)
        self.stepper.track_grad_norms = cfg.tracking.histogram_every > 0
        if self.tracker is not None and resume_from is None:
            self._log_start()

    def _restore(self, path: Path) -> None:
        saved = load_checkpoint(path)
        self.model.load_state_dict(saved["model"])
        same_schedule = saved.get("total_steps", self.total_steps) == self.total_steps
        if not same_schedule:
            log.warning(
                f"the run's length changed ({saved['total_steps']} -> {self.total_steps} steps): "
                "the LR schedule is rebuilt for the new length and advanced to the saved step"
            )
        self.stepper.load_state_dict(saved, same_schedule=same_schedule)
        self.step = saved["step"]
        self.best = {"val_acc1": saved["best_metric"], "epoch": saved.get("best_epoch", -1)}
        if saved.get("epoch_done", True):
            self.start_epoch = saved["epoch"] + 1
        else:
            self.start_epoch, self.resume_batch = saved["epoch"], saved["batch_in_epoch"]
            sums = saved["train_sums"]
            if self.ctx.rank < len(sums):  # a rank the saved job did not have starts from zero
                self.epoch_sums.sums.copy_(sums[self.ctx.rank])
        restore_rng(saved["rng"][min(self.ctx.rank, len(saved["rng"]) - 1)])
        if path.parent.name == "checkpoints":
            self.run_dir = path.parents[1]
        log.info(
            f"resumed from {path} at epoch {self.start_epoch + 1}, batch {self.resume_batch}, "
            f"step {self.step}; writing into {self.run_dir}"
        )

    def _open_tracker(self, *, resumed: bool) -> RunTracker | None:
        if not self.ctx.is_main:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resumed:
            trim_metrics(self.run_dir / "metrics.jsonl", self.start_epoch)
            _also_log_to(self.run_dir / "train.log")
        else:
            write_run_info(self.run_dir)
        return RunTracker(self.run_dir, purge_step=self.step if resumed else None)

    def _log_start(self) -> None:
        """A grid of training images and the model graph, once (in eval mode: no state changes)."""
        tracking = self.cfg.tracking
        if not (tracking.image_grid or tracking.graph):
            return
        self.train_loader.set_epoch(0)
        images, _ = next(iter(self.train_loader))
        self.model.eval()
        self.tracker.log_start(
            self.model,
            images,
            self.built.dataset.mean,
            self.built.dataset.std,
            image_grid=tracking.image_grid,
            graph=tracking.graph,
        )
        self.model.train()

    @property
    def done(self) -> bool:
        """Whether the step budget (`trainer.max_steps`) is spent."""
        return bool(self.cfg.trainer.max_steps) and self.step >= self.cfg.trainer.max_steps

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; return the best validation result."""
        cfg = self.cfg
        parameters = sum(p.numel() for p in self.model.parameters())
        log.info(
            f"{cfg.model.name} ({self.built.variant} variant, {parameters:,} parameters, "
            f"{self.built.num_classes} classes) on {cfg.data.name} at {self.built.image_size} px: "
            f"{self.train_loader.dataset_size} train / {self.val_loader.dataset_size} val images, "
            f"{self.device} x{self.ctx.world_size}, {self.precision.name}"
        )
        try:
            with StopSignal() as stop:
                guard = StepGuard(self.device, stop, check_finite=self.precision.name != "fp16")
                for epoch in range(self.start_epoch, cfg.trainer.epochs):
                    if self.done:
                        break
                    self._run_epoch(epoch, guard, stop)
            if self.tracker is not None:
                write_hparams(self.tracker.writer, self.run_dir, self.config, self.best, self.step)
        except torch.OutOfMemoryError as error:
            size = cfg.data.batch_size
            raise UserError(
                f"CUDA out of memory at data.batch_size={size}; try data.batch_size={size // 2}"
                " or trainer.precision=bf16"
            ) from error
        finally:
            if self.tracker is not None:
                self.tracker.close()
        return {
            "best_val_acc1": self.best["val_acc1"],
            "best_epoch": self.best["epoch"],
            "step": self.step,
            "run_dir": str(self.run_dir),
            "is_main": self.ctx.is_main,
        }

    def _run_epoch(self, epoch: int, guard: StepGuard, stop: StopSignal) -> None:
        cfg = self.cfg
        skip = self.resume_batch if epoch == self.start_epoch else 0
        if skip == 0:
            self.epoch_sums = MetricSums(self.output_device, self.built.topk)
        self.train_loader.set_epoch(epoch)
        self.train_model.train()
        lr = current_lr(self.optimizer)
        batches = itertools.islice(self.train_loader, skip, self.steps_per_epoch)
        bar = progress(
            batches,
            total=self.steps_per_epoch - skip,
            desc=f"epoch {epoch + 1}/{cfg.trainer.epochs}",
        )
        start, batch_index, trained = time.perf_counter(), skip, 0
        for images, targets in bar:
            logits, loss, stepped = self.stepper.train_batch(images, targets)
            self.epoch_sums.update(logits, targets.to(logits.device, non_blocking=True), loss)
            batch_index, trained = batch_index + 1, trained + 1
            if not stepped:
                continue
            self.step += 1
            reason = guard.after_step(loss)
            if reason == "nonfinite":
                raise UserError(
                    f"the loss became non-finite at step {self.step} (epoch {epoch + 1}); no "
                    f"checkpoint was written after it; lower optimizer.lr (now {cfg.optimizer.lr})"
                    " or set trainer.grad_clip_norm"
                )
            if reason == "signal":
                bar.close()
                path = self._save(epoch, batch_index, epoch_done=False)
                log.info(f"stopping on signal {stop.received}; saved {path}")
                raise Interrupted(stop.received or 15, str(path))
            if self.step % cfg.trainer.log_every_steps == 0:
                self._log_progress(bar, loss)
            every = cfg.trainer.checkpoint_every_steps
            if every and self.step % every == 0 and batch_index < self.steps_per_epoch:
                self._save(epoch, batch_index, epoch_done=False)
            if self.done:
                break
        bar.close()
        train = self.epoch_sums.read()
        elapsed = time.perf_counter() - start
        val_sums = evaluate(
            self.train_model,
            self.val_loader,
            self.val_batches,
            precision=self.precision,
            topk=self.built.topk,
            num_classes=self.built.num_classes,
        )
        val = val_sums.read()
        self.schedule.step_epoch(val["acc1"])
        skipped = self.train_loader.skipped_files
        if skipped:
            log.warning(f"epoch {epoch + 1}: skipped {skipped} unreadable image files")
        images_per_sec = trained * cfg.data.batch_size * self.ctx.world_size / max(elapsed, 1e-9)
        record = {
            "epoch": epoch,
            "step": self.step,
            "train_loss": train["loss"],
            "train_acc1": train["acc1"],
            "val_loss": val["loss"],
            "val_acc1": val["acc1"],
            "val_acc5": val["acc5"],
            "val_samples": val["samples"],
            "skipped_files": skipped,
            "lr": lr,
            "images_per_sec": images_per_sec,
            "epoch_time_s": elapsed,
        }
        if self.stepper.ema is not None:
            ema = evaluate(
                self.stepper.ema.module,
                self.val_loader,
                self.val_batches,
                precision=self.precision,
                topk=self.built.topk,
                desc="val (EMA)",
            ).read()
            record.update(
                val_ema_loss=ema["loss"], val_ema_acc1=ema["acc1"], val_ema_acc5=ema["acc5"]
            )
        is_best = val["acc1"] > self.best["val_acc1"]
        if is_best:
            self.best = {"val_acc1": val["acc1"], "epoch": epoch}
        confusion = val_sums.confusion_matrix()
        if self.tracker is not None:
            self.tracker.log_epoch(record)
            self.tracker.log_validation_details(
                confusion, self.built.dataset.class_names, self.step
            )
            every = cfg.tracking.histogram_every
            if every and (epoch + 1) % every == 0:
                self.tracker.log_histograms(self.model, self.stepper.grad_norms, self.step)
        path = self._save(epoch, batch_index, epoch_done=True)
        if is_best and path is not None:
            _copy_atomically(path, path.with_name("best.pt"))
        log.info(
            f"epoch {epoch + 1}/{cfg.trainer.epochs} | train loss {train['loss']:.4f} "
            f"acc1 {train['acc1']:.4f} | val loss {val['loss']:.4f} acc1 {val['acc1']:.4f} "
            f"acc5 {val['acc5']:.4f} | lr {lr:.4g} | {images_per_sec:.0f} img/s | {elapsed:.1f} s"
        )

    def _log_progress(self, bar: Any, loss: torch.Tensor) -> None:
        """Show running means on the bar and add the batch loss and LR to TensorBoard."""
        running = self.epoch_sums.read()
        bar.set_postfix(loss=f"{running['loss']:.4f}", acc1=f"{running['acc1']:.3f}")
        if self.tracker is not None:
            values = {"train/batch_loss": loss.item(), "lr": current_lr(self.optimizer)}
            self.tracker.scalars(values, self.step)

    def _save(self, epoch: int, batch_in_epoch: int, *, epoch_done: bool) -> Path | None:
        """Write checkpoints/last.pt (rank 0); every rank contributes its RNG and metric state."""
        rng = all_gather_objects(capture_rng())
        sums = all_gather_objects(self.epoch_sums.sums.cpu())
        if not self.ctx.is_main:
            return None
        state = {
            "model": self.model.state_dict(),
            **self.stepper.state_dict(),
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "epoch_done": epoch_done,
            "step": self.step,
            "total_steps": self.total_steps,
            "best_metric": self.best["val_acc1"],
            "best_epoch": self.best["epoch"],
            "config": self.config,
            "class_names": list(self.built.dataset.class_names),
            "preprocessing": preprocessing_of(
                self.built.image_size,
                self.built.dataset.mean,
                self.built.dataset.std,
                dataset_channels(self.built.dataset),
                self.cfg.data.augment,
            ),
            "rng": rng,
            "train_sums": sums,
        }
        path = self.run_dir / "checkpoints" / "last.pt"
        save_checkpoint(path, state)
        return path


def _also_log_to(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)


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


def _train_rank(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    init_process_group(cfg.device)
    try:
        ctx = resolve_context(cfg.device)
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        return Trainer(cfg, run_dir, ctx).fit()
    finally:
        dist.destroy_process_group()


def _spawned_rank(cfg: DictConfig, run_dir: Path, result_path: Path) -> None:
    """A worker process: log like the parent job, train, report rank 0's summary in a file."""
    rank = int(os.environ["RANK"])
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(
        logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s")
    )
    root.addHandler(console)
    root.setLevel(logging.INFO)
    if rank == 0:
        _also_log_to(run_dir / "train.log")
    try:
        summary = _train_rank(cfg, run_dir)
    except UserError as error:
        log.error(f"error: {error}")
        sys.exit(1)
    except ExitRequest as error:
        if rank == 0:
            log.warning(str(error))
        sys.exit(error.exit_code)
    if rank == 0:
        result_path.write_text(json.dumps(summary))


def fit(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data`; write the run folder; return the summary.

    With `device=ddp` this process starts one worker per GPU (or `device.num_procs` on the CPU),
    unless torchrun already started it as one rank of a job.
    """
    if cfg.device.name != "ddp":
        return Trainer(cfg, run_dir, resolve_context(cfg.device)).fit()
    validate_train(cfg)
    if launched_by_torchrun():
        return _train_rank(cfg, run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        result_path = Path(scratch) / "summary.json"
        spawn_workers(process_count(cfg.device), _spawned_rank, cfg, run_dir, result_path)
        return json.loads(result_path.read_text())
