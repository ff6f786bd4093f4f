"""The training state on disk: checkpoint folders (weights, optimizer, RNG, bookkeeping) written
atomically and found again for a resume, their pointers, and metrics.csv.

"Checkpoint" here is a training checkpoint folder; `models/checkpoints.py` reads and writes the
weight files inside it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twostage.config import TrainConfig, config_to_dict
from twostage.errors import UserError
from twostage.models.checkpoints import read_state, save_model
from twostage.ops.files import (
    atomic_path,
    newest_complete_folder,
    read_text_bounded,
    temp_path,
    write_text_atomic,
)

STATE_FORMAT = "twostage-train-state"
STATE_VERSION = 2  # 2: the state holds the run's config ("config", JSON)
METRIC_FIELDS = ("iteration", "loss", "lr", "val_psnr", "val_ssim", "seconds")
CHECKPOINT_NAME = r"iter_(\d{8})"
CHECKPOINT_FILES = ("model.safetensors", "state.pt")
# Written into every checkpoint folder: the clean-ups delete only folders that hold it.
CHECKPOINT_MARK = "twostage-checkpoint.txt"
MARK_TEXT = "written by twostage train; it deletes only checkpoint folders holding this file\n"


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


def foreign_checkpoints(root: Path) -> list[Path]:
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
    if final in foreign_checkpoints(root):
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


def clean_after(root: Path, iteration: int, best_iteration: int | None) -> None:
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


def read_metric_rows(path: Path, up_to: int) -> list[dict[str, str]]:
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


def write_metric_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """metrics.csv, written atomically: a kill leaves the previous file."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# what goes into state.pt


def config_json(cfg: TrainConfig) -> str:
    """`cfg` as canonical JSON: what a checkpoint stores and a resume compares against."""
    return json.dumps(config_to_dict(cfg), sort_keys=True)


def portable_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state_dict that loads anywhere: a graph's tensor lr as a float, not
    capturable (a CUDA-graph run turns both back on after loading)."""
    groups = [{**g, "lr": float(g["lr"]), "capturable": False} for g in state["param_groups"]]
    return {**state, "param_groups": groups}
