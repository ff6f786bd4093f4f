"""Train one network (input domain → target domain at the model's scale) from a `TrainConfig`.

The loop follows BasicSR/EDSR practice: random LR patches with flips and 90° rotations, Adam,
a step schedule, L1, whole-image validation (PSNR/SSIM on RGB, crop = scale).

Run folder (DESIGN.md §3):
  config.yaml        the full config (reproduces the run)
  checkpoints/       iter_XXXXXXXX/{model.safetensors, state.pt}, latest.txt, best.txt
  metrics.csv        iteration, loss, lr, val_psnr, val_ssim, seconds
  events.out.tfevents.*  TensorBoard: loss, lr, val PSNR/SSIM, a few validation outputs
  model.safetensors  the final weights (the EMA weights when optim.ema > 0), with metadata

Exact resume: batch i is drawn from `np.random.default_rng([seed, i, rank])`, the schedule is a
function of the iteration, and a checkpoint holds weights, optimizer, EMA, scaler and every RNG
state; on CPU a killed-and-resumed run ends bit-identical to an uninterrupted one.
A checkpoint folder is written under a temporary name and renamed into place; `latest.txt` (a
one-line pointer, written atomically) moves only afterwards, so a kill at any moment leaves the
previous checkpoint loadable.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from twostage import __version__
from twostage.config import (
    ConfigError,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    save_config,
)
from twostage.data.datasets import PairSet, open_dataset, random_batch
from twostage.errors import UserError
from twostage.models import ModelSpec, build_model, preset_spec
from twostage.models.checkpoints import load_model, read_state, save_model
from twostage.models.inference import resolve_device
from twostage.ops.files import atomic_path, write_text_atomic
from twostage.ops.metrics import psnr, ssim
from twostage.ops.progress import bar as progress_bar
from twostage.ops.progress import on_terminal, stage_line

STATE_FORMAT = "twostage-train-state"
STATE_VERSION = 1
METRIC_FIELDS = ("iteration", "loss", "lr", "val_psnr", "val_ssim", "seconds")
# On resume these may differ from the run's config.yaml; anything else would change the result.
RESUMABLE_CHANGES = ("name", "optim.iterations", "log.", "run.device", "run.threads", "run.compile")


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
# schedule


def learning_rate(optim: OptimConfig, iteration: int) -> float:
    """Learning rate of update `iteration` (1-based): lr × gamma^⌊(iteration − 1) / lr_step⌋,
    so the paper's updates 1…50k use 1e-4, 50001…100k 5e-5 and 100001…150k 2.5e-5."""
    return optim.lr * optim.lr_gamma ** ((iteration - 1) // optim.lr_step)


# ---------------------------------------------------------------------------------------------
# RNG state (as tensors, so state.pt loads with torch.load(weights_only=True))


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python global RNG states."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": torch.tensor(int(np_pos)),
        "numpy_gauss": torch.tensor([float(np_has_gauss), float(np_gauss)], dtype=torch.float64),
        "python": torch.tensor(py_internal, dtype=torch.int64),
        "python_version": torch.tensor(py_version),
        "python_gauss": torch.tensor(
            math.nan if py_gauss is None else py_gauss, dtype=torch.float64
        ),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    has_gauss, gauss = state["numpy_gauss"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(has_gauss),
            gauss,
        )
    )
    py_gauss = float(state["python_gauss"])
    random.setstate(
        (
            int(state["python_version"]),
            tuple(state["python"].tolist()),
            None if math.isnan(py_gauss) else py_gauss,
        )
    )


# ---------------------------------------------------------------------------------------------
# checkpoints


def _checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}"


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """The complete checkpoint folders under `root`, oldest first."""
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("iter_") and p.name[5:].isdigit():
                found.append((int(p.name[5:]), p))
    return sorted(found)


