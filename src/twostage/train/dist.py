"""Distributed training: the process group's shape as torchrun describes it, and its barrier."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from twostage.errors import UserError
from twostage.models.inference import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the group (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a single process without)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)"
        ) from None
    return Dist(rank=rank, world=world, local_rank=local) if world > 1 else Dist()


def barrier(d: Dist, device: torch.device) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if d.enabled:
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index or 0])
        else:
            dist.barrier()


def device_for(name: str, d: Dist) -> torch.device:
    """run.device resolved for this process: under DDP each rank takes its LOCAL_RANK's GPU."""
    device = resolve_device(name)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank if d.enabled else (device.index or 0))
    return device
