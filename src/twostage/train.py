"""Train one network (input domain → target domain at the model's scale) from a `TrainConfig`.

The loop follows BasicSR/EDSR practice: random LR patches with flips and 90° rotations, Adam,
a step schedule, L1, whole-image validation (PSNR/SSIM on RGB, crop = scale).

Run folder (docs/design.md, "Contracts"):
  config.yaml        the full config (reproduces the run)
  checkpoints/       iter_XXXXXXXX/{model.safetensors, state.pt, twostage-checkpoint.txt},
                     latest.txt, best.txt (the clean-ups delete only folders with the mark)
  twostage.lock      held (flock) while a run trains here; names the holder
  metrics.csv        iteration, loss, lr, val_psnr, val_ssim, seconds
  events.out.tfevents.*  TensorBoard: loss, lr, val PSNR/SSIM, a few validation outputs
  model.safetensors  the final weights (the EMA weights when optim.ema > 0), with metadata

Exact resume: batch i is drawn from `np.random.default_rng([seed, i, rank])`, the schedule is a
function of the iteration, and a checkpoint holds weights, optimizer, EMA, scaler, every RNG
state and the open loss window; on CPU a killed-and-resumed run ends bit-identical to an
uninterrupted one, with the same metrics.csv losses.
A checkpoint folder is written under a temporary name and renamed into place; `latest.txt` (a
one-line pointer, written atomically) moves only afterwards, so a kill at any moment leaves the
previous checkpoint loadable; without `latest.txt` a resume takes the newest complete folder.
The training state stores the run's config: a resume is checked against it, not against the
editable config.yaml. A fresh run refuses a folder it does not own (`train`'s docstring).

Speed: `run.amp=bf16` autocasts on CUDA and on the CPU (`auto`, the cpu profile's: only where
bf16 is native); `run.cuda_graph` (CUDA) captures the whole step once and replays it, a
launch-bound step's cure (BENCHMARKS.md, GPU section).
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
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
from twostage.data.datasets import PairSet, fresh_batch, open_dataset, random_batch
from twostage.errors import UserError
from twostage.models import ModelSpec, build_model, preset_spec
from twostage.models.checkpoints import load_model, load_weights, read_state, save_model
from twostage.models.inference import native_bf16, resolve_amp, resolve_device
from twostage.ops.files import (
    LOCK_NAME,
    atomic_path,
    folder_lock,
    is_temp_name,
    newest_complete_folder,
    read_text_bounded,
    remove_stale_temps,
    temp_path,
    write_text_atomic,
)
from twostage.ops.metrics import psnr, ssim
from twostage.ops.progress import bar as progress_bar
from twostage.ops.progress import on_terminal, stage_line

STATE_FORMAT = "twostage-train-state"
STATE_VERSION = 2  # 2: the state holds the run's config ("config", JSON)
METRIC_FIELDS = ("iteration", "loss", "lr", "val_psnr", "val_ssim", "seconds")
# On resume these may differ from the run's config.yaml; anything else would change the result.
RESUMABLE_CHANGES = (
    "name",
    "optim.iterations",
    "log.",
    "run.device",
    "run.threads",
    "run.compile",
    "run.cuda_graph",
)
CHECKPOINT_NAME = r"iter_(\d{8})"
CHECKPOINT_FILES = ("model.safetensors", "state.pt")
# Written into every checkpoint folder: the clean-ups delete only folders that hold it.
CHECKPOINT_MARK = "twostage-checkpoint.txt"
MARK_TEXT = "written by twostage train; it deletes only checkpoint folders holding this file\n"
# What a run writes at the top of its folder (besides TensorBoard's events.out.tfevents.*).
RUN_FILES = ("config.yaml", "metrics.csv", "model.safetensors", "checkpoints", LOCK_NAME)
POINTERS = ("latest.txt", "best.txt")
GRAPH_WARMUP = 3  # eager steps before the capture: cuDNN picks algorithms, Adam makes its state


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


def _is_ours(folder: Path) -> bool:
    """Whether `folder` is a checkpoint folder this trainer wrote (it holds the mark)."""
    return folder.is_dir() and not folder.is_symlink() and (folder / CHECKPOINT_MARK).is_file()


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """The checkpoint folders under `root` that this trainer wrote (marked), oldest first:
    the only ones its clean-ups delete."""
    found = []
    if root.is_dir():
        for p in root.iterdir():
            match = re.fullmatch(CHECKPOINT_NAME, p.name)
            if match and _is_ours(p):
                found.append((int(match.group(1)), p))
    return sorted(found)


def _foreign_checkpoints(root: Path) -> list[Path]:
    """Folders under `root` named like checkpoints but not written by this trainer (no mark)
    and not empty: a later checkpoint of that name would have to delete them."""
    found = []
    if root.is_dir():
        for p in root.iterdir():
            named = re.fullmatch(CHECKPOINT_NAME, p.name) and not _is_ours(p)
            if named and (p.is_symlink() or not p.is_dir() or any(p.iterdir())):
                found.append(p)
    return sorted(found)


def read_pointer(root: Path, which: str) -> Path | None:
    """The complete checkpoint folder that `root/<which>.txt` ("latest" or "best") names, or
    None (no pointer, or one that names no complete checkpoint)."""
    pointer = root / f"{which}.txt"
    try:
        name = read_text_bounded(pointer, 4096).strip()
    except (OSError, UnicodeDecodeError):
        return None
    folder = root / name
    complete = all((folder / f).is_file() for f in CHECKPOINT_FILES)
    return folder if re.fullmatch(CHECKPOINT_NAME, name) and complete else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The `latest` checkpoint folder of a run, or None."""
    return read_pointer(Path(run_dir) / "checkpoints", "latest")


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, whatever `latest.txt` says."""
    root = Path(run_dir) / "checkpoints"
    return newest_complete_folder(root, pattern=CHECKPOINT_NAME, required=CHECKPOINT_FILES)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run folder holds a run to resume: a `latest.txt` or a complete checkpoint."""
    return (Path(run_dir) / "checkpoints" / "latest.txt").exists() or (
        newest_checkpoint(run_dir) is not None
    )


