"""Launcher-agnostic distributed start (open_clip_train.distributed, trimmed).

Works the same under::

    python -m panel2patch.train.main --config c.yaml                       # 1 process
    torchrun --nproc_per_node 2 -m panel2patch.train.main --config c.yaml  # RANK/WORLD_SIZE set
    deepspeed --num_gpus 2 -m panel2patch.train.main --config c.yaml       # idem
    srun --ntasks 8 python -m panel2patch.train.main --config c.yaml       # SLURM_* only

Under srun nothing sets RANK etc.: :func:`slurm_env` maps ``SLURM_PROCID`` -> RANK,
``SLURM_NTASKS`` -> WORLD_SIZE, ``SLURM_LOCALID`` -> LOCAL_RANK and picks MASTER_ADDR (first
host of ``SLURM_JOB_NODELIST``) and MASTER_PORT (derived from the job id) when missing, so that
``env://`` initialisation works.  Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from collections.abc import Mapping

import torch
import torch.distributed as dist


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list: ``scontrol show hostnames`` when available, else a parser
    for the common forms ``n1,n2`` / ``gpu[003-005,9]`` / ``a[1-2],b3``."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def slurm_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT to add to ``env`` (default
    ``os.environ``) for an srun-launched task; {} when not under srun or when a launcher
    (torchrun, deepspeed) already set RANK.  Existing MASTER_* values are kept."""
    env = os.environ if env is None else env
    if "RANK" in env or "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return {}
    out = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
    }
    if "MASTER_ADDR" not in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        out["MASTER_ADDR"] = first_host(nodelist) if nodelist else "127.0.0.1"
    if "MASTER_PORT" not in env:
        # a port per job so that two jobs sharing a node do not collide
        out["MASTER_PORT"] = str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return out


def world_from_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) after applying :func:`slurm_env`."""
    os.environ.update(slurm_env())
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def device_for(local_rank: int) -> torch.device:
    """The rank's GPU (one per local rank) when torch sees a GPU, else the CPU."""
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU of its own: this node has {torch.cuda.device_count()} visible "
                "GPU(s); start at most that many ranks per node (train resources / --nproc_per_node), "
                "or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(use_deepspeed: bool = True) -> tuple[int, int, int, torch.device]:
    """Start the process group (also for world size 1, so one code path serves all) and return
    (rank, local rank, world size, device).  A single process without launcher variables gets
    a local MASTER_ADDR and a free port."""
    rank, local_rank, world = world_from_env()
    if world == 1 and "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world)})
    device = device_for(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if use_deepspeed:
        own_extensions_dir()  # before anything imports deepspeed and builds its ops
    if not dist.is_initialized():
        if use_deepspeed:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(minutes=30))
        else:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return rank, local_rank, world, device


def own_extensions_dir() -> None:
    """DeepSpeed compiles its CPU ops (``deepspeed_shm_comm``) with torch's cpp_extension into one
    cache per user (``~/.cache/torch_extensions``), keyed by the op's name only, while the build
    command holds the Python environment's path: two checkouts or CI clones with their own venvs
    rebuilt it in turn (80-130 s each time, seen in this repository's Slurm tests). Unless
    ``TORCH_EXTENSIONS_DIR`` is set, a writable environment gets its own cache inside it."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(sys.prefix, "torch_extensions")


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_true(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (ranks agree when to stop an epoch)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
