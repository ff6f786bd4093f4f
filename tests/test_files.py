"""Safe files (ops/files.py): bounded YAML reads of regular files only."""

from __future__ import annotations

import errno
import os
import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from twostage.config import ConfigError, load_config
from twostage.errors import UserError
from twostage.limits import MAX_YAML_DEPTH
from twostage.models.checkpoints import save_model
from twostage.ops.degrade import load_preset
from twostage.ops.files import (
    YAML_MAX_BYTES,
    WriteError,
    atomic_path,
    newest_complete_folder,
    read_yaml,
    remove_stale_temps,
    temp_path,
    write_text_atomic,
)
from twostage.recipes import load_recipe


class _Blocked(Exception):
    """Not an OSError (TimeoutError is one), so that no `except OSError` can swallow it."""


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail, instead of hanging, a test whose read blocks for more than 10 seconds."""

    def _timeout(signum: int, frame: object) -> None:
        raise _Blocked("the read blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_yaml_linked_to_dev_zero_is_refused_without_reading_it(tmp_path: Path, alarm) -> None:  # type: ignore[no-untyped-def]
    link = tmp_path / "preset.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(UserError, match=r"cannot read preset .*preset\.yaml: not a regular file"):
        read_yaml(link, "preset")
    with pytest.raises(UserError, match=r"preset\.yaml: not a regular file"):
        load_preset(link)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_yaml_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path, alarm) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"cannot read config .*config\.yaml: not a regular"):
        load_config(fifo)
    with pytest.raises(UserError, match=r"recipe .*config\.yaml: not a regular file"):
        load_recipe(fifo)


def test_yaml_that_is_a_folder_or_too_long_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(UserError, match=r"cannot read config .*dir\.yaml: is a folder"):
        read_yaml(tmp_path / "dir.yaml", "config")
    long = tmp_path / "long.yaml"
    long.write_text("# " + "x" * YAML_MAX_BYTES + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"long\.yaml: larger than 1024 KB"):
        read_yaml(long, "config")
    exact = tmp_path / "exact.yaml"
    exact.write_text("a: 1\n" + "#" * (YAML_MAX_BYTES - 5), encoding="utf-8")
    assert read_yaml(exact, "config") == {"a": 1}


def test_deeply_nested_yaml_is_a_one_line_error_naming_the_file(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str]]
) -> None:
    """PyYAML composes recursively: 100k brackets overflowed the stack (a RecursionError)."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for load, what in ((load_config, "config"), (load_recipe, "recipe"), (load_preset, "preset")):
        with pytest.raises(UserError, match=rf"{what} .*deep\.yaml line 1: .*nested too deeply"):
            load(deep)
    image, out = str(tmp_path / "in.png"), str(tmp_path / "out")
    for args in (
        ["train", str(deep), "--out", out],
        ["run", str(deep), "--out", out],
        ["degrade", "--preset", str(deep), "--scale", "1", image, "--out", out],
    ):
        code, err = run_cli(*args)
        assert code == 2 and "nested too deeply" in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "out").exists()
    levels = MAX_YAML_DEPTH
    assert read_yaml_text(tmp_path, "[" * levels + "]" * levels) == _nested(levels)
    with pytest.raises(UserError, match="nested too deeply"):
        read_yaml_text(tmp_path, "a: " + "{a: " * levels + "1" + "}" * levels)


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def read_yaml_text(tmp_path: Path, text: str) -> object:
    path = tmp_path / "text.yaml"
    path.write_text(text)
    return read_yaml(path, "config")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_run_folder_files_linked_to_dev_zero_are_not_read(tmp_path: Path, alarm) -> None:  # type: ignore[no-untyped-def]
    """metrics.csv, latest.txt and a mapped set's complete.json that are links to /dev/zero
    (or FIFOs) count as missing: the resume, the report and the runner never read them."""
    from twostage.report import read_metrics
    from twostage.runner.networks import marker_images
    from twostage.train import latest_checkpoint
    from twostage.train.state import read_metric_rows

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/latest.txt").symlink_to("/dev/zero")
    (tmp_path / "metrics.csv").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "complete.json")
    assert latest_checkpoint(tmp_path) is None
    assert read_metric_rows(tmp_path / "metrics.csv", 10) == []
    assert read_metrics(tmp_path / "metrics.csv") == []
    assert marker_images(tmp_path / "complete.json") is None


