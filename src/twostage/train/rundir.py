"""The run folder's ownership checks: a fresh run writes only into a folder it may own, a resume
continues only a run of the same config, `--overwrite` deletes only what a twostage run wrote."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from twostage.config import ConfigError, TrainConfig, config_to_dict, load_config, save_config
from twostage.errors import UserError
from twostage.ops.files import LOCK_NAME, is_temp_name, remove_stale_temps
from twostage.train.dist import Dist
from twostage.train.state import (
    CHECKPOINT_MARK,
    CHECKPOINT_NAME,
    checkpoint_dirs,
    config_json,
    foreign_checkpoints,
    has_checkpoint,
    read_training_state,
    resume_point,
)

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
# What a run writes at the top of its folder (besides TensorBoard's events.out.tfevents.*).
RUN_FILES = ("config.yaml", "metrics.csv", "model.safetensors", "checkpoints", LOCK_NAME)
POINTERS = ("latest.txt", "best.txt")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b": value}."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for k, v in data.items():
            flat.update(_flat(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: data}


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
                if entry in foreign_checkpoints(root):
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


def _check_no_links(out: Path) -> None:
    """A run writes only inside its folder: a symbolic link where it writes (checkpoints/, a
    file it replaces) would send its writes, or --overwrite's deletions, somewhere else."""
    for name in RUN_FILES:
        if (out / name).is_symlink():
            raise UserError(
                f"{out / name} is a symbolic link; twostage train writes only inside the run "
                "folder: move it out of the way, or choose another --out"
            )


def _clear_checkpoints(root: Path) -> None:
    """--overwrite: delete the checkpoints and pointers an earlier run wrote (marked only)."""
    for _, p in checkpoint_dirs(root):
        shutil.rmtree(p)
    for name in POINTERS:
        (root / name).unlink(missing_ok=True)


def prepare_run_dir(
    cfg: TrainConfig, out: Path, *, resume: bool, overwrite: bool, d: Dist
) -> tuple[Path, dict[str, Any]] | None:
    """Check the run folder for a fresh run or a resume and (rank 0) delete the temporary
    files of killed writers. Returns the checkpoint to resume from and its training state
    (None: start afresh)."""
    _check_no_links(out)
    if d.main:
        remove_stale_temps(out)
        remove_stale_temps(out / "checkpoints")
    foreign = foreign_checkpoints(out / "checkpoints")
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


def write_config(cfg: TrainConfig, out: Path) -> None:
    """The run's config.yaml, written once every check has passed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    except OSError as exc:
        raise UserError(f"cannot write to run folder {out}: {exc.strerror or exc}") from None
