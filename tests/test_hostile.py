"""Issue 13's hostile-user probes, one regression test each (numbered as in the issue).

Nothing lost, nothing hangs, no traceback: every probe ends in a one-line error naming the file
or option (exit 2), a warning, or the right answer.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from photo_pairs import write_photo_pairs
from PIL import Image
from safetensors.torch import load_file, save_file

import twostage.models.checkpoints as checkpoints_mod
from twostage.cli import build_parser, main
from twostage.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_config,
    profile_defaults,
)
from twostage.errors import InputWarning, UserError
from twostage.models import ModelSpec, build_model
from twostage.models.checkpoints import CheckpointError, load_weights, save_model
from twostage.ops.degrade import Blur, load_preset
from twostage.ops.files import (
    WriteError,
    atomic_path,
    newest_complete_folder,
    read_yaml,
    remove_stale_temps,
    temp_path,
    write_text_atomic,
)
from twostage.ops.imageio import read_image
from twostage.pipeline import OnnxPipeline, Pipeline, load_pipeline, restore_image
from twostage.recipes import load_recipe
from twostage.runner import run_recipe
from twostage.train import CHECKPOINT_MARK, latest_checkpoint, train


def _edsr(scale: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(arch="edsr", scale=scale, n_feats=8, n_resblocks=1)).eval()


def _photo(folder: Path, name: str = "good.png", size: tuple[int, int] = (24, 20)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    path = folder / name
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _model(tmp_path: Path) -> Path:
    path = tmp_path / "m.safetensors"
    save_model(path, _edsr())
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


# ---------------------------------------------------------------------------- 1-3: data loss


def test_1_degrade_never_writes_over_its_input(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "d"
    good = _photo(d)
    before = good.read_bytes()
    code, err = _run(capsys, "degrade", "--preset", "blur9", str(good), "--out", str(d))
    assert code == 2 and "is the input" in err and err.count("\n") == 1
    code, err = _run(
        capsys, "degrade", "--preset", "blur9", str(good), "--out", str(d), "--overwrite"
    )
    assert code == 2 and "is the input" in err
    assert good.read_bytes() == before


def test_1_degrade_keeps_existing_outputs_unless_overwrite(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    good = _photo(tmp_path / "in", size=(32, 32))
    out = tmp_path / "out"
    out.mkdir()
    (out / "goodx4.png").write_bytes(b"mine")
    assert main(["degrade", "--preset", "bicubic", str(good), "--out", str(out)]) == 0
    assert "goodx4.png exists (--overwrite" in capsys.readouterr().err
    assert (out / "goodx4.png").read_bytes() == b"mine"
    args = ["degrade", "--preset", "bicubic", str(good), "--out", str(out), "--overwrite"]
    assert main(args) == 0
    assert read_image(out / "goodx4.png")[0].shape == (8, 8, 3)


def test_2_restore_overwrite_never_replaces_the_input(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "d"
    good = _photo(d)
    before = good.read_bytes()
    args = ["restore", "--model", str(_model(tmp_path)), str(good), "--out", str(d)]
    code, err = _run(capsys, *args, "--overwrite", "--device", "cpu")
    assert code == 2 and f"{good} is the input" in err and err.count("\n") == 1
    assert good.read_bytes() == before


@pytest.mark.parametrize("suffix", ["../../x", "/x", "a/b", "..", "x\\y"])
def test_3_suffix_may_not_move_the_output(tmp_path: Path, capsys, suffix: str) -> None:  # type: ignore[no-untyped-def]
    good = _photo(tmp_path / "in")
    out = tmp_path / "a" / "b" / "out"
    code, err = _run(
        capsys, "restore", "--model", str(_model(tmp_path)), str(good), "--out", str(out),
        f"--suffix={suffix}",
    )  # fmt: skip
    assert code == 2 and "--suffix" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["good.png"]


# ----------------------------------------------------------------- 4, 5: resume and leftovers


def test_4_newest_complete_folder(tmp_path: Path) -> None:
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


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`--set` overrides pointing a tiny config at small ×2 photo folders."""
    return write_photo_pairs(tmp_path_factory.mktemp("pairs"))


