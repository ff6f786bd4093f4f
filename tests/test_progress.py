"""Progress output: bars on a terminal; in a log (CI, nohup, a pipe) one line per finished
stage with its time, never a bar's redraws."""

from __future__ import annotations

import re

import twostage.ops.progress as progress
from twostage.config import apply_overrides, profile_defaults
from twostage.runner.progress import Progress
from twostage.train import train

LINE = re.compile(r"^run +(\d+)%: (\w) ready \(\d+\.\d s\)$")


def test_a_log_gets_one_line_per_stage(capsys) -> None:
    # capsys's stderr is not a terminal, as under CI
    bar = Progress(4, quiet=False, desc="run")
    bar(1, "a ready")
    bar(3, "b ready")
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [LINE.match(line) for line in err.splitlines()]
    assert [m.groups() if m else None for m in lines] == [("25", "a"), ("100", "b")]


def test_a_terminal_keeps_the_bar_and_quiet_prints_nothing(capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    bar = Progress(4, quiet=False, desc="run")
    bar(1, "a ready")
    bar.close()
    err = capsys.readouterr().err
    assert "\r" in err and "a ready" in err and not any(map(LINE.match, err.splitlines()))
    bar = Progress(4, quiet=True, desc="run")
    bar(4, "a ready")
    bar.close()
    assert capsys.readouterr().err == ""


def test_training_in_a_log_prints_one_line(tmp_path, capsys, photo_pairs) -> None:
    data = photo_pairs
    cfg = apply_overrides(profile_defaults("tiny"), [*data, "optim.iterations=12", "name=net"])
    result = train(cfg, out=tmp_path / "run", quiet=False)
    err = capsys.readouterr().err
    assert err == f"net: 12 iterations ({result.seconds:.1f} s)\n"


def test_quiet_training_prints_nothing(tmp_path, capsys, photo_pairs) -> None:
    data = photo_pairs
    cfg = apply_overrides(profile_defaults("tiny"), [*data, "optim.iterations=2"])
    train(cfg, out=tmp_path / "run", quiet=True)
    assert capsys.readouterr().err == ""
