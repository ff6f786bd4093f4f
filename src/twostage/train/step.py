"""The training step: one optimizer update on a batch (autocast, loss scaling, clipping, EMA),
the learning-rate schedule, and the validation pass that shares its autocast."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from twostage.config import OptimConfig, TrainConfig
from twostage.ops.imageio import image_to_tensor
from twostage.ops.metrics import psnr, ssim
from twostage.train.cuda_graph import StepGraph, step_graph
from twostage.train.dist import Dist


def learning_rate(optim: OptimConfig, iteration: int) -> float:
    """Learning rate of update `iteration` (1-based): lr × gamma^⌊(iteration − 1) / lr_step⌋,
    so the paper's updates 1…50k use 1e-4, 50001…100k 5e-5 and 100001…150k 2.5e-5."""
    return optim.lr * optim.lr_gamma ** ((iteration - 1) // optim.lr_step)


def autocast(
    device: torch.device, amp: str, *, cache: bool = True
) -> contextlib.AbstractContextManager:
    """run.amp's autocast (bf16 on CUDA and CPU, fp16 on CUDA); `cache=False` inside a CUDA
    graph capture, whose cast weights must not outlive it."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """BasicSR's `model_ema`: ema = decay · ema + (1 − decay) · weights (frozen tensors copied)."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            if p.requires_grad:
                e.mul_(decay).add_(p, alpha=1 - decay)
            else:
                e.copy_(p)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.copy_(b)


@dataclass
class TrainStep:
    """The trainer's step and everything it updates: `step(it, x, y)` trains `net` on one batch
    at the optimizer's current lr. The trainer calls it every iteration; the benchmarks time it.
    Build it with `make_step`."""

    cfg: TrainConfig
    device: torch.device
    net: nn.Module  # the weights
    model: nn.Module  # what runs the forward pass: `net`, or its DDP or compiled wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: nn.Module | None
    loss_fn: nn.Module
    loss_sum: torch.Tensor  # summed on the device until the next log: no host sync per step
    first_bad: torch.Tensor  # iteration of the first NaN/inf loss (0: none)
    graph: StepGraph | None = None  # run.cuda_graph: the captured step and its static inputs

    def __call__(self, it: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Iteration `it`'s update on input batch `x`, target batch `y` (on the device):
        replayed as a CUDA graph once `enable_graph` captured one, else eager."""
        if self.graph is not None:
            self.graph(it, x, y)
        else:
            self.eager(it, x, y)

    def eager(
        self, it: int | torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, cache: bool = True
    ) -> None:
        """One optimizer step at the optimizer's lr (autocast, scaler, clipping, EMA). Device
        work only, every state tensor updated in place, so a CUDA graph can capture it."""
        o, optimizer, scaler, net = self.cfg.optim, self.optimizer, self.scaler, self.net
        with autocast(self.device, self.cfg.run.amp, cache=cache):
            pred = self.model(x)
        loss = self.loss_fn(pred.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if o.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if o.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
            optimizer.step()
        if self.ema is not None:
            update_ema(self.ema, net, o.ema)
        loss = loss.detach()
        self.loss_sum += loss
        ok = torch.isfinite(loss) | (self.first_bad > 0)
        self.first_bad.copy_(torch.where(ok, self.first_bad, it))

    def enable_graph(self, d: Dist) -> None:
        """run.cuda_graph: replay the step as a CUDA graph where it can be captured (a note
        where it cannot). Call it after loading any optimizer state."""
        self.graph = step_graph(self.cfg, self.device, d, self.optimizer, self.eager)


def make_step(cfg: TrainConfig, net: nn.Module, device: torch.device) -> TrainStep:
    """The trainer's step for `net` (already on `device`), as `train` builds it: fused Adam
    (cfg.optim), an fp16 loss scaler, an EMA copy when optim.ema > 0, the configured loss.
    Eager; `enable_graph(Dist())` turns run.cuda_graph on. The benchmarks time this step."""
    o = cfg.optim
    ema = copy.deepcopy(net).requires_grad_(False).eval() if o.ema > 0 else None
    # fused: one kernel for all parameters instead of several per tensor (3 % on CPU, ~8 ms
    # of a 39 ms H200 step); the same update rule.
    optimizer = torch.optim.Adam(net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, fused=True)
    scaler = torch.amp.GradScaler("cuda") if cfg.run.amp == "fp16" else None
    loss_fn = nn.L1Loss() if o.loss == "l1" else nn.MSELoss()
    return TrainStep(
        cfg,
        device,
        net,
        net,
        optimizer,
        scaler,
        ema,
        loss_fn,
        loss_sum=torch.zeros((), device=device),
        first_bad=torch.zeros((), dtype=torch.int64, device=device),
    )


@torch.no_grad()
def validate(
    model: nn.Module,
    pairs: Sequence[Any],
    *,
    device: torch.device,
    scale: int,
    amp: str = "none",
    channels_last: bool = False,
    keep_images: int = 0,
) -> tuple[float, float, list[tuple[str, np.ndarray]]]:
    """Mean PSNR/SSIM (RGB, crop = scale, docs/design.md) of `model` on whole images, and the
    first `keep_images` outputs (H×W×3 float) for TensorBoard."""
    was_training = model.training
    model.eval()
    psnrs, ssims, images = [], [], []
    try:
        for pair in pairs:
            x = image_to_tensor(pair.input).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                y = model(x)
            out = y.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            psnrs.append(psnr(out, pair.target, crop_border=scale))
            ssims.append(ssim(out, pair.target, crop_border=scale))
            if len(images) < keep_images:
                images.append((pair.name, out))
    finally:
        model.train(was_training)
    return float(np.mean(psnrs)), float(np.mean(ssims)), images