def _tiny(pairs: list[str], *overrides: str) -> TrainConfig:
    """rcan-tiny, batch 2 of 8², 20 iterations: loss logged every 5, checkpoints every 10."""
    return apply_overrides(profile_defaults("tiny"), [*pairs, "optim.iterations=20", *overrides])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, pairs: list[str]) -> Path:
    """An uninterrupted tiny run: what every resumed run must equal."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(_tiny(pairs), out=out, quiet=True)
    return out


def _same_run(out: Path, reference: Path) -> None:
    """Bit-identical weights, and metrics.csv with the same iterations and losses."""
    ours, ref = (
        load_file(str(out / "model.safetensors")),
        load_file(str(reference / "model.safetensors")),
    )
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)

    def losses(run: Path) -> list[tuple[str, str]]:
        rows = (run / "metrics.csv").read_text().splitlines()[1:]
        return [tuple(row.split(",")[:2]) for row in rows]  # type: ignore[misc]

    assert losses(out) == losses(reference)


def test_4_resume_without_latest_txt_uses_the_newest_complete_checkpoint(
    tmp_path: Path, pairs: list[str], reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(_tiny(pairs, "optim.iterations=10"), out=out, quiet=True)
    (out / "checkpoints" / "latest.txt").unlink()  # killed before its first pointer moved
    (out / "model.safetensors").unlink()
    (out / "checkpoints" / "iter_00000020").mkdir()  # begun, never completed
    train(_tiny(pairs), out=out, resume=True, quiet=True)
    assert "no checkpoint pointer" in capsys.readouterr().out
    _same_run(out, reference)


def test_4_resume_without_any_complete_checkpoint_starts_from_scratch(
    tmp_path: Path, pairs: list[str], reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    (out / "checkpoints" / "iter_00000010").mkdir(parents=True)
    (out / "checkpoints" / "iter_00000010" / "model.safetensors").write_bytes(b"half")
    (out / "checkpoints" / "iter_00000010" / CHECKPOINT_MARK).write_text("")  # ours, cut short
    train(_tiny(pairs), out=out, resume=True, quiet=True)
    assert "starting from scratch" in capsys.readouterr().out
    _same_run(out, reference)


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"iter_99999999\n", b"../../etc\n"])
def test_20_garbage_latest_txt_is_unreadable_not_missing(
    tmp_path: Path, pairs: list[str], garbage: bytes
) -> None:
    out = tmp_path / "run"
    train(_tiny(pairs, "optim.iterations=10"), out=out, quiet=True)
    (out / "checkpoints" / "latest.txt").write_bytes(garbage)
    with pytest.raises(UserError, match=r"latest\.txt is unreadable") as err:
        train(_tiny(pairs), out=out, resume=True, quiet=True)
    assert "missing" not in str(err.value)


def test_20_first_loss_after_a_kill_and_resume_equals_the_uninterrupted_runs(
    tmp_path: Path, pairs: list[str], reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM at iteration 7 saves a checkpoint there; the resumed run's loss at 10 must
    average iterations 6-10, as the uninterrupted run's does, not only 8-10."""
    import twostage.train.loop as train_loop

    real, calls = train_loop.random_batch, {"n": 0}

    def terminating_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 7:
            signal.raise_signal(signal.SIGTERM)  # handled at the end of iteration 7
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_loop, "random_batch", terminating_batch)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(pairs), out=out, quiet=True)
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000007"
    monkeypatch.setattr(train_loop, "random_batch", real)
    train(_tiny(pairs), out=out, resume=True, quiet=True)
    _same_run(out, reference)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_5_stale_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
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


