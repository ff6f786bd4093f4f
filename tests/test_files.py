"""Safe files (ops/files.py): bounded YAML reads of regular files only."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from twostage.config import ConfigError, load_config
from twostage.errors import UserError
from twostage.ops.degrade import load_preset
from twostage.ops.files import YAML_MAX_BYTES, read_yaml
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
