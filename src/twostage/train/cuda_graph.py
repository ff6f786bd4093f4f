"""run.cuda_graph: the training step captured once as a CUDA graph and replayed, the cure for a
launch-bound step (BENCHMARKS.md, GPU section).

The graph module knows nothing of the trainer: it is given the step as a callable and keeps the
static buffers (inputs and iteration number) that every replay reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from twostage.config import TrainConfig
from twostage.train.dist import Dist

GRAPH_WARMUP = 3  # eager steps before the capture: cuDNN picks algorithms, Adam makes its state


# step(it, x, y, *, cache=True): one optimizer step, device work only, every state tensor
# updated in place; cache=False turns autocast's weight cache off inside the capture.
EagerStep = Callable[..., None]


@dataclass
class StepGraph:
    """`step` captured once as a CUDA graph: static inputs, the iteration number as a device
    tensor, and the replay (None until `GRAPH_WARMUP` eager steps have run)."""

    step: EagerStep
    it: torch.Tensor
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    warm: int = 0
    replay: Callable[[], Any] | None = None

    def __call__(self, it: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """The step through the graph: eager warm-up steps on a side stream (real iterations),
        then one capture (which runs nothing), then a replay per iteration."""
        if self.x is None or self.y is None:
            self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.it.fill_(it)
        if self.replay is None:
            device = self.it.device
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                self.step(self.it, self.x, self.y)
            torch.cuda.current_stream(device).wait_stream(side)
            self.warm += 1
            if self.warm == GRAPH_WARMUP:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.step(self.it, self.x, self.y, cache=False)
                self.replay = graph.replay
            return
        self.replay()


def graph_blocker(cfg: TrainConfig, device: torch.device, d: Dist | None = None) -> str | None:
    """Why run.cuda_graph cannot capture this run's step; None when it can."""
    blockers = (
        (device.type != "cuda", f"CUDA graphs need a CUDA device, not {device.type}"),
        (cfg.run.amp == "fp16", "run.amp=fp16's GradScaler syncs with the host every step"),
        (d is not None and d.enabled, "DDP's all-reduces are not captured"),
        (cfg.run.compile, "run.compile compiles the step instead"),
    )
    return next((why for blocked, why in blockers if blocked), None)


def step_graph(
    cfg: TrainConfig,
    device: torch.device,
    d: Dist,
    optimizer: torch.optim.Optimizer,
    step: EagerStep,
) -> StepGraph | None:
    """A `StepGraph` of `step` when run.cuda_graph is on and works here (a note on CUDA when it
    cannot; on the CPU the switch is silently ignored). Makes `optimizer` graph-safe:
    capturable, its lr a device tensor that `set_lr` refills."""
    if not cfg.run.cuda_graph:
        return None
    why = graph_blocker(cfg, device, d)
    if why is not None:
        if device.type == "cuda" and d.main:
            tqdm.write(f"twostage: note: run.cuda_graph is off: {why}; the step runs eagerly")
        return None
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    return StepGraph(step, it=torch.zeros((), dtype=torch.int64, device=device))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Iteration's lr: assigned, or written into the device tensor a CUDA graph reads."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