# ---------- finding complete folders, stale temporaries, failed writes, output paths, the umask


def test_newest_complete_folder_skips_incomplete_and_temporary_folders(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for it, files in ((10, ("model.safetensors", "state.pt")), (20, ("model.safetensors",))):
        (root / f"iter_{it:08d}").mkdir(parents=True)
        for name in files:
            (root / f"iter_{it:08d}" / name).write_bytes(b"x")
    (root / ".iter_00000030.123-abcdef01.tmp").mkdir()
    kwargs = {"pattern": r"iter_(\d{8})", "required": ("model.safetensors", "state.pt")}
    assert newest_complete_folder(root, **kwargs) == root / "iter_00000010"
    (root / "iter_00000020" / "state.pt").write_bytes(b"x")
    assert newest_complete_folder(root, **kwargs) == root / "iter_00000020"
    assert newest_complete_folder(tmp_path / "none", **kwargs) is None


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path: Path, dead_pid: int) -> None:
    dead = dead_pid
    stale = [
        tmp_path / f".good.{dead}-0123abcd.tmp.png",
        tmp_path / f".latest.{dead}-89abcdef.tmp.txt",
        tmp_path / f".metrics.{dead}-00000000.tmp.csv",
    ]
    for p in stale:
        p.write_bytes(b"half")
    (tmp_path / f".iter_00000010.{dead}-0badf00d.tmp").mkdir()
    live = temp_path(tmp_path / "live.png")  # ours, still being written
    foreign = [tmp_path / ".hidden.tmp.png", tmp_path / "photo.png"]
    for p in foreign:
        p.write_bytes(b"not ours")
    removed = remove_stale_temps(tmp_path)
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, *(p.name for p in foreign)]
    )


def test_a_write_that_fills_the_disk_is_a_write_error_and_leaves_nothing(tmp_path: Path) -> None:
    """A real failed write: the file-size limit stops torch.save as a full disk would."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(WriteError) as err, atomic_path(tmp_path / "state.pt") as tmp:
            torch.save({"w": torch.zeros(10_000)}, tmp)
        with (
            pytest.raises(WriteError, match="File too large"),
            atomic_path(tmp_path / "model.safetensors") as tmp,
        ):
            save_file({"w": torch.zeros(10_000)}, str(tmp))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert isinstance(err.value, OSError) and "write failed" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_output_file_that_is_a_folder_or_under_a_file_is_refused(
    tmp_path: Path,
    command: str,
    photo_file: Callable[..., Path],
    edsr_file: Path,
    run_cli: Callable[..., tuple[int, str]],
) -> None:
    photo = photo_file(tmp_path / "in")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    option = "--json" if command == "evaluate" else "--onnx"
    base = (
        ["evaluate", "--pred", str(photo), "--gt", str(photo)]
        if command == "evaluate"
        else ["export", "--model", str(edsr_file)]
    )
    for target, needle in (("folder", "is a folder"), ("file/x.out", "is not a folder")):
        code, err = run_cli(*base, option, str(tmp_path / target))
        assert code == 2 and err.startswith(f"twostage: error: {option} ") and needle in err
        assert err.count("\n") == 1


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_and_folders_respect_the_umask(
    tmp_path: Path, mask: int, tiny_edsr: Callable[..., torch.nn.Module]
) -> None:
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        folder = temp_path(tmp_path / "ckpt", folder=True)
        save_model(tmp_path / "m.safetensors", tiny_edsr())
    finally:
        os.umask(old)
    for path in (tmp_path / "a.txt", tmp_path / "m.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask


def test_write_errors_from_other_writers_keep_their_errno(tmp_path: Path) -> None:
    with pytest.raises(WriteError) as err, atomic_path(tmp_path / "x.bin"):
        raise RuntimeError("Error while serializing: I/O error: No space left (os error 28)")
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(ValueError), atomic_path(tmp_path / "y.bin"):
        raise ValueError("a bug, not a failed write")
