"""The training batches through `torch.utils.data.DataLoader` (data.num_workers processes).

A map-style dataset indexed by the iteration number: batch `it` is a function of `it` alone
(its own seed), so any worker count, and a resume, yields the same batches in the same order.
With 0 workers the batches are drawn in the training process, exactly as a plain loop would.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from twostage.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor]
PREFETCH = 2  # batches each worker draws ahead of the step (torch's default)


class _Failed:
    """A UserError raised in a worker, sent back as a value: the training process raises it
    again as the one-line error it is (DataLoader would wrap it in the worker's traceback)."""

    def __init__(self, error: UserError) -> None:
        self.error = error


class IterationBatches(Dataset):
    """Item `it` is batch `it`: `draw(it)`, a module-level function (picklable for workers)."""

    def __init__(self, draw: Callable[[int], Batch], iterations: int) -> None:
        self.draw, self.iterations = draw, iterations

    def __len__(self) -> int:
        return self.iterations + 1  # indices 1..iterations; 0 is never asked for

    def __getitem__(self, it: int) -> Batch | _Failed:
        if get_worker_info() is None:
            return self.draw(it)
        try:
            return self.draw(it)
        except UserError as exc:
            return _Failed(exc)


def _as_drawn(item: Batch | _Failed) -> Batch | _Failed:
    """No collation: an item is already a whole batch."""
    return item


def _worker_init(worker_id: int) -> None:
    """One torch thread per worker (the step owns the cores); Ctrl-C and SIGTERM are the
    training process's to handle: it stops at the end of the iteration and shuts the workers
    down, so a worker killed by the signal cannot break the batch the last step waits for."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def batches(
    draw: Callable[[int], Batch],
    *,
    first: int,
    last: int,
    num_workers: int,
    pin_memory: bool = False,
) -> Iterator[Iterator[tuple[int, Batch]]]:
    """(it, batch) for it = first..last, drawn by `num_workers` processes (0: in this one).

    The workers are shut down on leaving the block, whether by the end, a stop request,
    Ctrl-C or an error. A worker's UserError is raised here as itself.
    """
    iterations = range(first, last + 1)
    num_workers = num_workers if len(iterations) else 0  # nothing to draw: start no process
    loader = DataLoader(
        IterationBatches(draw, last),
        batch_size=None,
        sampler=iterations,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=PREFETCH if num_workers else None,
        pin_memory=pin_memory,
        collate_fn=_as_drawn,
        # its own generator: making the iterator draws a base seed from it, not from torch's
        # global RNG, which the run's checkpoints save and restore
        generator=torch.Generator().manual_seed(0),
    )
    stream = iter(loader)

    def pairs() -> Iterator[tuple[int, Batch]]:
        for it, item in zip(iterations, stream, strict=True):
            if isinstance(item, _Failed):
                raise item.error
            yield it, item

    try:
        yield pairs()
    finally:
        shutdown = getattr(stream, "_shutdown_workers", None)
        if shutdown is not None:  # now, not whenever the iterator is garbage-collected
            shutdown()
