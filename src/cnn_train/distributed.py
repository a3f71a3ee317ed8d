"""Where a run computes: device resolution, data-parallel process groups and worker launch."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from cnn_train.errors import ExitRequest, UserError, exit_status
from cnn_train.logs import also_log_to, file_log_format
from cnn_train.models.registry import SPLIT_DEVICE_NAME, split_devices

if TYPE_CHECKING:  # configs are read by key here; the import stays lazy for tools without Hydra
    from omegaconf import DictConfig

    from cnn_train.models.registry import ModelSpec

log = logging.getLogger(__name__)


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


def _gpu_or_cpu(cfg: DictConfig, local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def _cpu(cfg: DictConfig, local_rank: int) -> torch.device:
    return torch.device("cpu")


def _cuda(cfg: DictConfig, local_rank: int) -> torch.device:
    if not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device("cuda", 0)


def _mps(cfg: DictConfig, local_rank: int) -> torch.device:
    if not torch.backends.mps.is_available():
        raise UserError("device=mps but no Apple GPU (MPS) is available; use device=cpu")
    return torch.device("mps")


def _split_input(cfg: DictConfig, local_rank: int) -> torch.device:
    return split_devices(list(cfg.devices))[0]


def _move(
    model: nn.Module, spec: ModelSpec, cfg: DictConfig, device: torch.device, channels_last: bool
) -> nn.Module:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def _split(
    model: nn.Module, spec: ModelSpec, cfg: DictConfig, device: torch.device, channels_last: bool
) -> nn.Module:
    return spec.place_split(model, list(cfg.devices))


@dataclass(frozen=True)
class DeviceOption:
    """What a `device=` option means: the device of a process, how the model is placed on it,
    and whether the job runs one process per device (data parallel)."""

    resolve: Callable[[DictConfig, int], torch.device]
    place: Callable[[nn.Module, ModelSpec, DictConfig, torch.device, bool], nn.Module] = _move
    data_parallel: bool = False


DEVICES: dict[str, DeviceOption] = {
    "auto": DeviceOption(_gpu_or_cpu),
    "cpu": DeviceOption(_cpu),
    "cuda": DeviceOption(_cuda),
    "mps": DeviceOption(_mps),
    "ddp": DeviceOption(_gpu_or_cpu, data_parallel=True),
    SPLIT_DEVICE_NAME: DeviceOption(_split_input, place=_split),
}


def device_option(cfg: DictConfig) -> DeviceOption:
    """The registry entry of `cfg.name`, or a UserError listing the valid names."""
    if cfg.name not in DEVICES:
        raise UserError(f"device={cfg.name} is not one of {', '.join(DEVICES)}")
    return DEVICES[cfg.name]


def resolve_device(cfg: DictConfig, local_rank: int = 0) -> torch.device:
    """The torch device of `device.name` for this process (auto: CUDA when visible, else CPU)."""
    return device_option(cfg).resolve(cfg, local_rank)


def place_model(
    model: nn.Module, cfg: DictConfig, device: torch.device, *, spec: ModelSpec, channels_last: bool
) -> nn.Module:
    """Put `model` where `device=` says (one device, or two as its `spec.split` does it)."""
    return device_option(cfg).place(model, spec, cfg, device, channels_last)


def resolve_context(cfg: DictConfig) -> DistContext:
    """This process's device, rank and world size (from the process group, if one is set up)."""
    if is_distributed():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(resolve_device(cfg, local_rank), rank, world)
    return DistContext(resolve_device(cfg))


def wrap_model(model: nn.Module, cfg: DictConfig, ctx: DistContext) -> nn.Module:
    """The module the training step calls: DistributedDataParallel in a multi-process job."""
    if ctx.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if cfg.sync_bn:
        if ctx.device.type != "cuda":
            raise UserError("device.sync_bn=true needs GPUs (SyncBatchNorm has no CPU kernels)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def is_distributed() -> bool:
    """Whether this process is a rank of a multi-process job (a process group is set up)."""
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a one-element list outside a process group)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def backend_for(cfg: DictConfig) -> str:
    """nccl between GPUs, gloo on the CPU, unless `device.backend` names one."""
    if cfg.backend != "auto":
        return str(cfg.backend)
    return "nccl" if torch.cuda.is_available() else "gloo"


def process_count(cfg: DictConfig) -> int:
    """`device.num_procs`, else one process per visible GPU (two on a machine without one)."""
    if cfg.num_procs:
        return int(cfg.num_procs)
    return torch.cuda.device_count() if torch.cuda.is_available() else 2


