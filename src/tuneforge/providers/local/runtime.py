"""Where a training process runs: its rank among torchrun's processes, its device, its threads."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start_runtime() -> Runtime:
    """Join the torchrun process group when launched by torchrun, else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"num_processes asks for GPU {local_rank}; this machine has "
                f"{torch.cuda.device_count()}"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(cpu_threads_per_process())
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(int(os.environ.get("RANK", "0")), world_size, local_rank, device)


def cpu_threads_per_process() -> int:
    """``OMP_NUM_THREADS`` when set (the launcher sets it per rank), else every usable core."""
    configured = os.environ.get("OMP_NUM_THREADS")
    return int(configured) if configured else len(os.sched_getaffinity(0))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions; elsewhere bf16 is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
