"""The training loop: a `Trainer` sets a run up (run folder, data, network, its step, a resumed
run's state), then for each iteration draws the batch, steps, and ticks (log, validate,
checkpoint when due), and finishes with the model file. `train` locks the run folder and runs it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from twostage import __version__
from twostage.config import ConfigError, TrainConfig, config_to_dict
from twostage.data.datasets import PairSet, fresh_batch, open_dataset, per_patch, random_batch
from twostage.errors import UserError
from twostage.models import ModelSpec, build_model, preset_spec
from twostage.models.checkpoints import load_model, load_weights, read_state, save_model
from twostage.models.inference import native_bf16, resolve_amp
from twostage.ops.files import folder_lock
from twostage.ops.progress import bar as progress_bar
from twostage.ops.progress import on_terminal, stage_line
from twostage.train.cuda_graph import set_lr
from twostage.train.dist import Dist, barrier, device_for, dist_from_env
from twostage.train.loader import Batch, batches
from twostage.train.rundir import prepare_run_dir, write_config
from twostage.train.signals import StopRequest, catch_interrupts
from twostage.train.state import (
    METRIC_FIELDS,
    STATE_FORMAT,
    STATE_VERSION,
    clean_after,
    config_json,
    latest_checkpoint,
    portable_optimizer_state,
    read_metric_rows,
    rng_state,
    set_rng_state,
    write_checkpoint,
    write_metric_rows,
)
from twostage.train.step import learning_rate, make_step, validate


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the run stopped without saving the bad weights."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    out: Path  # the run folder
    model_path: Path  # out/model.safetensors
    iterations: int
    model: nn.Module  # the final network (EMA weights when optim.ema > 0), in eval mode
    final_loss: float | None  # mean training loss over the last logging window
    val_psnr: float | None  # at the last iteration
    val_ssim: float | None
    best_psnr: float | None
    best_iteration: int | None
    seconds: float  # training wall time, all sessions of a resumed run together


# ---------------------------------------------------------------------------------------------
# set-up pieces


def _model_spec(cfg: TrainConfig, init: torch.nn.Module | None) -> ModelSpec:
    """The network to build: the preset at the configured scale, or `init`'s own architecture."""
    if cfg.model.preset is not None:
        return preset_spec(cfg.model.preset, scale=cfg.model.scale)
    spec = getattr(init, "spec", None)
    if init is None or spec is None:
        raise UserError(
            "model.preset is null: model.init must then be an RCAN or EDSR "
            f"checkpoint to take the architecture from (got {cfg.model.init})"
        )
    if spec.scale != cfg.model.scale:
        raise UserError(
            f"model.init {cfg.model.init} is ×{spec.scale}, but model.scale is {cfg.model.scale}"
        )
    return spec


