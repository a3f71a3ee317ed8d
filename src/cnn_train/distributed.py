"""Where a run computes: device resolution, data-parallel process groups and worker launch."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn

from cnn_train.errors import ExitRequest, UserError


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
        if ctx.device.type != "cuda":
            raise UserError("device.sync_bn=true needs GPUs (SyncBatchNorm has no CPU kernels)")
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def backend_for(cfg: DictConfig) -> str:
    """nccl between GPUs, gloo on the CPU, unless `device.backend` names one."""
    if cfg.get("backend", "auto") != "auto":
        return str(cfg.backend)
    return "nccl" if torch.cuda.is_available() else "gloo"


def process_count(cfg: DictConfig) -> int:
    """`device.num_procs`, else one process per visible GPU (two on a machine without one)."""
    if cfg.get("num_procs"):
        return int(cfg.num_procs)
    return torch.cuda.device_count() if torch.cuda.is_available() else 2


def launched_by_torchrun() -> bool:
    """Whether torchrun, or SLURM through submitit, already started this process as one rank."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        return True
    if "SUBMITIT_EXECUTOR" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR... from SLURM
        return True
    return False


def init_process_group(cfg: DictConfig) -> None:
    """Join the job's process group from the environment (MASTER_ADDR, RANK, WORLD_SIZE...)."""
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(backend_for(cfg), timeout=timedelta(minutes=10))


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the launching process dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _worker(
    local_rank: int,
    world_size: int,
    port: int,
    job: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    _die_with_parent()
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
    )
    job(*args)


def spawn_workers(world_size: int, job: Callable[..., Any], *args: Any) -> None:
    """Run `job(*args)` in `world_size` fresh processes (spawn) and wait for all of them.

    SIGTERM to this process is passed on to the workers (Ctrl-C reaches them directly). A
    worker that fails ends the others at once; its exit status becomes this job's.
    """
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _worker,
        args=(world_size, _free_port(), job, args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )

    def forward(signal_number: int, frame: object) -> None:
        for process in context.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal_number)

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as error:
        raise ExitRequest("", error.exit_code if error.exit_code > 0 else 1) from error
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