def resume_point(run_dir: str | Path) -> Path | None:
    """The checkpoint `--resume` continues from: the one `latest.txt` names; without that file
    (a run killed before its first pointer) the newest complete folder; None when there is none.
    A `latest.txt` that names no complete checkpoint is unreadable, not missing: an error."""
    pointer = Path(run_dir) / "checkpoints" / "latest.txt"
    if not pointer.exists():
        return newest_checkpoint(run_dir)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(
            f"cannot resume: {pointer} is unreadable (it names no complete checkpoint folder); "
            "delete it to resume from the newest complete checkpoint"
        )
    return latest


def load_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training state of a checkpoint folder. Never runs code: safetensors and
    `torch.load(weights_only=True)`."""
    folder = Path(folder)
    weights, _ = read_state(folder / "model.safetensors")
    return weights, read_training_state(folder)


def read_training_state(folder: str | Path) -> dict[str, Any]:
    """The training state (state.pt) of a checkpoint folder, read without running code."""
    folder = Path(folder)
    path = folder / "state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {folder} is incomplete: {path.name} is missing") from None
    except Exception as exc:  # a truncated or foreign file: pickle, zip and torch errors
        raise UserError(f"cannot read training state {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a twostage training state")
    return state


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
    if final in _foreign_checkpoints(root):
        raise UserError(f"{final} holds no {CHECKPOINT_MARK}; move it out of the way")
    tmp = temp_path(final, folder=True)  # 0777 less the umask; a killed writer's is stale
    try:
        save_model(tmp / "model.safetensors", net, metadata={"iteration": str(iteration)})
        with atomic_path(tmp / "state.pt") as part:
            torch.save(state, part)
        (tmp / CHECKPOINT_MARK).write_text(MARK_TEXT, encoding="utf-8")
        _fsync_dir(tmp)
        if _is_ours(final):  # left by a run killed before it moved the pointer; never `latest`
            shutil.rmtree(final)
        elif final.is_dir():  # empty (else refused above)
            final.rmdir()
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
    """On resume: drop checkpoints newer than the one resumed from (a killed run may have
    written them without moving `latest`), and re-point `best`."""
    if not root.is_dir():
        return
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
        text = read_text_bounded(path)
    except (OSError, UnicodeDecodeError):
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


def _autocast(
    device: torch.device, amp: str, *, cache: bool = True
) -> contextlib.AbstractContextManager:
    """run.amp's autocast (bf16 on CUDA and CPU, fp16 on CUDA); `cache=False` inside a CUDA
    graph capture, whose cast weights must not outlive it."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


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
    """Mean PSNR/SSIM (RGB, crop = scale, docs/design.md) of `model` on whole images, and the first
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
    d = _dist_from_env()
    owns_group = False
    device = _device_for(cfg.run.device, d)
    # run.amp=auto → bf16 or none for this device; config.yaml records what ran
    cfg = replace(cfg, run=replace(cfg.run, amp=resolve_amp(cfg.run.amp, device)))
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
            overwrite=overwrite,
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
    overwrite: bool = False,
    out: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """`twostage train CONFIG.yaml [--set k=v]... [--resume|--overwrite] [--out DIR] ...`.
    The run folder defaults to runs/<name> (the config's name, else its file stem).
    Returns the path of the trained model file."""
    cfg = apply_overrides(load_config(config), list(overrides))
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    if out is None:
        out = Path("runs") / (cfg.name or Path(config).stem)
    result = train(cfg, out=Path(out), resume=resume, overwrite=overwrite, quiet=quiet)
    return result.model_path


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for k, v in data.items():
            flat.update(_flat(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: data}


def config_json(cfg: TrainConfig) -> str:
    """`cfg` as canonical JSON: what a checkpoint stores and a resume compares against."""
    return json.dumps(config_to_dict(cfg), sort_keys=True)


def _changed_keys(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The dotted keys where `cfg` differs from the plain-data config `saved` in a way that
    would change the result (RESUMABLE_CHANGES may differ)."""
    a, b = _flat(saved), _flat(json.loads(config_json(cfg)))
    return sorted(
        k
        for k in a.keys() | b.keys()
        if a.get(k) != b.get(k)
        and not any(k == c or (c.endswith(".") and k.startswith(c)) for c in RESUMABLE_CHANGES)
    )


def _some(keys: list[str], shown: int = 4) -> str:
    """`keys` for a message: the first `shown`, then how many more."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, checkpoint: Path) -> None:
    """The config the checkpoint was trained with (stored in its state, not the editable
    config.yaml) against the resuming one."""
    try:
        saved = json.loads(state["config"])
        if not isinstance(saved, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"cannot resume from {checkpoint}: its training state records no config (an older "
            f"twostage wrote it); delete {checkpoint.parent} to start afresh"
        ) from None
    changed = _changed_keys(saved, cfg)
    if changed:
        raise UserError(
            f"cannot resume: the config differs from {checkpoint}'s in {_some(changed)} "
            f"(only {', '.join(RESUMABLE_CHANGES)} may change)"
        )


def _saved_config(out: Path) -> TrainConfig | None:
    """The run folder's config.yaml (None when there is none); unreadable: ConfigError."""
    path = out / "config.yaml"
    return load_config(path) if path.exists() or path.is_symlink() else None


def _foreign_entries(out: Path) -> list[str]:
    """What run folder `out` holds that no twostage run writes (its temporaries excepted)."""
    names = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in sorted(out.iterdir()):
            name = entry.name
            ours = name in RUN_FILES or name.startswith("events.out.tfevents.")
            if not (ours or is_temp_name(name)):
                names.append(name)
    root = out / "checkpoints"
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        names.append("checkpoints")
    elif root.is_dir():
        for entry in sorted(root.iterdir()):
            name = entry.name
            if re.fullmatch(CHECKPOINT_NAME, name):
                if entry in _foreign_checkpoints(root):
                    names.append(f"checkpoints/{name}")
            elif not (name in POINTERS or is_temp_name(name)):
                names.append(f"checkpoints/{name}")
    return names


def _check_fresh_folder(cfg: TrainConfig, out: Path) -> None:
    """A fresh run writes only into an empty folder or one that a run of the same config left
    before its first checkpoint; anything else needs --resume or --overwrite."""
    if has_checkpoint(out):
        raise UserError(
            f"{out} already holds a training run; pass --resume to continue it or --overwrite "
            "to start afresh, or choose another --out"
        )
    foreign = _foreign_entries(out)
    if foreign:
        more = ", …" if len(foreign) > 3 else ""
        raise UserError(
            f"run folder {out} holds files twostage train did not write "
            f"({', '.join(foreign[:3])}{more}); choose another --out, or pass --overwrite"
        )
    if (out / "model.safetensors").exists():
        raise UserError(
            f"{out} holds a finished model.safetensors; choose another --out, or pass --overwrite"
        )
    try:
        saved = _saved_config(out)
    except ConfigError as exc:
        raise UserError(
            f"{out} holds a config.yaml that is not a twostage config ({exc}); choose another "
            "--out, or pass --overwrite"
        ) from None
    changed = [] if saved is None else _changed_keys(config_to_dict(saved), cfg)
    if changed:
        raise UserError(
            f"{out} holds a run of another config ({_some(changed)} differ); choose "
            "another --out, or pass --overwrite"
        )


def _clear_checkpoints(root: Path) -> None:
    """--overwrite: delete the checkpoints and pointers an earlier run wrote (marked only)."""
    for _, p in checkpoint_dirs(root):
        shutil.rmtree(p)
    for name in POINTERS:
        (root / name).unlink(missing_ok=True)


def _prepare_run_dir(
    cfg: TrainConfig, out: Path, *, resume: bool, overwrite: bool, d: _Dist
) -> tuple[Path, dict[str, Any]] | None:
    """Check the run folder for a fresh run or a resume and (rank 0) delete the temporary
    files of killed writers. Returns the checkpoint to resume from and its training state
    (None: start afresh)."""
    if d.main:
        remove_stale_temps(out)
        remove_stale_temps(out / "checkpoints")
    foreign = _foreign_checkpoints(out / "checkpoints")
    if foreign:
        raise UserError(
            f"{foreign[0]} holds no {CHECKPOINT_MARK} (another program's folder, or an older "
            "twostage's): a later checkpoint would replace it; move it out of the way"
        )
    latest = resume_point(out) if resume else None
    if resume and d.main and not (out / "checkpoints" / "latest.txt").exists():
        found = f"resuming from {latest}" if latest else "starting from scratch"
        tqdm.write(f"twostage: note: no checkpoint pointer in {out / 'checkpoints'}; {found}")
    if latest is not None:
        try:
            _saved_config(out)  # unreadable: an error, never a skipped check
        except ConfigError as exc:
            raise UserError(f"cannot resume: {exc} (fix it, or delete it)") from None
        state = read_training_state(latest)
        _check_resumable(state, cfg, latest)
        return latest, state
    if overwrite:
        if d.main:
            _clear_checkpoints(out / "checkpoints")
    else:
        _check_fresh_folder(cfg, out)
    return None


def _write_config(cfg: TrainConfig, out: Path) -> None:
    """The run's config.yaml, written once every check has passed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    except OSError as exc:
        raise UserError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None


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
    graph: _StepGraph | None = None  # run.cuda_graph: the captured step and its static inputs
    t0: float = field(default_factory=time.monotonic)

    def seconds(self) -> float:
        return self.elapsed_before + time.monotonic() - self.t0


def _set_up_run(cfg: TrainConfig, device: torch.device, d: _Dist) -> None:
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
    cfg: TrainConfig, train_set: PairSet | None, val_set: PairSet | None, d: _Dist
) -> tuple[PairSet, PairSet | None]:
    """The training and validation pairs (from cfg.data unless given), checked against scale."""
    if train_set is None:
        train_set = open_dataset(cfg.data.train)
    if val_set is None and cfg.data.val is not None and d.main:
        val_set = open_dataset(cfg.data.val)
    per_patch = cfg.data.train.per_patch  # (target, HR) pairs: HR = target × scale/model.scale
    for role, pairs in (("training", train_set), ("validation", val_set)):
        want = cfg.model.scale
        if per_patch and pairs is train_set:
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


def _resume(loop: _Loop, latest: Path, state: dict[str, Any]) -> None:
    """Weights, optimizer, EMA, scaler, RNG and bookkeeping from the latest checkpoint."""
    o, d = loop.cfg.optim, loop.d
    weights, _ = read_state(latest / "model.safetensors")
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
    load_weights(loop.net, weights, source=str(latest / "model.safetensors"))
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.ema is not None:
        if not state.get("params_ema"):
            raise UserError(f"cannot resume: {latest} holds no EMA weights (optim.ema)")
        loop.ema.load_state_dict(state["params_ema"])
    if loop.scaler is not None and state.get("scaler"):
        loop.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    # The loss window open at the checkpoint: the next logged loss averages the same steps
    # as an uninterrupted run's (rank 0's window; other DDP ranks restart theirs).
    assert loop.loss_sum is not None
    loop.loss_sum.fill_(float(state.get("loss_sum", 0.0)))
    loop.loss_count = int(state.get("loss_count", 0))
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
    overwrite: bool,
    train_set: PairSet | None,
    val_set: PairSet | None,
    d: _Dist,
    device: torch.device,
) -> _Loop:
    """Run folder, data, network, optimizer, and the state of a resumed run."""
    o, rn = cfg.optim, cfg.run
    resumed = _prepare_run_dir(cfg, out, resume=resume, overwrite=overwrite, d=d)
    latest = resumed[0] if resumed is not None else None
    train_set, val_set = _data(cfg, train_set, val_set, d)
    net = _build_net(cfg, device, fresh=latest is None)
    ema = copy.deepcopy(net).requires_grad_(False).eval() if o.ema > 0 else None
    # fused: one kernel for all parameters instead of several per tensor (3 % on CPU, ~8 ms
    # of a 39 ms H200 step); the same update rule.
    optimizer = torch.optim.Adam(net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, fused=True)
    scaler = torch.amp.GradScaler("cuda") if rn.amp == "fp16" else None
    loss_fn = nn.L1Loss() if o.loss == "l1" else nn.MSELoss()
    loop = _Loop(cfg, out, d, device, train_set, val_set, net, net, optimizer, scaler, ema, loss_fn)
    loop.loss_sum = torch.zeros((), device=device)
    loop.first_bad = torch.zeros((), dtype=torch.int64, device=device)
    if resumed is not None:
        _resume(loop, *resumed)
    if d.main:
        _write_config(cfg, out)
    loop.graph = _step_graph(cfg, device, d, optimizer)
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
    loop.t0 = time.monotonic()
    return loop


def _save(loop: _Loop, iteration: int, *, best: bool = False) -> None:
    """An atomic checkpoint of everything a resume needs."""
    o = loop.cfg.optim
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "iteration": iteration,
        "optimizer": _portable(loop.optimizer.state_dict()),
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
        "loss_sum": float(loop.loss_sum) if loop.loss_sum is not None else 0.0,
        "loss_count": loop.loss_count,
        "config": config_json(loop.cfg),  # what a resume is checked against
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
    cfg, spec = loop.cfg, loop.cfg.data.train
    rng = np.random.default_rng([cfg.run.seed, it, loop.d.rank])
    batch, patch, augment = cfg.data.batch_size, cfg.data.patch_size, cfg.data.augment
    if spec.per_patch:  # a per-patch family: every sample degraded afresh, seeded by its index
        x, y = fresh_batch(
            loop.train_set,
            preset=spec.preset,
            scale=spec.scale,
            batch_size=batch,
            patch_size=patch,
            rng=rng,
            seed=cfg.run.seed,
            iteration=it,
            first_index=loop.d.rank * batch,
            augment=augment,
        )
    else:
        x, y = random_batch(
            loop.train_set, batch_size=batch, patch_size=patch, rng=rng, augment=augment
        )
    x = x.to(loop.device, non_blocking=True)
    y = y.to(loop.device, non_blocking=True)
    if cfg.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _step(
    loop: _Loop, it: int | torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, cache: bool = True
) -> None:
    """One optimizer step at the optimizer's lr (autocast, scaler, clipping, EMA). Device work
    only, every state tensor updated in place, so a CUDA graph can capture it."""
    o, optimizer, scaler, net = loop.cfg.optim, loop.optimizer, loop.scaler, loop.net
    with _autocast(loop.device, loop.cfg.run.amp, cache=cache):
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
    assert loop.loss_sum is not None and loop.first_bad is not None
    loss = loss.detach()
    loop.loss_sum += loss
    ok = torch.isfinite(loss) | (loop.first_bad > 0)
    loop.first_bad.copy_(torch.where(ok, loop.first_bad, it))


# ---------------------------------------------------------------------------------------------
# CUDA graphs (run.cuda_graph)


@dataclass
class _StepGraph:
    """The training step captured once as a CUDA graph: static inputs, the iteration number
    as a device tensor, and the replay (None until `GRAPH_WARMUP` eager steps have run)."""

    it: torch.Tensor
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    warm: int = 0
    replay: Callable[[], Any] | None = None


def graph_blocker(cfg: TrainConfig, device: torch.device, d: _Dist | None = None) -> str | None:
    """Why run.cuda_graph cannot capture this run's step; None when it can."""
    blockers = (
        (device.type != "cuda", f"CUDA graphs need a CUDA device, not {device.type}"),
        (cfg.run.amp == "fp16", "run.amp=fp16's GradScaler syncs with the host every step"),
        (d is not None and d.enabled, "DDP's all-reduces are not captured"),
        (cfg.run.compile, "run.compile compiles the step instead"),
    )
    return next((why for blocked, why in blockers if blocked), None)


def _step_graph(
    cfg: TrainConfig, device: torch.device, d: _Dist, optimizer: torch.optim.Optimizer
) -> _StepGraph | None:
    """A `_StepGraph` when run.cuda_graph is on and works here (a note on CUDA when it cannot;
    on the CPU the switch is silently ignored). Makes `optimizer` graph-safe: capturable, its
    lr a device tensor that `_set_lr` refills."""
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
    return _StepGraph(it=torch.zeros((), dtype=torch.int64, device=device))


def _graph_step(loop: _Loop, it: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """`_step` through the CUDA graph: eager warm-up steps on a side stream (real iterations),
    then one capture (which runs nothing), then a replay per iteration."""
    g = loop.graph
    assert g is not None
    if g.x is None or g.y is None:
        g.x, g.y = torch.empty_like(x), torch.empty_like(y)
    g.x.copy_(x)
    g.y.copy_(y)
    g.it.fill_(it)
    if g.replay is None:
        side = torch.cuda.Stream(loop.device)
        side.wait_stream(torch.cuda.current_stream(loop.device))
        with torch.cuda.stream(side):
            _step(loop, g.it, g.x, g.y)
        torch.cuda.current_stream(loop.device).wait_stream(side)
        g.warm += 1
        if g.warm == GRAPH_WARMUP:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                _step(loop, g.it, g.x, g.y, cache=False)
            g.replay = graph.replay
        return
    g.replay()


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Iteration's lr: assigned, or written into the device tensor a CUDA graph reads."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _portable(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state_dict that loads anywhere: a graph's tensor lr as a float, not
    capturable (a CUDA-graph run turns both back on after loading)."""
    groups = [{**g, "lr": float(g["lr"]), "capturable": False} for g in state["param_groups"]]
    return {**state, "param_groups": groups}


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


def _validate(loop: _Loop, it: int, row: dict[str, str]) -> bool:
    """PSNR/SSIM on the validation set (EMA weights if on); True for a new best."""
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
    if loop.last_psnr <= loop.best_psnr:
        return False
    loop.best_psnr, loop.best_iteration = loop.last_psnr, it
    return True


def _tick(loop: _Loop, it: int, lr: float, stop: _StopRequest, bar: tqdm) -> None:
    """After a step: stop on a signal, else log, validate, checkpoint when due.

    The same on every rank (collectives and barriers must match); only rank 0 holds the
    validation set and writes files. The metrics row goes to disk before the checkpoint, so
    a kill between the two never loses the row of the iteration a resume starts after.
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
    best = val_due and _validate(loop, it, row)
    if d.main and (log_due or val_due):
        row["seconds"] = f"{loop.seconds():.3f}"
        loop.rows.append(row)
        _write_metrics(loop.out / "metrics.csv", loop.rows)
        if loop.writer is not None:
            loop.writer.flush()
    if d.main and (best or ckpt_due) and loop.last_saved != it:
        _save(loop, it, best=best)
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
    overwrite: bool,
    train_set: PairSet | None,
    val_set: PairSet | None,
    quiet: bool,
    d: _Dist,
    device: torch.device,
) -> TrainResult:
    """Lock the run folder; set up (and resume), then for each step: batch → step → tick;
    then the model file."""
    _set_up_run(cfg, device, d)
    with folder_lock(out, "run folder") if d.main else contextlib.nullcontext(out):
        loop = _set_up(
            cfg,
            out=out,
            resume=resume,
            overwrite=overwrite,
            train_set=train_set,
            val_set=val_set,
            d=d,
            device=device,
        )
        return _run_steps(loop, quiet)


def _run_steps(loop: _Loop, quiet: bool) -> TrainResult:
    """Every step from the first not yet done; then the model file."""
    cfg, d = loop.cfg, loop.d
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
                _set_lr(loop.optimizer, lr)
                x, y = _batch(loop, it)
                if loop.graph is not None:
                    _graph_step(loop, it, x, y)
                else:
                    _step(loop, it, x, y)
                loop.loss_count += 1
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