def _set_up_run(cfg: TrainConfig, device: torch.device, d: Dist) -> None:
    """Check run.amp against the device; set threads and cuDNN's choices."""
    rn = cfg.run
    if rn.amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"run.amp=fp16 needs a CUDA device (the device is {device.type}); "
            "set run.amp=bf16 or none"
        )
    if rn.amp == "bf16" and native_bf16(device) is None and d.main:
        tqdm.write(
            f"twostage: note: run.amp=bf16: no native bf16 on this {device.type}; "
            "it is emulated, much slower than fp32"
        )
    if rn.threads > 0:
        torch.set_num_threads(rn.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not rn.deterministic
        torch.backends.cudnn.deterministic = rn.deterministic


def _data(
    cfg: TrainConfig, train_set: PairSet | None, val_set: PairSet | None, d: Dist
) -> tuple[PairSet, PairSet | None]:
    """The training and validation pairs (from cfg.data unless given), checked against scale."""
    if train_set is None:
        train_set = open_dataset(cfg.data.train)
    if val_set is None and cfg.data.val is not None and d.main:
        val_set = open_dataset(cfg.data.val)
    fresh = per_patch(cfg.data.train)  # (target, HR) pairs: HR = target × scale/model.scale
    for role, pairs in (("training", train_set), ("validation", val_set)):
        want = cfg.model.scale
        if fresh and pairs is train_set:
            want = cfg.data.train.scale // cfg.model.scale
        if pairs is not None and pairs.scale != want:
            raise UserError(
                f"model.scale={cfg.model.scale} but the {role} set {pairs.name!r} "
                f"has scale {pairs.scale} (target size = scale × input size)"
            )
    if len(train_set) == 0:
        raise UserError(f"the training set {train_set.name!r} is empty")
    return train_set, val_set


def _build_net(cfg: TrainConfig, device: torch.device, *, fresh: bool) -> nn.Module:
    """The seeded network, initialised from model.init when the run starts afresh."""
    rn = cfg.run
    torch.manual_seed(rn.seed)
    np.random.seed(rn.seed)
    random.seed(rn.seed)
    init = None if cfg.model.init is None else load_model(cfg.model.init, device="cpu")
    net = build_model(_model_spec(cfg, init))
    if init is not None and fresh:  # another architecture: an error saying what the weights are
        load_weights(net, init.state_dict(), source=f"model.init {cfg.model.init}")
    net.to(device)
    if rn.channels_last:  # NHWC convs: faster with cuDNN and with oneDNN on CPU (BENCHMARKS.md)
        net.to(memory_format=torch.channels_last)
    return net


def draw_batch(
    cfg: TrainConfig, train_set: PairSet, rank: int, it: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `it` on the CPU: drawn from its own seed, so a resumed run, or a loader with any
    number of workers, sees the same batches."""
    spec = cfg.data.train
    rng = np.random.default_rng([cfg.run.seed, it, rank])
    batch, patch, augment = cfg.data.batch_size, cfg.data.patch_size, cfg.data.augment
    if per_patch(spec):  # a per-patch family: every sample degraded afresh, seeded by index
        return fresh_batch(
            train_set,
            preset=spec.preset,
            scale=spec.scale,
            batch_size=batch,
            patch_size=patch,
            rng=rng,
            seed=cfg.run.seed,
            iteration=it,
            first_index=rank * batch,
            augment=augment,
        )
    return random_batch(train_set, batch_size=batch, patch_size=patch, rng=rng, augment=augment)


# ---------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """One training run: set up at construction; then `run` repeats batch → `step` → `tick`
    from the first iteration not yet done, and `finish` writes the model file."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        out: Path,
        device: torch.device,
        d: Dist,
        resume: bool = False,
        overwrite: bool = False,
        train_set: PairSet | None = None,
        val_set: PairSet | None = None,
    ) -> None:
        """Run folder, data, network, its step (optimizer, EMA, scaler), the state of a resumed
        run; config.yaml; then the CUDA graph, DDP and torch.compile as configured."""
        self.cfg, self.out, self.d, self.device = cfg, out, d, device
        resumed = prepare_run_dir(cfg, out, resume=resume, overwrite=overwrite, d=d)
        self.train_set, self.val_set = _data(cfg, train_set, val_set, d)
        self.net = _build_net(cfg, device, fresh=resumed is None)
        self.train_step = make_step(cfg, self.net, device)
        self.start = self.last_saved = self.best_iteration = self.loss_count = 0
        self.best_psnr, self.elapsed_before = -math.inf, 0.0
        self.last_loss: float | None = None
        self.last_psnr: float | None = None
        self.last_ssim: float | None = None
        if resumed is not None:
            self._resume(*resumed)
        if d.main:
            write_config(cfg, out)
        self.train_step.enable_graph(d)
        barrier(d, device)
        if d.enabled:
            self.train_step.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.run.compile:
            self.train_step.model = torch.compile(self.train_step.model)
        self.rows = read_metric_rows(out / "metrics.csv", self.start) if d.main else []
        self.writer: Any = None
        if d.main and cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.start + 1 if self.start else None
            self.writer = SummaryWriter(log_dir=str(out), purge_step=purge)
        self.t0 = time.monotonic()

    def _resume(self, latest: Path, state: dict[str, Any]) -> None:
        """Weights, optimizer, EMA, scaler, RNG and bookkeeping from the latest checkpoint."""
        o, d, s = self.cfg.optim, self.d, self.train_step
        weights, _ = read_state(latest / "model.safetensors")
        start = int(state["iteration"])
        if start > o.iterations:
            raise UserError(
                f"cannot resume: {latest} is at iteration {start}, "
                f"past optim.iterations={o.iterations}"
            )
        if int(state.get("world_size", 1)) != d.world:
            raise UserError(
                f"cannot resume: {latest} was written by {state.get('world_size')} "
                f"process(es), this run has {d.world} (the batches would differ)"
            )
        load_weights(self.net, weights, source=str(latest / "model.safetensors"))
        s.optimizer.load_state_dict(state["optimizer"])
        if s.ema is not None:
            if not state.get("params_ema"):
                raise UserError(f"cannot resume: {latest} holds no EMA weights (optim.ema)")
            s.ema.load_state_dict(state["params_ema"])
        if s.scaler is not None and state.get("scaler"):
            s.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        # The loss window open at the checkpoint: the next logged loss averages the same steps
        # as an uninterrupted run's (rank 0's window; other DDP ranks restart theirs).
        s.loss_sum.fill_(float(state.get("loss_sum", 0.0)))
        self.loss_count = int(state.get("loss_count", 0))
        self.start = self.last_saved = start
        self.best_psnr = float(state["best_psnr"])
        self.best_iteration = int(state["best_iteration"])
        self.elapsed_before = float(state["elapsed"])
        if d.main:
            clean_after(self.out / "checkpoints", start, self.best_iteration or None)

    def seconds(self) -> float:
        """Training wall time so far, all sessions of a resumed run together."""
        return self.elapsed_before + time.monotonic() - self.t0

    def batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `it` on the device, as `run` gets it from the loader."""
        return self.to_device(*draw_batch(self.cfg, self.train_set, self.d.rank, it))

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A drawn batch on the training device (the input channels_last if configured)."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def step(self, it: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Iteration `it`'s optimizer step on batch (x, y) at the optimizer's lr: `TrainStep`,
        replayed as a CUDA graph under run.cuda_graph. The benchmarks time this step."""
        self.train_step(it, x, y)

    def tick(self, it: int, lr: float, stop: StopRequest, bar: tqdm) -> None:
        """After a step: stop on a signal, else log, validate, checkpoint when due.

        The same on every rank (collectives and barriers must match); only rank 0 holds the
        validation set and writes files. The metrics row goes to disk before the checkpoint,
        so a kill between the two never loses the row of the iteration a resume starts after.
        """
        lg, d = self.cfg.log, self.d
        last = it == self.cfg.optim.iterations
        log_due = it % lg.log_every == 0 or last
        val_tick = it % lg.val_every == 0 or last
        ckpt_due = it % lg.checkpoint_every == 0 or last
        val_due = val_tick and self.val_set is not None and d.main
        if stop.signum is not None:
            self._check_finite(collective=False)
            if d.main and self.last_saved != it:
                self.save(it)
            raise KeyboardInterrupt
        if not (log_due or val_tick or ckpt_due):
            return
        self._check_finite(collective=True)
        row = {k: "" for k in METRIC_FIELDS}
        row.update(iteration=str(it), lr=f"{lr:.6g}")
        if log_due:
            self._log_loss(it, lr, row, bar)
        best = val_due and self._validate(it, row)
        if d.main and (log_due or val_due):
            row["seconds"] = f"{self.seconds():.3f}"
            self.rows.append(row)
            write_metric_rows(self.out / "metrics.csv", self.rows)
            if self.writer is not None:
                self.writer.flush()
        if d.main and (best or ckpt_due) and self.last_saved != it:
            self.save(it, best=best)
        if val_tick or ckpt_due:
            barrier(d, self.device)

    def _check_finite(self, *, collective: bool) -> None:
        """Stop with TrainingDiverged if any loss so far was NaN/inf (on any rank if
        collective)."""
        bad = self.train_step.first_bad.clone()
        if collective and self.d.enabled:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if int(bad) > 0:
            previous = latest_checkpoint(self.out)
            keep = (
                f"the last good checkpoint is {previous}"
                if previous is not None
                else "no checkpoint was written"
            )
            raise TrainingDiverged(
                f"the loss became NaN or infinite at iteration {int(bad)}; "
                f"stopped, {keep} (try a lower optim.lr or optim.grad_clip)"
            )

    def _log_loss(self, it: int, lr: float, row: dict[str, str], bar: tqdm) -> None:
        """The mean loss since the last log (over every rank) into `row`, the bar, TensorBoard."""
        loss_sum = self.train_step.loss_sum
        total = loss_sum.clone()
        if self.d.enabled:
            dist.all_reduce(total)
        self.last_loss = float(total) / (self.loss_count * self.d.world)
        loss_sum.zero_()
        self.loss_count = 0
        row["loss"] = f"{self.last_loss:.6g}"
        bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", self.last_loss, it)
            self.writer.add_scalar("train/lr", lr, it)

    def _validate(self, it: int, row: dict[str, str]) -> bool:
        """PSNR/SSIM on the validation set (EMA weights if on); True for a new best."""
        assert self.val_set is not None
        rn, writer, ema = self.cfg.run, self.writer, self.train_step.ema
        self.last_psnr, self.last_ssim, images = validate(
            ema if ema is not None else self.net,
            self.val_set,
            device=self.device,
            scale=self.cfg.model.scale,
            amp=rn.amp,
            channels_last=rn.channels_last,
            keep_images=self.cfg.log.n_val_images if writer is not None else 0,
        )
        row.update(val_psnr=f"{self.last_psnr:.4f}", val_ssim=f"{self.last_ssim:.6f}")
        if writer is not None:
            writer.add_scalar("val/psnr", self.last_psnr, it)
            writer.add_scalar("val/ssim", self.last_ssim, it)
            for name, img in images:
                writer.add_image(f"val/{name}", img, it, dataformats="HWC")
        if self.last_psnr <= self.best_psnr:
            return False
        self.best_psnr, self.best_iteration = self.last_psnr, it
        return True

    def save(self, iteration: int, *, best: bool = False) -> None:
        """An atomic checkpoint of everything a resume needs."""
        o, s = self.cfg.optim, self.train_step
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "iteration": iteration,
            "optimizer": portable_optimizer_state(s.optimizer.state_dict()),
            "scheduler": {
                "lr": learning_rate(o, iteration),
                "lr_step": o.lr_step,
                "lr_gamma": o.lr_gamma,
            },
            "scaler": s.scaler.state_dict() if s.scaler is not None else {},
            "params_ema": s.ema.state_dict() if s.ema is not None else {},
            "rng": rng_state(),
            "best_psnr": self.best_psnr,
            "best_iteration": self.best_iteration,
            "elapsed": self.seconds(),
            "world_size": self.d.world,
            "loss_sum": float(s.loss_sum),
            "loss_count": self.loss_count,
            "config": config_json(self.cfg),  # what a resume is checked against
        }
        root, keep_last = self.out / "checkpoints", self.cfg.log.keep_last
        try:
            write_checkpoint(
                root, iteration, net=self.net, state=state, best=best, keep_last=keep_last
            )
        except OSError as exc:
            previous = latest_checkpoint(self.out)
            keep = f"; {previous} is intact" if previous is not None else ""
            raise UserError(
                f"cannot write a checkpoint in {root}: {exc.strerror or exc}{keep}"
            ) from None
        self.last_saved = iteration

    def finish(self) -> TrainResult:
        """model.safetensors (EMA weights if on) with the config in its metadata; the result."""
        cfg, d, ema = self.cfg, self.d, self.train_step.ema
        final = ema if ema is not None else self.net
        final.eval()
        model_path = self.out / "model.safetensors"
        if d.main:
            metadata = {
                "name": cfg.name,
                "iterations": str(cfg.optim.iterations),
                "weights": "ema" if ema is not None else "final",
                "twostage_version": __version__,
                "train_config": json.dumps(config_to_dict(cfg)),
            }
            try:
                save_model(model_path, final, metadata=metadata)
            except OSError as exc:
                raise UserError(f"cannot write {model_path}: {exc.strerror or exc}") from None
        barrier(d, self.device)
        has_best = self.best_iteration > 0
        return TrainResult(
            out=self.out,
            model_path=model_path,
            iterations=cfg.optim.iterations,
            model=final,
            final_loss=self.last_loss,
            val_psnr=self.last_psnr,
            val_ssim=self.last_ssim,
            best_psnr=self.best_psnr if has_best else None,
            best_iteration=self.best_iteration if has_best else None,
            seconds=self.seconds(),
        )

    def loader(self) -> contextlib.AbstractContextManager[Iterator[tuple[int, Batch]]]:
        """The batches of every iteration from the first not yet done, by data.num_workers
        loader processes (their seeds make them the same batches as drawn here)."""
        draw = functools.partial(draw_batch, self.cfg, self.train_set, self.d.rank)
        return batches(
            draw,
            first=self.start + 1,
            last=self.cfg.optim.iterations,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def run(self, *, quiet: bool = False) -> TrainResult:
        """Every step from the first not yet done; then the model file."""
        cfg, d = self.cfg, self.d
        o = cfg.optim
        bar = progress_bar(
            total=o.iterations,
            initial=self.start,
            quiet=quiet or not d.main,
            desc=cfg.name or "train",
            unit="it",
            dynamic_ncols=True,
        )
        try:
            with catch_interrupts() as stop, self.loader() as stream:
                self.net.train()
                for it, drawn in stream:
                    lr = learning_rate(o, it)
                    set_lr(self.train_step.optimizer, lr)
                    x, y = self.to_device(*drawn)
                    self.step(it, x, y)
                    self.loss_count += 1
                    bar.update(1)
                    self.tick(it, lr, stop, bar)
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        result = self.finish()
        if not (quiet or on_terminal()) and d.main:
            stage_line(f"{cfg.name or 'train'}: {o.iterations} iterations", result.seconds)
        return result


# ---------------------------------------------------------------------------------------------
# the entry points


def train(
    cfg: TrainConfig,
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    train_set: PairSet | None = None,
    val_set: PairSet | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train `cfg.model` on `train_set` (default: `cfg.data.train`), validating on `val_set`
    (default: `cfg.data.val`), into run folder `out`. Under torchrun (WORLD_SIZE > 1) every
    process calls this; they form a DDP group (NCCL on GPU, gloo on CPU), each draws its own
    batches, and only rank 0 logs and writes files.

    `out` must be empty or missing, or hold a run of the same config stopped before its first
    checkpoint; `resume` continues the run there; `overwrite` starts afresh in a folder that
    holds other files: config.yaml, metrics.csv and model.safetensors are written over and the
    checkpoints a twostage run wrote there are deleted; nothing else is touched. Rank 0 locks
    `out` (`folder_lock`) for the whole run.

    Raises UserError for a bad config, data or run folder, `TrainingDiverged` on a NaN/inf loss,
    and KeyboardInterrupt after saving a checkpoint when interrupted (Ctrl-C, SIGTERM).
    """
    d = dist_from_env()
    owns_group = False
    device = device_for(cfg.run.device, d)
    # run.amp=auto → bf16 or none for this device; config.yaml records what ran
    cfg = replace(cfg, run=replace(cfg.run, amp=resolve_amp(cfg.run.amp, device)))
    if d.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    try:
        _set_up_run(cfg, device, d)
        with folder_lock(Path(out), "run folder") if d.main else contextlib.nullcontext(out):
            trainer = Trainer(
                cfg,
                out=Path(out),
                device=device,
                d=d,
                resume=resume,
                overwrite=overwrite,
                train_set=train_set,
                val_set=val_set,
            )
            return trainer.run(quiet=quiet)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