def test_5_a_sigkilled_write_is_cleaned_by_the_next_restore(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    code = (
        "import os, signal, sys\n"
        "from twostage.ops.files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half an image')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out / "good.png")], check=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".good.")]
    good = _photo(tmp_path / "in")
    assert main(["restore", "--model", str(_model(tmp_path)), str(good), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    capsys.readouterr()


def test_5_and_19_a_run_removes_stale_temporaries_and_respects_the_umask(
    tmp_path: Path, pairs: list[str]
) -> None:
    out, dead = tmp_path / "run", _dead_pid()
    stale = [
        out / f".metrics.{dead}-00000000.tmp.csv",
        out / f".config.{dead}-00000001.tmp.yaml",
        out / "checkpoints" / f".latest.{dead}-00000002.tmp.txt",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (out / "checkpoints" / f".iter_00000010.{dead}-0badf00d.tmp").mkdir()
    old = os.umask(0o027)
    try:
        train(_tiny(pairs, "optim.iterations=10"), out=out, quiet=True)
    finally:
        os.umask(old)
    assert [p for p in out.rglob(".*")] == []
    folder = out / "checkpoints" / "iter_00000010"
    assert folder.stat().st_mode & 0o777 == 0o750  # mkdtemp's would be 0700
    assert (folder / "state.pt").stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------- 6-9: hangs and memory


def _alias_bomb(levels: int = 10) -> str:
    lines = ["name: [&a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"  , &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "]\n"


def test_6_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("profile: tiny\n" + _alias_bomb())
    assert len(bomb.read_bytes()) < 1500
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml line \d+: invalid YAML: aliases"):
        load_config(bomb)
    code, err = _run(capsys, "train", str(bomb))
    assert code == 2 and "aliases (*a0) are not allowed" in err and err.count("\n") == 1
    preset = tmp_path / "p.yaml"
    preset.write_text(_alias_bomb())
    with pytest.raises(UserError, match="aliases"):
        load_preset(preset)
    assert time.perf_counter() - start < 10


def test_6_big_documents_and_values_are_not_echoed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: [" + ", ".join(["x"] * 600_000) + "]\n")
    with pytest.raises(UserError, match="larger than 1024 KB"):
        read_yaml(big, "config")
    long_value = "[" + ", ".join(["12345"] * 1000) + "]"
    with pytest.raises(ConfigError) as err:
        apply_overrides(profile_defaults("tiny"), [f"run.seed={long_value}"])
    assert len(str(err.value)) < 300 and "…" in str(err.value)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG signature and IHDR chunk of a width×height RGB image, and a little of an IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x10IDAT" + b"\x78\x9c" * 8)


def test_7_pixel_limit_is_checked_from_the_header(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 12000, 12000)
    with pytest.raises(UserError, match=r"12000×12000 is 144 MP, over the limit of 100 MP"):
        read_image(bomb)
    with pytest.raises(UserError) as err:  # let through, the decoder finds the truncation
        read_image(bomb, max_pixels=200_000_000)
    assert "over the limit" not in str(err.value)
    photo = _photo(tmp_path / "in", size=(30, 40))
    for cmd in (
        ["restore", "--model", str(_model(tmp_path)), str(photo), "--out", str(tmp_path / "o")],
        ["degrade", "--preset", "bicubic", str(photo), "--out", str(tmp_path / "o")],
        ["evaluate", "--pred", str(photo), "--gt", str(photo)],
    ):
        code, err = _run(capsys, *cmd, "--max-pixels", "1000")
        assert code == 2 and "40×30 is 0 MP, over the limit of 0.001 MP" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def _bundle_with(tmp_path: Path, **changes: str) -> Path:
    path = tmp_path / "b.safetensors"
    Pipeline(None, _edsr()).save_bundle(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {**f.metadata(), **changes}
    save_file(load_file(str(path)), str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "field, value", [("stage2_repeats", "20"), ("intermediate_bit_depth", "1000000")]
)
def test_8_absurd_bundle_metadata_is_refused_by_name(
    tmp_path: Path, field: str, value: str
) -> None:
    path = _bundle_with(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=rf"{field}={value} is out of range"):
        load_pipeline(path)


def test_8_absurd_bundle_spec_is_refused_before_building(tmp_path: Path) -> None:
    spec = {**_edsr().spec.to_dict(), "n_feats": 10**7, "n_resblocks": 10**6}
    path = _bundle_with(tmp_path, stage2_spec=json.dumps(spec))
    with pytest.raises(CheckpointError, match=r"the weights are EDSR ×2 \(1 block, 8 ch\)"):
        load_pipeline(path)


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"kernel": "uniform", "size": 100001}, "size must be an odd integer from 1 to 255"),
        ({"kernel": "gaussian", "sigma": 1e6}, "sigma must satisfy"),
        ({"kernel": "disk", "radius": [1, 1e5]}, "radius must satisfy"),
    ],
)
def test_8_absurd_preset_sizes_are_refused_by_name(fields: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        Blur(**fields)


def test_8_kernel_grown_by_scale_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    preset = tmp_path / "wide.yaml"
    preset.write_text(
        "steps:\n- blur: {kernel: gaussian, sigma: 40, reference_scale: 1}\n- resize: {}\n"
    )
    photo = _photo(tmp_path / "in", size=(32, 32))
    for scale, needle in (
        ("4", "the kernel would be 961×961 pixels (at most 255)"),
        ("1000", "--scale must be an integer from 1 to 16, got 1000"),
    ):
        code, err = _run(capsys, "degrade", "--preset", str(preset), "--scale", scale,
                         str(photo), "--out", str(tmp_path / "o"))  # fmt: skip
        assert code == 2 and needle in err and err.count("\n") == 1


def test_9_tiny_tiles_are_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = _photo(tmp_path / "in", size=(32, 40))
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", "--model", str(_model(tmp_path)), str(photo), "--out",
              str(tmp_path / "o"), "--tile", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "a tile of at least 8" in err and err.count("\n") == 1
    with pytest.raises(UserError, match="at least 8"):
        restore_image(lambda p: p, np.zeros((32, 40, 3), np.float32), scale=1, tile=1, tile_pad=0)


# ------------------------------------------------------------------ 10-15: one-line errors


def test_10_torch_save_on_a_full_disk_is_an_oserror(tmp_path: Path) -> None:
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


def test_10_full_disk_while_saving_training_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = write_photo_pairs(tmp_path / "pairs")
    cfg = apply_overrides(profile_defaults("tiny"), [*overrides, "optim.iterations=20"])
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(obj, dict) and obj.get("iteration") == 20:
            Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"cannot write a checkpoint.*write failed.*intact"):
        train(cfg, out=out, quiet=True)
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000010"


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_11_output_file_that_is_a_folder_or_under_a_file(
    tmp_path: Path, capsys, command: str
) -> None:  # type: ignore[no-untyped-def]
    photo = _photo(tmp_path / "in")
    model = _model(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    option = "--json" if command == "evaluate" else "--onnx"
    base = (
        ["evaluate", "--pred", str(photo), "--gt", str(photo)]
        if command == "evaluate"
        else ["export", "--model", str(model)]
    )
    for target, needle in (("folder", "is a folder"), ("file/x.out", "is not a folder")):
        code, err = _run(capsys, *base, option, str(tmp_path / target))
        assert code == 2 and err.startswith(f"twostage: error: {option} ") and needle in err
        assert err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_11_read_only_output_folder(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = _photo(tmp_path / "in")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, err = _run(capsys, "evaluate", "--pred", str(photo), "--gt", str(photo), "--json",
                     str(ro / "r.json"))  # fmt: skip
    assert code == 2 and "is not writable" in err


@pytest.mark.parametrize("seed", ["-1", "99999999999"])
def test_12_seed_out_of_numpys_range(seed: str) -> None:
    with pytest.raises(ConfigError, match=r"run\.seed must be in \[0, 4294967295\]"):
        apply_overrides(profile_defaults("tiny"), [f"run.seed={seed}"])


def test_13_string_repeats_in_a_bundle(tmp_path: Path) -> None:
    path = _bundle_with(tmp_path, stage2_repeats='"1000000"')
    with pytest.raises(CheckpointError, match=r'stage2_repeats="1000000" is out of range'):
        load_pipeline(path)
    path = _bundle_with(tmp_path, stage2_repeats="1000000")
    with pytest.raises(CheckpointError, match="stage2_repeats=1000000 is out of range"):
        load_pipeline(path)


def test_14_onnx_model_with_one_input_channel(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gray.onnx"
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.onnx.export(conv, (torch.rand(1, 1, 8, 8),), str(path), dynamo=False)
    with pytest.raises(UserError, match=r"input has shape \[1, 1, 8, 8\].*N×3×H×W"):
        OnnxPipeline(path)
    photo = _photo(tmp_path / "in")
    code, err = _run(capsys, "restore", "--model", str(path), str(photo), "--out",
                     str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "N×3×H×W" in err and err.count("\n") == 1


def test_15_unsupported_opset_is_one_line(tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    model = _model(tmp_path)
    assert main(["export", "--model", str(model), "--onnx", str(tmp_path / "m.onnx"),
                 "--opset", "3"]) == 2  # fmt: skip
    out, err = capfd.readouterr()
    assert out == "" and err == "twostage: error: --opset 3: expected 7 to 23\n"
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------- 16-20: wrong answers


def _nan_model(tmp_path: Path) -> Path:
    net = _edsr()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(net.state_dict(), path)
    return path


def test_16_nan_weights_are_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    model = _nan_model(tmp_path)
    code, err = _run(capsys, "export", "--model", str(model), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and "NaN or Inf in the weights of head.0.weight" in err
    assert not (tmp_path / "m.onnx").exists()
    photo = _photo(tmp_path / "in")
    code, err = _run(capsys, "restore", "--model", str(model), str(photo), "--out",
                     str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "NaN or Inf" in err and not (tmp_path / "o").exists()


def test_16_nan_output_is_an_error_not_a_black_image() -> None:
    img = np.full((16, 16, 3), 0.5, np.float32)
    with pytest.raises(UserError, match="NaN or Inf"):
        restore_image(lambda p: p * np.nan, img, scale=1, tile=None, tile_pad=0)


def test_17_ground_truth_without_prediction(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("a.png", "b.png", "c.png"):
        _photo(gt, name)
    _photo(pred, "a.png")
    code, err = _run(capsys, "evaluate", "--pred", str(pred), "--gt", str(gt))
    assert code == 2 and "2 of 3 ground-truth image(s) have no prediction" in err
    assert "--allow-missing" in err and err.count("\n") == 1
    code, err = _run(capsys, "evaluate", "--pred", str(pred), "--gt", str(gt), "--allow-missing")
    assert code == 0 and err.startswith("twostage: warning: 2 of 3") and "cover the other 1" in err


def test_18_degrade_names_bad_files_and_carries_on(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "in"
    tiny = _photo(d, "tiny.png", size=(1, 1))
    broken = d / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = _photo(d, "good.png", size=(32, 32))
    out = tmp_path / "out"
    code = main(["degrade", "--preset", "bicubic", str(tiny), str(broken), str(good), "--out",
                 str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert f"error: {tiny}: a 1×1 image is too small for ×4" in captured.err
    assert f"cannot read image {broken}" in captured.err
    assert "wrote 1 image(s)" in captured.out and "2 failed" in captured.out
    assert [p.name for p in out.iterdir()] == ["goodx4.png"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_19_outputs_respect_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        folder = temp_path(tmp_path / "ckpt", folder=True)
        save_model(tmp_path / "m.safetensors", _edsr())
    finally:
        os.umask(old)
    for path in (tmp_path / "a.txt", tmp_path / "m.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask


def test_20_wrong_init_architecture_says_what_the_weights_are() -> None:
    rcan = build_model(
        ModelSpec(arch="rcan", scale=2, n_feats=8, n_resblocks=1, n_resgroups=1, reduction=4)
    )
    with pytest.raises(CheckpointError) as err:
        load_weights(rcan, _edsr().state_dict(), source="model.init edsr.pt")
    assert str(err.value) == (
        "model.init edsr.pt: the weights are EDSR ×2 (1 block, 8 ch), but "
        "RCAN ×2 (1×1 RCAB, 8 ch, r4) was expected"
    )
    other = _edsr(seed=3)
    load_weights(rcan := _edsr(), other.state_dict(), source="x")
    assert all(torch.equal(a, b) for a, b in zip(rcan.state_dict().values(),
                                                 other.state_dict().values()))  # fmt: skip


def test_20_init_of_another_architecture_in_training_leaves_no_config(
    tmp_path: Path, pairs: list[str]
) -> None:
    init = _model(tmp_path)  # EDSR ×2, 8 channels; the tiny profile trains rcan-tiny
    out = tmp_path / "run"
    with pytest.raises(
        CheckpointError, match=r"the weights are EDSR ×2 \(1 block, 8 ch\), but RCAN"
    ):
        train(_tiny(pairs, f"model.init={init}"), out=out, quiet=True)
    assert not (out / "config.yaml").exists()
    with pytest.raises(UserError, match=r"model\.scale=3"):
        train(_tiny(pairs, "model.scale=3"), out=out, quiet=True)
    assert not (out / "config.yaml").exists()


def test_20_offshelf_files_are_all_checked_before_anything_trains(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    import pickle

    bad = tmp_path / "offshelf-x4.pt"
    bad.write_bytes(pickle.dumps(Payload()))
    out = tmp_path / "run"
    with pytest.raises(UserError, match=str(bad.name)):
        run_recipe(
            "sr-x4",
            data={},
            profile="tiny",
            out=out,
            device="cpu",
            quiet=True,
            branches=["map1-offshelf-x4"],
            offshelf={"offshelf-x4": bad},
        )
    assert not marker.exists()
    assert list(out.glob("networks/*/model.safetensors")) == []  # map1 was not trained


def test_20_recipe_yaml_is_read_without_aliases(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("base: sr-x4\nbranches: &b [direct-rcan]\nname: *b\n")
    with pytest.raises(UserError, match=r"recipe .*r\.yaml line 3: invalid YAML: aliases"):
        load_recipe(path)


@pytest.mark.parametrize("missing", ["spandrel", "torchvision"])
def test_20_spandrel_hint_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "spandrel":
            raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)
        return real_import(name, *args, **kwargs)

    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(UserError) as err:
        checkpoints_mod.load_model(path)
    if missing == "spandrel":
        assert "need spandrel (pip install torchvision spandrel==0.4.2)" in str(err.value)
    else:
        assert "spandrel, which is installed but cannot import torchvision" in str(err.value)
        assert "(pip install torchvision)" in str(err.value)


def test_20_animated_gif_uses_the_first_frame_and_says_so(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    frames = [Image.new("RGB", (16, 12), c) for c in ((200, 10, 10), (10, 200, 10))]
    gif = tmp_path / "in" / "anim.gif"
    gif.parent.mkdir()
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(InputWarning, match=r"anim\.gif is animated \(2 frames\); only the first"):
        img, _ = read_image(gif)
    assert img[0, 0, 0] > 0.7 and img[0, 0, 1] < 0.1
    code = main(["restore", "--model", str(_model(tmp_path)), str(gif), "--out",
                 str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and "twostage: warning: " in err and "2 frames" in err
    assert read_image(tmp_path / "o" / "anim.png")[0].shape == (24, 32, 3)


# ------------------------------------------------------------- restore's defaults and help


def test_restore_tiles_automatically_and_documents_every_option() -> None:
    parser = build_parser()
    args = parser.parse_args(["restore", "--model", "m", "x.png", "--out", "o"])
    assert args.tile == "auto"
    restore = parser._subparsers._group_actions[0].choices["restore"]  # type: ignore[union-attr]
    undocumented = [a.dest for a in restore._actions if not a.help]
    assert undocumented == []


def test_write_errors_from_other_writers_keep_their_errno(tmp_path: Path) -> None:
    with pytest.raises(WriteError) as err, atomic_path(tmp_path / "x.bin"):
        raise RuntimeError("Error while serializing: I/O error: No space left (os error 28)")
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(ValueError), atomic_path(tmp_path / "y.bin"):
        raise ValueError("a bug, not a failed write")
