"""Safe files: atomic writes, stale temporaries, output-path guards and bounded YAML reads.

- `atomic_path` writes beside the target under a temporary name and renames it into place, so a
  reader never sees a half-written file and a crash leaves the old one. The file gets the mode
  any other tool would give it (0666 less the umask), not `mkstemp`'s 0600.
- A temporary name carries the writer's process id (`.<stem>.<pid>-<random>.tmp<suffix>`), so
  `remove_stale_temps` can delete those whose writer is gone (SIGKILL) and leave live ones.
- A failed write is an `OSError` (`WriteError`) even where the writer raised something else
  (torch's "unexpected pos", safetensors' "I/O error"): callers handle one exception type.
- `folder_lock` keeps two processes (two `twostage run`s, a run and a `train`) out of one
  run folder at once.
- `read_yaml` refuses aliases and files over `YAML_MAX_BYTES`: a 1 KB "billion laughs"
  document cannot expand to gigabytes. Nesting deeper than `MAX_YAML_DEPTH` is refused while
  composing, before PyYAML's recursion (or any reader's after it) can overflow the stack. It
  reads regular files only, and at most the cap (`read_bounded`): a link to /dev/zero is
  refused, and a FIFO never blocks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from twostage.errors import UserError, short
from twostage.limits import MAX_NAME_BYTES, MAX_RUN_FILE_BYTES, MAX_YAML_DEPTH

__all__ = [
    "WriteError",
    "atomic_path",
    "check_name_lengths",
    "check_output_file",
    "check_outputs",
    "check_suffix",
    "folder_lock",
    "is_temp_name",
    "newest_complete_folder",
    "parse_yaml",
    "read_bounded",
    "read_text_bounded",
    "read_yaml",
    "remove_stale_temps",
    "temp_path",
    "write_text_atomic",
]

YAML_MAX_BYTES = 1 << 20  # configs, recipes and presets are a few KB
# Messages of writers that report a failed write without an OSError (torch.save, safetensors).
WRITE_FAILURE_MARKERS = ("unexpected pos", "file write failed", "iostream error", "I/O error")
_TEMP_NAME = re.compile(r"^\..*\.(\d+)-[0-9a-f]{8}\.tmp(\.[^.]*)?$")


class WriteError(OSError):
    """A write that failed (disk full, file too large, I/O error), whatever the writer raised."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path(path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Create an empty temporary file (or folder) beside `path`, named with our pid.

    Its mode is 0666 (folders 0777) less the umask, as `open`/`mkdir` give it (not `mkstemp`'s
    0600 and `mkdtemp`'s 0700).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the stem is cut so that the temporary name (22 bytes longer, at most) is a legal name too
    keep = max(0, MAX_NAME_BYTES - 32 - len(os.fsencode(path.suffix)))
    stem = os.fsdecode(os.fsencode(path.stem)[:keep])
    for _ in range(100):
        tmp = path.parent / f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            if folder:
                tmp.mkdir()
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))  # pragma: no cover


