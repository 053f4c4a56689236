"""Data-parallel x sequence-parallel process groups.

World ranks are laid out SP-major, as MagicDrive-V2 / ColossalAI do: the ``sp_size`` consecutive
ranks ``[k*sp, (k+1)*sp)`` form one sequence-parallel group (one sample, split along its tokens),
and ranks with the same SP rank across groups form a data-parallel group. With SP=8 on 8-GPU nodes
each SP group stays inside one node.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass
class ParallelState:
    """Where this process sits in the ``dp_size x sp_size`` mesh."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    dp_size: int = 1
    dp_rank: int = 0
    sp_size: int = 1
    sp_rank: int = 0
    sp_group: Any = None  # None when sp_size == 1
    dp_group: Any = None  # None when not distributed
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_parallel(sp_size: int = 1, backend: Optional[str] = None, timeout_s: int = 1800) -> ParallelState:
    """Initialise ``torch.distributed`` from the ``torchrun`` environment and build the DP x SP groups.

    Without ``torchrun`` variables (``WORLD_SIZE`` unset) this makes a one-process group: SP must be 1.
    ``backend`` defaults to NCCL when CUDA is available, gloo otherwise.
    """
    if not isinstance(sp_size, int) or sp_size < 1:
        raise ValueError(f"sp_size must be an int >= 1, got {sp_size!r}")
    if "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        if sp_size != 1:
            raise ValueError(
                f"sp_size={sp_size} needs {sp_size} processes; launch with "
                f"`torchrun --nproc_per_node {sp_size} ...` (or set sp_size=1)"
            )
        # a plain `python` run: a one-process group, so engines that need torch.distributed still work
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    backend = backend or default_backend()
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % sp_size:
        raise ValueError(
            f"world size {world} is not divisible by sp_size={sp_size}; launch a multiple of {sp_size} "
            "processes or change sp_size"
        )
    dp_size = world // sp_size
    sp_group = dp_group = None
    for k in range(dp_size):  # every rank must create every group, in the same order
        ranks = list(range(k * sp_size, (k + 1) * sp_size))
        g = dist.new_group(ranks) if sp_size > 1 else None
        if rank in ranks:
            sp_group = g
    for s in range(sp_size):
        ranks = list(range(s, world, sp_size))
        g = dist.new_group(ranks)
        if rank in ranks:
            dp_group = g
    return ParallelState(
        world_size=world, rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", "0")), dp_size=dp_size,
        dp_rank=rank // sp_size, sp_size=sp_size, sp_rank=rank % sp_size, sp_group=sp_group,
        dp_group=dp_group, backend=backend,
    )


def destroy_parallel(wait_for_peers: bool = True) -> None:
    """Tear down every process group. On a normal exit, first wait until all ranks got here: a rank that
    leaves while a peer still runs collectives or writes a checkpoint can abort at interpreter exit on gloo.
    After an error, pass ``wait_for_peers=False``: the peers may never arrive."""
    if dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()