def read_pointer(root: Path, which: str) -> Path | None:
    """The checkpoint folder that `root/<which>.txt` ("latest" or "best") names, if it exists."""
    pointer = root / f"{which}.txt"
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    folder = root / name
    return folder if name and (folder / "state.pt").is_file() else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The `latest` checkpoint folder of a run, or None."""
    return read_pointer(Path(run_dir) / "checkpoints", "latest")


def load_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training state of a checkpoint folder. Never runs code: safetensors and
    `torch.load(weights_only=True)`."""
    folder = Path(folder)
    weights, _ = read_state(folder / "model.safetensors")
    path = folder / "state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {folder} is incomplete: {path.name} is missing") from None
    except Exception as exc:  # a truncated or foreign file: pickle, zip and torch errors
        raise UserError(f"cannot read training state {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a twostage training state")
    return weights, state


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_checkpoint(
    root: Path,
    iteration: int,
    *,
    net: nn.Module,
    state: dict[str, Any],
    best: bool = False,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint folder `root/iter_<iteration>` atomically, point `latest.txt` (and
    `best.txt` when `best`) at it, and delete all but the last `keep_last`, latest and best.

    The folder is filled under a temporary name, fsynced and renamed into place; the pointer
    moves only afterwards. Any failure leaves the previous checkpoints and pointers as they were.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / _checkpoint_name(iteration)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        save_model(tmp / "model.safetensors", net, metadata={"iteration": str(iteration)})
        with atomic_path(tmp / "state.pt") as part:
            torch.save(state, part)
        _fsync_dir(tmp)
        if final.exists():  # left by a run killed before it moved the pointer; never `latest`
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(root / "latest.txt", final.name + "\n")
    if best:
        write_text_atomic(root / "best.txt", final.name + "\n")
    keep = {p.name for _, p in checkpoint_dirs(root)[-keep_last:]} | {final.name}
    best_dir = read_pointer(root, "best")
    if best_dir is not None:
        keep.add(best_dir.name)
    for _, p in checkpoint_dirs(root):
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
    return final


def _clean_after(root: Path, iteration: int, best_iteration: int | None) -> None:
    """On resume: drop temporary folders and checkpoints newer than the one resumed from (a
    killed run may have written them without moving `latest`), and re-point `best`."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(".iter_") and p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True)
    for it, p in checkpoint_dirs(root):
        if it > iteration:
            shutil.rmtree(p, ignore_errors=True)
    best = root / _checkpoint_name(best_iteration) if best_iteration else None
    if best is not None and (best / "state.pt").is_file():
        write_text_atomic(root / "best.txt", best.name + "\n")
    else:
        (root / "best.txt").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# metrics.csv


def _read_metrics(path: Path, up_to: int) -> list[dict[str, str]]:
    """Rows of an existing metrics.csv up to iteration `up_to` (later ones are being redone)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            if int(row["iteration"]) <= up_to:
                rows.append({k: row.get(k) or "" for k in METRIC_FIELDS})
    return rows


def _write_metrics(path: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# pieces of the loop


def _image_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 or float [0, 1] → 1×3×H×W float32."""
    arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


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
    """Mean PSNR/SSIM (RGB, crop = scale, DESIGN §4) of `model` on whole images, and the first
    `keep_images` outputs (H×W×3 float) for TensorBoard."""
    was_training = model.training
    model.eval()
    psnrs, ssims, images = [], [], []
    try:
        for pair in pairs:
            x = _image_tensor(pair.input).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                y = model(x)
            out = y.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            psnrs.append(psnr(out, pair.target, crop_border=scale))
            ssims.append(ssim(out, pair.target, crop_border=scale))
            if len(images) < keep_images:
                images.append((pair.name, out))
    finally:
        model.train(was_training)
    return float(np.mean(psnrs)), float(np.mean(ssims)), images


def _update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """BasicSR's `model_ema`: ema = decay · ema + (1 − decay) · weights (frozen tensors copied)."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            if p.requires_grad:
                e.mul_(decay).add_(p, alpha=1 - decay)
            else:
                e.copy_(p)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.copy_(b)


class _StopRequest:
    """Set by SIGINT/SIGTERM; the loop saves a checkpoint at the end of the iteration."""

    signum: int | None = None


@contextlib.contextmanager
def _catch_interrupts() -> Iterator[_StopRequest]:
    """Turn the first Ctrl-C (or SIGTERM) into a request to stop cleanly; a second one
    interrupts at once (the previous handlers come back after the first)."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        stop.signum = signum
        signal.signal(signum, previous[signum])

    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        previous[sig] = old if old is not None else signal.SIG_DFL
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------
# distributed


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a single process without)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)"
        ) from None
    return _Dist(rank=rank, world=world, local_rank=local) if world > 1 else _Dist()


def _barrier(d: _Dist, device: torch.device) -> None:
    if d.enabled:
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index or 0])
        else:
            dist.barrier()


def _device_for(name: str, d: _Dist) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank if d.enabled else (device.index or 0))
    return device


# ---------------------------------------------------------------------------------------------
# the entry points


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


def train(
    cfg: TrainConfig,
    *,
    out: str | Path,
    resume: bool = False,
    train_set: PairSet | None = None,
    val_set: PairSet | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train `cfg.model` on `train_set` (default: `cfg.data.train`), validating on `val_set`
    (default: `cfg.data.val`), into run folder `out`. Under torchrun (WORLD_SIZE > 1) every
    process calls this; they form a DDP group (NCCL on GPU, gloo on CPU), each draws its own
    batches, and only rank 0 logs and writes files.

    Raises UserError for a bad config, data or run folder, `TrainingDiverged` on a NaN/inf loss,
    and KeyboardInterrupt after saving a checkpoint when interrupted (Ctrl-C, SIGTERM).
    """
    d = _dist_from_env()
    owns_group = False
    device = _device_for(cfg.run.device, d)
    if d.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns_group = True
    try:
        return _train(
            cfg,
            out=Path(out),
            resume=resume,
            train_set=train_set,
            val_set=val_set,
            quiet=quiet,
            d=d,
            device=device,
        )
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def train_from_file(
    config: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    out: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """`twostage train CONFIG.yaml [--set k=v]... [--resume] [--out DIR] [--device D]`.
    The run folder defaults to runs/<name> (the config's name, else its file stem).
    Returns the path of the trained model file."""
    cfg = apply_overrides(load_config(config), list(overrides))
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    if out is None:
        out = Path("runs") / (cfg.name or Path(config).stem)
    return train(cfg, out=Path(out), resume=resume, quiet=quiet).model_path


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for k, v in data.items():
            flat.update(_flat(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: data}


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, path: Path) -> None:
    a, b = _flat(config_to_dict(saved)), _flat(config_to_dict(cfg))
    changed = sorted(
        k
        for k in a.keys() | b.keys()
        if a.get(k) != b.get(k)
        and not any(k == c or (c.endswith(".") and k.startswith(c)) for c in RESUMABLE_CHANGES)
    )
    if changed:
        raise UserError(
            f"cannot resume: the config differs from {path} in {', '.join(changed)} "
            f"(only {', '.join(RESUMABLE_CHANGES)} may change)"
        )


def _prepare_run_dir(cfg: TrainConfig, out: Path, resume: bool, d: _Dist) -> Path | None:
    """Check the run folder for a fresh run or a resume; rank 0 writes config.yaml.
    Returns the checkpoint to resume from."""
    latest = latest_checkpoint(out)
    if resume and latest is None:
        raise UserError(
            f"cannot resume: no checkpoint in {out / 'checkpoints'} (latest.txt missing)"
        )
    if not resume and latest is not None:
        raise UserError(
            f"{out} already holds a training run; pass --resume to continue it or "
            "choose another --out"
        )
    saved_path = out / "config.yaml"
    if resume and saved_path.is_file():
        try:
            saved = load_config(saved_path)
        except ConfigError:
            saved = None  # an older or edited file: the checkpoint still decides
        if saved is not None:
            _check_resumable(saved, cfg, saved_path)
    if d.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, saved_path)
        except OSError as exc:
            raise UserError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None
    return latest


@dataclass
class _Loop:
    """What the training loop carries from one iteration to the next (module docstring)."""

    cfg: TrainConfig
    out: Path
    d: _Dist
    device: torch.device
    train_set: PairSet
    val_set: PairSet | None
    net: nn.Module
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: nn.Module | None
    loss_fn: nn.Module
    start: int = 0
    best_psnr: float = -math.inf
    best_iteration: int = 0
    elapsed_before: float = 0.0
    rows: list[dict[str, str]] = field(default_factory=list)
    writer: Any = None
    loss_sum: torch.Tensor | None = None
    loss_count: int = 0
    first_bad: torch.Tensor | None = None  # iteration of the first NaN/inf loss (0: none)
    last_loss: float | None = None
    last_psnr: float | None = None
    last_ssim: float | None = None
    last_saved: int = 0
    t0: float = field(default_factory=time.monotonic)

    def seconds(self) -> float:
        return self.elapsed_before + time.monotonic() - self.t0


def _set_up_run(cfg: TrainConfig, device: torch.device) -> None:
    rn = cfg.run
    if rn.amp != "none" and device.type != "cuda":
        raise ConfigError(
            f"run.amp={rn.amp} needs a CUDA device (the device is {device.type}); set run.amp=none"
        )
    if rn.threads > 0:
        torch.set_num_threads(rn.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not rn.deterministic
        torch.backends.cudnn.deterministic = rn.deterministic


def _data(
    cfg: TrainConfig, train_set: PairSet | None, val_set: PairSet | None, d: _Dist
) -> tuple[PairSet, PairSet | None]:
    """The training and validation pairs (from cfg.data unless given), checked against scale."""
    if train_set is None:
        train_set = open_dataset(cfg.data.train)
    if val_set is None and cfg.data.val is not None and d.main:
        val_set = open_dataset(cfg.data.val)
    for role, pairs in (("training", train_set), ("validation", val_set)):
        if pairs is not None and pairs.scale != cfg.model.scale:
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
    if init is not None and fresh:
        try:
            net.load_state_dict(init.state_dict())
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(
                f"model.init {cfg.model.init}: its weights do not fit "
                f"{cfg.model.preset} ×{cfg.model.scale}: {first}"
            ) from None
    net.to(device)
    if rn.channels_last:  # NHWC convs: faster with cuDNN and with oneDNN on CPU (BENCHMARKS.md)
        net.to(memory_format=torch.channels_last)
    return net


def _resume(loop: _Loop, latest: Path) -> None:
    """Weights, optimizer, EMA, scaler, RNG and bookkeeping from the latest checkpoint."""
    o, d = loop.cfg.optim, loop.d
    weights, state = load_checkpoint(latest)
    start = int(state["iteration"])
    if start > o.iterations:
        raise UserError(
            f"cannot resume: {latest} is at iteration {start}, past optim.iterations={o.iterations}"
        )
    if int(state.get("world_size", 1)) != d.world:
        raise UserError(
            f"cannot resume: {latest} was written by {state.get('world_size')} "
            f"process(es), this run has {d.world} (the batches would differ)"
        )
    loop.net.load_state_dict(weights)
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.ema is not None:
        if not state.get("params_ema"):
            raise UserError(f"cannot resume: {latest} holds no EMA weights (optim.ema)")
        loop.ema.load_state_dict(state["params_ema"])
    if loop.scaler is not None and state.get("scaler"):
        loop.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    loop.start = loop.last_saved = start
    loop.best_psnr = float(state["best_psnr"])
    loop.best_iteration = int(state["best_iteration"])
    loop.elapsed_before = float(state["elapsed"])
    if d.main:
        _clean_after(loop.out / "checkpoints", start, loop.best_iteration or None)


def _set_up(
    cfg: TrainConfig,
    *,
    out: Path,
    resume: bool,
    train_set: PairSet | None,
    val_set: PairSet | None,
    d: _Dist,
    device: torch.device,
) -> _Loop:
    """Run folder, data, network, optimizer, and the state of a resumed run."""
    o, rn = cfg.optim, cfg.run
    _set_up_run(cfg, device)
    latest = _prepare_run_dir(cfg, out, resume, d)
    train_set, val_set = _data(cfg, train_set, val_set, d)
    net = _build_net(cfg, device, fresh=latest is None)
    ema = copy.deepcopy(net).requires_grad_(False).eval() if o.ema > 0 else None
    # fused: one kernel for all parameters instead of several per tensor (3 % on CPU, ~8 ms
    # of a 39 ms H200 step); the same update rule.
    optimizer = torch.optim.Adam(net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, fused=True)
    scaler = torch.amp.GradScaler("cuda") if rn.amp == "fp16" else None
    loss_fn = nn.L1Loss() if o.loss == "l1" else nn.MSELoss()
    loop = _Loop(cfg, out, d, device, train_set, val_set, net, net, optimizer, scaler, ema, loss_fn)
    if latest is not None:
        _resume(loop, latest)
    _barrier(d, device)
    if d.enabled:
        loop.step_model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if rn.compile:
        loop.step_model = torch.compile(loop.step_model)
    loop.rows = _read_metrics(out / "metrics.csv", loop.start) if d.main else []
    if d.main and cfg.log.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        purge = loop.start + 1 if loop.start else None
        loop.writer = SummaryWriter(log_dir=str(out), purge_step=purge)
    loop.loss_sum = torch.zeros((), device=device)
    loop.first_bad = torch.zeros((), dtype=torch.int64, device=device)
    loop.t0 = time.monotonic()
    return loop


def _save(loop: _Loop, iteration: int, *, best: bool = False) -> None:
    """An atomic checkpoint of everything a resume needs."""
    o = loop.cfg.optim
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "iteration": iteration,
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": {
            "lr": learning_rate(o, iteration),
            "lr_step": o.lr_step,
            "lr_gamma": o.lr_gamma,
        },
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else {},
        "params_ema": loop.ema.state_dict() if loop.ema is not None else {},
        "rng": rng_state(),
        "best_psnr": loop.best_psnr,
        "best_iteration": loop.best_iteration,
        "elapsed": loop.seconds(),
        "world_size": loop.d.world,
    }
    root = loop.out / "checkpoints"
    try:
        write_checkpoint(
            root, iteration, net=loop.net, state=state, best=best, keep_last=loop.cfg.log.keep_last
        )
    except OSError as exc:
        previous = latest_checkpoint(loop.out)
        keep = f"; {previous} is intact" if previous is not None else ""
        raise UserError(
            f"cannot write a checkpoint in {root}: {exc.strerror or exc}{keep}"
        ) from None
    loop.last_saved = iteration


def _check_finite(loop: _Loop, *, collective: bool) -> None:
    """Stop with TrainingDiverged if any loss so far was NaN/inf (on any rank if collective)."""
    assert loop.first_bad is not None
    bad = loop.first_bad.clone()
    if collective and loop.d.enabled:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if int(bad) > 0:
        previous = latest_checkpoint(loop.out)
        keep = (
            f"the last good checkpoint is {previous}"
            if previous is not None
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"the loss became NaN or infinite at iteration {int(bad)}; "
            f"stopped, {keep} (try a lower optim.lr or optim.grad_clip)"
        )


def _batch(loop: _Loop, it: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `it`: drawn from its own seed, so a resumed run sees the same batches."""
    cfg = loop.cfg
    rng = np.random.default_rng([cfg.run.seed, it, loop.d.rank])
    x, y = random_batch(
        loop.train_set,
        batch_size=cfg.data.batch_size,
        patch_size=cfg.data.patch_size,
        rng=rng,
        augment=cfg.data.augment,
    )
    x = x.to(loop.device, non_blocking=True)
    y = y.to(loop.device, non_blocking=True)
    if cfg.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _step(loop: _Loop, it: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimizer step at iteration `it`'s lr (autocast, scaler, clipping, EMA)."""
    o, optimizer, scaler, net = loop.cfg.optim, loop.optimizer, loop.scaler, loop.net
    with _autocast(loop.device, loop.cfg.run.amp):
        pred = loop.step_model(x)
    loss = loop.loss_fn(pred.float(), y)
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
    if loop.ema is not None:
        _update_ema(loop.ema, net, o.ema)
    # Accumulate on the device: no host sync until the next log/validation/save.
    loss = loss.detach()
    loop.loss_sum += loss
    loop.loss_count += 1
    bad = torch.isfinite(loss) | (loop.first_bad > 0)
    loop.first_bad = torch.where(bad, loop.first_bad, it)


def _log_loss(loop: _Loop, it: int, lr: float, row: dict[str, str], bar: tqdm) -> None:
    assert loop.loss_sum is not None
    total = loop.loss_sum.clone()
    if loop.d.enabled:
        dist.all_reduce(total)
    loop.last_loss = float(total) / (loop.loss_count * loop.d.world)
    loop.loss_sum.zero_()
    loop.loss_count = 0
    row["loss"] = f"{loop.last_loss:.6g}"
    bar.set_postfix(loss=f"{loop.last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
    if loop.writer is not None:
        loop.writer.add_scalar("train/loss", loop.last_loss, it)
        loop.writer.add_scalar("train/lr", lr, it)


def _validate(loop: _Loop, it: int, row: dict[str, str]) -> None:
    """PSNR/SSIM on the validation set (EMA weights if on); a new best is checkpointed."""
    assert loop.val_set is not None
    rn, writer = loop.cfg.run, loop.writer
    loop.last_psnr, loop.last_ssim, images = validate(
        loop.ema if loop.ema is not None else loop.net,
        loop.val_set,
        device=loop.device,
        scale=loop.cfg.model.scale,
        amp=rn.amp,
        channels_last=rn.channels_last,
        keep_images=loop.cfg.log.n_val_images if writer is not None else 0,
    )
    row.update(val_psnr=f"{loop.last_psnr:.4f}", val_ssim=f"{loop.last_ssim:.6f}")
    if writer is not None:
        writer.add_scalar("val/psnr", loop.last_psnr, it)
        writer.add_scalar("val/ssim", loop.last_ssim, it)
        for name, img in images:
            writer.add_image(f"val/{name}", img, it, dataformats="HWC")
    if loop.last_psnr > loop.best_psnr:
        loop.best_psnr, loop.best_iteration = loop.last_psnr, it
        _save(loop, it, best=True)


def _tick(loop: _Loop, it: int, lr: float, stop: _StopRequest, bar: tqdm) -> None:
    """After a step: stop on a signal, else log, validate, checkpoint when due.

    The same on every rank (collectives and barriers must match); only rank 0 holds the
    validation set and writes files.
    """
    lg, d = loop.cfg.log, loop.d
    last = it == loop.cfg.optim.iterations
    log_due = it % lg.log_every == 0 or last
    val_tick = it % lg.val_every == 0 or last
    ckpt_due = it % lg.checkpoint_every == 0 or last
    val_due = val_tick and loop.val_set is not None and d.main
    if stop.signum is not None:
        _check_finite(loop, collective=False)
        if d.main and loop.last_saved != it:
            _save(loop, it)
        raise KeyboardInterrupt
    if not (log_due or val_tick or ckpt_due):
        return
    _check_finite(loop, collective=True)
    row = {k: "" for k in METRIC_FIELDS}
    row.update(iteration=str(it), lr=f"{lr:.6g}")
    if log_due:
        _log_loss(loop, it, lr, row, bar)
    if val_due:
        _validate(loop, it, row)
    if d.main and ckpt_due and loop.last_saved != it:
        _save(loop, it)
    if d.main and (log_due or val_due):
        row["seconds"] = f"{loop.seconds():.3f}"
        loop.rows.append(row)
        _write_metrics(loop.out / "metrics.csv", loop.rows)
        if loop.writer is not None:
            loop.writer.flush()
    if val_tick or ckpt_due:
        _barrier(d, loop.device)


def _finish(loop: _Loop) -> TrainResult:
    """model.safetensors (EMA weights if on) with the config in its metadata; the result."""
    cfg, d = loop.cfg, loop.d
    final = loop.ema if loop.ema is not None else loop.net
    final.eval()
    model_path = loop.out / "model.safetensors"
    if d.main:
        metadata = {
            "name": cfg.name,
            "iterations": str(cfg.optim.iterations),
            "weights": "ema" if loop.ema is not None else "final",
            "twostage_version": __version__,
            "train_config": json.dumps(config_to_dict(cfg)),
        }
        try:
            save_model(model_path, final, metadata=metadata)
        except OSError as exc:
            raise UserError(f"cannot write {model_path}: {exc.strerror or exc}") from None
    _barrier(d, loop.device)
    has_best = loop.best_iteration > 0
    return TrainResult(
        out=loop.out,
        model_path=model_path,
        iterations=cfg.optim.iterations,
        model=final,
        final_loss=loop.last_loss,
        val_psnr=loop.last_psnr,
        val_ssim=loop.last_ssim,
        best_psnr=loop.best_psnr if has_best else None,
        best_iteration=loop.best_iteration if has_best else None,
        seconds=loop.seconds(),
    )


def _train(
    cfg: TrainConfig,
    *,
    out: Path,
    resume: bool,
    train_set: PairSet | None,
    val_set: PairSet | None,
    quiet: bool,
    d: _Dist,
    device: torch.device,
) -> TrainResult:
    """Set up (and resume), then for each step: batch → step → tick; then the model file."""
    loop = _set_up(
        cfg, out=out, resume=resume, train_set=train_set, val_set=val_set, d=d, device=device
    )
    o = cfg.optim
    bar = progress_bar(
        total=o.iterations,
        initial=loop.start,
        quiet=quiet or not d.main,
        desc=cfg.name or "train",
        unit="it",
        dynamic_ncols=True,
    )
    try:
        with _catch_interrupts() as stop:
            loop.net.train()
            for it in range(loop.start + 1, o.iterations + 1):
                lr = learning_rate(o, it)
                for group in loop.optimizer.param_groups:
                    group["lr"] = lr
                x, y = _batch(loop, it)
                _step(loop, it, x, y)
                bar.update(1)
                _tick(loop, it, lr, stop, bar)
    finally:
        bar.close()
        if loop.writer is not None:
            loop.writer.close()
    result = _finish(loop)
    if not (quiet or on_terminal()) and d.main:
        stage_line(f"{cfg.name or 'train'}: {o.iterations} iterations", result.seconds)
    return result
