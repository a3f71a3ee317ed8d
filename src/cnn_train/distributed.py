"""Where a run computes: device resolution, data-parallel process groups and worker launch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from cnn_train.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly one-process) job."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder."""
        return self.rank == 0


def resolve_device(cfg: DictConfig, local_rank: int = 0) -> torch.device:
    """The torch device for `device.name`: auto picks CUDA when a GPU is visible, else the CPU."""
    if cfg.name == "cpu":
        return torch.device("cpu")
    if cfg.name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
        return torch.device("cuda", 0)
    if cfg.name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("device=mps but no Apple GPU (MPS) is available; use device=cpu")
        return torch.device("mps")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_context(cfg: DictConfig) -> DistContext:
    """This process's device, rank and world size (from the process group, if one is set up)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(resolve_device(cfg, local_rank), rank, world)
    return DistContext(resolve_device(cfg))


def wrap_model(model: nn.Module, cfg: DictConfig, ctx: DistContext) -> nn.Module:
    """The module the training step calls: DistributedDataParallel in a multi-process job."""
    if ctx.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if cfg.get("sync_bn", False):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a one-element list outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
