"""Data-parallel training across processes (``torchrun``), and the collectives it needs.

``torchrun --nproc_per_node N -m mmaux train ...`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`init_from_env` joins the process group (NCCL on CUDA, gloo on CPU).
Every rank reads the same shuffled global batch order and takes its own contiguous slice of
each global batch (:func:`shard`), so N processes with ``train.batch_size`` B see exactly the
batches one process sees with B. Only rank 0 logs, checkpoints and evaluates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def env_info() -> DistInfo:
    """What the launcher's environment variables say (no process group is touched)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group the launcher describes (once); single process: nothing."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


def shard(batch: Sequence[int], info: DistInfo) -> list[int]:
    """This rank's contiguous slice of a global batch (its size must divide evenly)."""
    if not info.enabled:
        return list(batch)
    if len(batch) % info.world_size:
        raise ValueError(
            f"a global batch of {len(batch)} does not split over {info.world_size} processes; "
            "make train.batch_size a multiple of the number of processes"
        )
    per = len(batch) // info.world_size
    return list(batch[info.rank * per : (info.rank + 1) * per])


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` from all ranks in rank order; gradients flow back to each rank."""
    if not info.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``x`` over ranks (no gradient)."""
    if not info.enabled:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable Python objects; trusted peers only)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