def _as_write_error(exc: BaseException, path: Path) -> WriteError | None:
    """`exc` as a WriteError when it reports a failed write in another writer's words."""
    if isinstance(exc, OSError) or not isinstance(exc, Exception):
        return None
    detail = " ".join(str(exc).split())
    if not any(marker in detail for marker in WRITE_FAILURE_MARKERS):
        return None
    found = re.search(r"os error (\d+)", detail)
    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free < (1 << 20):
            return WriteError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if found:
        code = int(found.group(1))
        return WriteError(code, os.strerror(code), str(path))
    return WriteError(errno.EIO, f"write failed ({detail})", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    On any exception (Ctrl-C included) the temporary file is removed and `path` is untouched;
    a writer's own report of a failed write is raised as `WriteError`. The temporary name keeps
    the suffix, so writers that infer the format from it still work.
    """
    path = Path(path)
    tmp_path = temp_path(path)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # writers such as safetensors make it 0600
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        error = _as_write_error(exc, path)
        if error is not None:
            raise error from exc
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temporary file or folder name that `temp_path` makes."""
    return _TEMP_NAME.match(name) is not None


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete our temporary files and folders in `folder` whose writing process has ended.

    Only names `temp_path` makes are touched, and only when their pid is not running (a writer
    killed by SIGKILL or SIGTERM); returns what was removed.
    """
    folder = Path(folder)
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _TEMP_NAME.match(entry.name)
            if match is None or _process_alive(int(match.group(1))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def newest_complete_folder(
    root: str | os.PathLike, *, pattern: str, required: Iterable[str]
) -> Path | None:
    """The sub-folder of `root` whose name fully matches `pattern` (one integer group, the
    ordering key) with the highest number among those that hold every `required` file."""
    regex, needed = re.compile(pattern), list(required)
    found = []
    with contextlib.suppress(OSError):
        for entry in Path(root).iterdir():
            match = regex.fullmatch(entry.name)
            if match and entry.is_dir() and all((entry / n).is_file() for n in needed):
                found.append((int(match.group(1)), entry))
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------
# output paths


def check_output_file(
    path: str | os.PathLike,
    option: str,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = True,
) -> Path:
    """Refuse, before any work, an output file that cannot be written: a folder, a parent that
    is a file, or a folder we may not write to; one of `inputs` (the same file however named:
    symlinks, hard links, `..`), with or without `overwrite`; and, unless `overwrite`, any
    existing file. The error names `option` and the path."""
    path = Path(path)
    check_name_lengths(path, option)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {parent} is not writable")
    clash = _same_file_in(path, inputs)
    if clash is not None:
        raise UserError(f"{option} {path}: is the input {clash}; choose another name")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise UserError(f"{option} {path}: exists (--overwrite to replace it)")
    return path


def check_name_lengths(path: Path, what: str) -> None:
    """Refuse a path with a file or folder name longer than file systems allow (ENAMETOOLONG
    only when the write comes)."""
    for name in path.parts:
        size = len(os.fsencode(name))
        if size > MAX_NAME_BYTES:
            raise UserError(
                f"{what} {path}: the name {short(name)} is {size} bytes; file systems allow "
                f"at most {MAX_NAME_BYTES}"
            )


def _file_id(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        st = path.stat()
        return (st.st_dev, st.st_ino)
    return None


def _same_file_in(path: Path, files: Iterable[str | os.PathLike]) -> Path | None:
    """The first of `files` that is `path` (the same device and inode), or None."""
    target = _file_id(path)
    if target is None:
        return None
    return next((Path(f) for f in files if _file_id(Path(f)) == target), None)


def check_outputs(plan: Iterable[tuple[Path, Path]], *, out: Path) -> None:
    """Refuse a plan of (source, target) pairs where a target leaves `out` or is an input file
    (the same file, however named: links and `..` included).

    No flag allows either: `--overwrite` replaces earlier outputs, never the images read.
    """
    pairs = list(plan)
    root = out.resolve()
    sources = {_file_id(source): source for source, _ in pairs}
    sources.pop(None, None)
    for _, target in pairs:
        check_name_lengths(target, "output")
        if not target.resolve().is_relative_to(root):
            raise UserError(f"output {target} would be written outside --out {out}")
        clash = sources.get(_file_id(target))
        if clash is not None:
            raise UserError(
                f"output {target} is the input {clash}; choose another --out or --suffix"
            )


def check_suffix(suffix: str, option: str = "--suffix") -> str:
    """A file-name suffix without path separators or `..` (it must not move the file)."""
    seps = {"/", "\\", os.sep, os.altsep or "/"}
    if any(s in suffix for s in seps) or ".." in suffix or "\0" in suffix:
        raise UserError(f"{option} {suffix!r}: may not hold path separators or '..'")
    return suffix


# ---------------------------------------------------------------------------------------------
# folder locks

LOCK_NAME = "twostage.lock"  # inside a locked folder; it names the holder


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, *, then: str = "") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) while the block runs.

    The lock is `fcntl.flock` on `folder/twostage.lock`: the system drops it when the holder
    exits, however it ends, so a killed run never leaves a stale lock. A folder another
    process holds is a UserError naming `what`, the folder, the holder's pid, host and start
    time (written into the lock file) and `then` (what to do once it has ended). Without
    `fcntl` (Windows) nothing is locked.
    """
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield folder
        return
    path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: a symlink is never followed, nor truncated
            raise UserError(f"{path} is not a twostage lock file; move it out of the way") from None
        raise UserError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > 4096:
            raise UserError(f"{path} is not a twostage lock file; move it out of the way")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
            raise UserError(
                f"{what} {folder} is in use by {' '.join(holder.split())}; wait for it to end"
                f"{' (' + then + ')' if then else ''} or choose another folder"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"twostage pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(),
            0,
        )
        yield folder
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# YAML


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (`*name`), the one way a small YAML grows huge,
    and with at most `MAX_YAML_DEPTH` levels of nesting (PyYAML composes recursively)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed", event.start_mark
            )
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested too deeply (more than {MAX_YAML_DEPTH} levels)",
                self.peek_event().start_mark,
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_yaml(text: str, source: str) -> Any:
    """YAML text as plain data (safe tags only, no aliases); errors name `source` and line."""
    if len(text) > YAML_MAX_BYTES:
        raise UserError(f"{source}: larger than {YAML_MAX_BYTES // 1024} KB; not a config")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass: safe tags only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{source}{where}: invalid YAML: {problem}") from None


def read_bounded(path: str | os.PathLike, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; anything else (a folder, FIFO, device such as
    /dev/zero, socket) or a longer file is an OSError. Opened non-blocking, so a FIFO never
    hangs: the type is checked on the open descriptor, before anything is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or socket)", str(path))
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 1024} KB", str(path))
    return data


def read_text_bounded(path: str | os.PathLike, limit: int = MAX_RUN_FILE_BYTES) -> str:
    """A regular UTF-8 text file of at most `limit` bytes (`read_bounded`); OSError or
    UnicodeDecodeError otherwise. For the files a run folder holds (metrics.csv, pointers)."""
    return read_bounded(path, limit).decode("utf-8")


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Read a YAML file `what` (e.g. "config") with `parse_yaml`'s limits: a regular file of at
    most `YAML_MAX_BYTES` (`read_bounded`)."""
    path = Path(path)
    try:
        text = read_bounded(path, YAML_MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"cannot read {what} {path}: {reason}") from None
    return parse_yaml(text, f"{what} {path}")
