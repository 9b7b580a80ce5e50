"""One distributed path: torchrun + DistributedDataParallel. Without torchrun's environment
everything below is a single process and the collectives are no-ops."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from .runtime import pick_device


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (even with one process): DDP over a process group

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on any rank (e.g. a stop request)."""
        if self.world == 1:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (e.g. the run folder it made)."""
        if self.world == 1:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]


def compute_init(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Start the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "TORCHELASTIC_RUN_ID" not in os.environ and world <= 1:  # a plain process, not torchrun's
        return Dist(), pick_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent keeps one store for all the restarts of a group (--max-restarts), and a
        # restarted group would read the addresses the group before it published (pytorch/pytorch#167288):
        # each attempt keeps its keys under its own prefix
        store = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                               is_master=False)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        tdist.init_process_group(backend, store=tdist.PrefixStore(f"alexnet/attempt-{attempt}", store),
                                 rank=rank, world_size=world)
    else:
        tdist.init_process_group(backend)
    return Dist(rank, world, local_rank, launched=True), device


def compute_cleanup() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