# torchrun sets these for each rank; the marker tells its ranks from a shell that merely has
# RANK and WORLD_SIZE left over (they would make a run wait for ranks that never come).
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR")
TORCHRUN_MARKER = "TORCHELASTIC_RUN_ID"


def launched_by_torchrun() -> bool:
    """Whether torchrun, or SLURM through submitit, already started this process as one rank."""
    if TORCHRUN_MARKER in os.environ and all(name in os.environ for name in RANK_VARIABLES):
        return True
    if "SUBMITIT_EXECUTOR" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        if not all(name in os.environ for name in RANK_VARIABLES):  # not exported yet
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR... from SLURM
        return True
    return False


def launcher_rank() -> int:
    """This process's rank in a torchrun or SLURM job (0 outside one)."""
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def init_process_group(cfg: DictConfig) -> None:
    """Join the job's process group from the environment (MASTER_ADDR, RANK, WORLD_SIZE...)."""
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    timeout = timedelta(minutes=10)
    dist.init_process_group(backend_for(cfg), timeout=timeout, **_this_attempts_store(timeout))


def _this_attempts_store(timeout: timedelta) -> dict[str, Any]:
    """torchrun's shared store, seen through a prefix of its own for each restart of the group.

    torchrun's agent keeps one TCPStore for every restart of its workers, and the process group
    writes the same keys each time: without the prefix a restarted group reads the dead group's
    addresses (gloo: "connectFullMesh ... Connection refused", or a wait until the timeout).
    The restart count is the same on every node with the static rendezvous and on one node;
    across nodes with `--rdzv-backend=c10d` it is not, so there set
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (a fresh store each round, no prefix needed).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = dist.PrefixStore(f"cnn_train/restart{attempt}", store)
    return {"store": prefixed, "rank": rank, "world_size": world_size}


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
        args=(world_size, free_port(), job, args),
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


TrainFunction = Callable[["DictConfig", Path, DistContext], dict[str, Any]]


def run_rank(job: TrainFunction, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The one entry of every rank, however it started: in this process (one device), as a rank
    that torchrun or SLURM started, or as a worker that `spawn_workers` started.

    A data-parallel rank joins the job's process group first and leaves it at the end; ranks
    other than 0 log warnings only.
    """
    joins = device_option(cfg.device).data_parallel
    if joins:
        init_process_group(cfg.device)
    try:
        ctx = resolve_context(cfg.device)
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        return job(cfg, run_dir, ctx)
    finally:
        if joins:
            dist.destroy_process_group()


def _spawned_worker(
    job: TrainFunction, cfg: DictConfig, run_dir: Path, result_path: Path, log_format: str
) -> None:
    """A worker process: log like the parent job, run its rank, report rank 0's summary in a
    file; an error ends it with the status `exit_status` gives (the parent passes it on)."""
    rank = int(os.environ["RANK"])
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(
        logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s")
    )
    root.addHandler(console)
    root.setLevel(logging.INFO)
    if rank == 0:
        also_log_to(run_dir / "train.log", log_format)
    try:
        summary = run_rank(job, cfg, run_dir)
    except Exception as error:
        status = exit_status(error)
        if status is None:
            raise
        code, message = status
        if message and (code == 1 or rank == 0):  # a signal's message once, not from each rank
            log.log(logging.ERROR if code == 1 else logging.WARNING, message)
        sys.exit(code)
    if rank == 0:
        result_path.write_text(json.dumps(summary))


def launch(cfg: DictConfig, run_dir: Path, job: TrainFunction) -> dict[str, Any]:
    """Run `job` as `device=` says: here, as one rank of a torchrun/SLURM job, or in workers.

    With a data-parallel device and no launcher around it, this process starts one worker per GPU
    (or `device.num_procs` on the CPU) and returns rank 0's summary.
    """
    if not device_option(cfg.device).data_parallel or launched_by_torchrun():
        return run_rank(job, cfg, run_dir)
    stray = [name for name in RANK_VARIABLES if name in os.environ]
    if stray:
        log.warning(f"ignoring {', '.join(stray)} in the environment: torchrun did not start this")

    with tempfile.TemporaryDirectory() as scratch:
        result_path = Path(scratch) / "summary.json"
        spawn_workers(
            process_count(cfg.device),
            _spawned_worker,
            job,
            cfg,
            run_dir,
            result_path,
            file_log_format(),
        )
        return json.loads(result_path.read_text())
