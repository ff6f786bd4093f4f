"""The training engine: schedule, run folder, exact resume after SIGKILL, atomic checkpoints,
NaN and Ctrl-C handling, EMA. Tiny RCAN, 16×16 patches, batch 2, 30 iterations, one thread."""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import twostage.train as train_mod
import twostage.train.loop as train_loop
from twostage.cli import main
from twostage.config import (
    OptimConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    profile_defaults,
    save_config,
)
from twostage.data.datasets import open_dataset
from twostage.errors import UserError
from twostage.models.checkpoints import CheckpointError, load_model
from twostage.ops.metrics import psnr
from twostage.train import (
    CHECKPOINT_MARK,
    TrainingDiverged,
    latest_checkpoint,
    learning_rate,
    load_checkpoint,
    train,
)
from twostage.train.cuda_graph import set_lr, step_graph
from twostage.train.dist import Dist
from twostage.train.state import portable_optimizer_state

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


@pytest.fixture(scope="module", autouse=True)
def pairs_dir(photo_pairs: list[str]) -> None:
    """Small ×2 folders of real photos (conftest's photo_pairs), used by every test here."""
    TINY_DATA[:] = photo_pairs


TINY_DATA: list[str] = []


def tiny(*overrides: str) -> TrainConfig:
    """The `tiny` profile (rcan-tiny, batch 2, checkpoints every 10, lr halved every 10) for
    30 iterations of 16×16 patches on the folders above."""
    longer = ["optim.iterations=30", "data.patch_size=16"]
    return apply_overrides(profile_defaults("tiny"), [*TINY_DATA, *longer, *overrides])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted tiny run (in-process), the yardstick for the resume tests."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(tiny(), out=out, quiet=True)
    return out


# ---------------------------------------------------------------------------------------------


def test_learning_rate_halves_every_step() -> None:
    paper = OptimConfig()  # lr 1e-4, halved every 50k
    assert learning_rate(paper, 1) == 1e-4
    assert learning_rate(paper, 50_000) == 1e-4
    assert learning_rate(paper, 50_001) == 5e-5
    assert learning_rate(paper, 100_000) == 5e-5
    assert learning_rate(paper, 100_001) == 2.5e-5
    assert learning_rate(paper, 150_000) == 2.5e-5
    assert learning_rate(OptimConfig(lr=1.0, lr_step=3, lr_gamma=0.1), 7) == pytest.approx(0.01)


def test_run_folder_layout(reference: Path) -> None:
    cfg = tiny()
    assert load_config(reference / "config.yaml") == cfg
    ckpts = reference / "checkpoints"
    assert (ckpts / "latest.txt").read_text().strip() == "iter_00000030"
    kept = sorted(p.name for p in ckpts.iterdir() if p.is_dir())
    # keep_last=2 → 20 and 30; `best` (highest validation PSNR) is kept besides
    best = (ckpts / "best.txt").read_text().strip()
    assert {"iter_00000020", "iter_00000030", best} == set(kept)
    rows = list(csv.DictReader((reference / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    for r in rows:  # the lr column follows the schedule: 1e-3 halved every 10 iterations
        assert float(r["lr"]) == pytest.approx(1e-3 * 0.5 ** ((int(r["iteration"]) - 1) // 10))
        assert float(r["loss"]) > 0
    psnrs = {int(r["iteration"]): float(r["val_psnr"]) for r in rows if r["val_psnr"]}
    assert sorted(psnrs) == [10, 20, 30]
    assert best == f"iter_{max(psnrs, key=psnrs.get):08d}"
    # the final model loads through the public loader and equals the last checkpoint
    model = load_model(reference / "model.safetensors")
    assert model.scale == 2
    final = weights(reference / "model.safetensors")
    assert_bit_identical(final, weights(ckpts / "iter_00000030" / "model.safetensors"))
    _, state = load_checkpoint(ckpts / "iter_00000030")
    assert state["iteration"] == 30
    assert state["best_psnr"] == pytest.approx(max(psnrs.values()), abs=1e-4)
    # the logged PSNR is the final model's on the whole validation image, RGB, crop = scale
    (pair,) = open_dataset(tiny().data.val)
    with torch.no_grad():
        x = torch.from_numpy(pair.input.astype("float32") / 255).permute(2, 0, 1)[None]
        out = model(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert psnr(out, pair.target, crop_border=2) == pytest.approx(psnrs[30], abs=1e-4)


def test_tensorboard_events_are_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny("optim.iterations=10", "log.tensorboard=true"), out=out, quiet=True)
    assert list(out.glob("events.out.tfevents.*"))


def _killing_launcher(kill_when: str, at: int) -> str:
    """Python code that runs `python -m twostage` but SIGKILLs itself at a chosen point:
    `batch` — while drawing batch `at` (mid-iteration); `save` — halfway through writing the
    training state of the checkpoint at iteration `at`."""
    return f"""
import os, signal, sys
import torch
import twostage.train.loop as t
calls = {{"batch": 0}}
orig_batch, orig_save = t.random_batch, torch.save
def random_batch(*args, **kwargs):
    calls["batch"] += 1
    if {kill_when!r} == "batch" and calls["batch"] == {at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig_batch(*args, **kwargs)
def save(obj, f, *args, **kwargs):
    if {kill_when!r} == "save" and obj.get("iteration") == {at}:
        with open(f, "wb") as fh:
            fh.write(b"PK\\x03\\x04 half a file")
            fh.flush(); os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return orig_save(obj, f, *args, **kwargs)
t.random_batch = random_batch
torch.save = save
from twostage.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twostage", *args],
        env=ENV,
        text=True,
        capture_output=True,
        timeout=120,
    )


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, reference: Path) -> None:
    config = tmp_path / "tiny.yaml"
    save_config(tiny(), config)
    out = tmp_path / "run"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _killing_launcher("batch", 17),
            "train",
            str(config),
            "--out",
            str(out),
            "--quiet",
        ],
        env=ENV,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000010"
    assert not (out / "model.safetensors").exists()

    resumed = _cli("train", str(config), "--out", str(out), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_bit_identical(
        weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    )
    # metrics.csv: rows logged after checkpoint 10 by the killed run were redone, not doubled
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    ref_rows = list(csv.DictReader((reference / "metrics.csv").open()))
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_sigkill_during_save_leaves_previous_latest_loadable(
    tmp_path: Path, reference: Path
) -> None:
    config = tmp_path / "tiny.yaml"
    save_config(tiny(), config)
    out = tmp_path / "run"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _killing_launcher("save", 20),
            "train",
            str(config),
            "--out",
            str(out),
            "--quiet",
        ],
        env=ENV,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    latest = latest_checkpoint(out)
    assert latest == out / "checkpoints" / "iter_00000010"
    _, state = load_checkpoint(latest)
    assert state["iteration"] == 10
    assert not (out / "checkpoints" / "iter_00000020").exists()

    resumed = _cli("train", str(config), "--out", str(out), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_bit_identical(
        weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    )
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_full_disk_is_a_clear_error_and_keeps_latest(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if obj.get("iteration") == 20:
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError, match=r"cannot write a checkpoint.*No space left.*intact"):
        train(tiny(), out=out, quiet=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000010"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.txt",
        "iter_00000010",
        "latest.txt",
    ]
    train(tiny(), out=out, resume=True, quiet=True)
    assert_bit_identical(
        weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    )


def test_ctrl_c_saves_a_checkpoint_then_resume_matches(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_loop.random_batch
    calls = {"n": 0}

    def interrupting_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: handled at the end of iteration 7
        return real(*args, **kwargs)

    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(train_loop, "random_batch", interrupting_batch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(), out=out, quiet=True)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000007"
    monkeypatch.setattr(train_loop, "random_batch", real)
    train(tiny(), out=out, resume=True, quiet=True)
    assert_bit_identical(
        weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    )


def test_two_loader_workers_train_the_same_weights_as_none(tmp_path: Path, reference: Path) -> None:
    """Batch i comes from its own seed, whichever process draws it."""
    train(tiny("data.num_workers=2"), out=tmp_path / "run", quiet=True)
    assert_bit_identical(
        weights(tmp_path / "run" / "model.safetensors"), weights(reference / "model.safetensors")
    )


CTRL_C_WHILE_WAITING_FOR_13 = """
import os, signal, sys, time
import twostage.train.loop as t
real = t.draw_batch
def draw_batch(cfg, train_set, rank, it):
    if it == 13:  # in a worker: the training process waits for this batch meanwhile
        time.sleep(0.5)
        os.killpg(os.getpgid(0), signal.SIGINT)  # Ctrl-C as a terminal sends it: to all
        time.sleep(0.5)
    return real(cfg, train_set, rank, it)
t.draw_batch = draw_batch
from twostage.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_with_loader_workers_stops_cleanly_and_resume_is_bit_exact(
    tmp_path: Path, reference: Path
) -> None:
    """The workers leave Ctrl-C to the training process: the batch it waits for still comes,
    its step runs, a checkpoint is saved, and the workers are shut down."""
    config = tmp_path / "tiny.yaml"
    save_config(tiny("data.num_workers=2"), config)
    out = tmp_path / "run"
    launcher = [sys.executable, "-c", CTRL_C_WHILE_WAITING_FOR_13]
    stopped = subprocess.run(
        [*launcher, "train", str(config), "--out", str(out), "--quiet"],
        env=ENV,
        text=True,
        capture_output=True,
        timeout=120,
        start_new_session=True,  # its own process group: the signal reaches no one else
    )
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr == "twostage: interrupted\n"  # no worker's traceback
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000013"
    train(tiny("data.num_workers=2"), out=out, resume=True, quiet=True)
    assert_bit_identical(
        weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    )
    assert multiprocessing.active_children() == []  # the workers were shut down


def test_an_error_in_a_loader_worker_reaches_the_user_as_one_line(tmp_path: Path) -> None:
    """An image smaller than the patch, found by a worker: the one-line error, exit 2."""
    config = tmp_path / "big-patch.yaml"
    save_config(tiny("data.num_workers=2", "data.patch_size=48"), config)
    done = _cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "is smaller than the 48×48 training patch" in done.stderr
    assert "Traceback" not in done.stderr and "worker" not in done.stderr


def test_nan_loss_stops_naming_the_iteration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_loop.random_batch
    calls = {"n": 0}

    def poisoned_batch(*args, **kwargs):
        calls["n"] += 1
        x, y = real(*args, **kwargs)
        if calls["n"] == 13:
            y = y.clone()
            y[0, 0, 0, 0] = float("nan")
        return x, y

    out = tmp_path / "run"
    monkeypatch.setattr(train_loop, "random_batch", poisoned_batch)
    with pytest.raises(TrainingDiverged, match=r"iteration 13\b.*iter_00000010"):
        train(tiny(), out=out, quiet=True)
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000010"
    good, _ = load_checkpoint(out / "checkpoints" / "iter_00000010")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "model.safetensors").exists()


def test_huge_learning_rate_diverges_cleanly(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match="iteration"):
        train(tiny("optim.lr=1e30", "optim.lr_step=1000"), out=tmp_path / "run", quiet=True)


def test_ema_weights_are_the_final_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny("optim.ema=0.9", "optim.iterations=10"), out=out, quiet=True)
    raw, state = load_checkpoint(out / "checkpoints" / "iter_00000010")
    final = weights(out / "model.safetensors")
    ema = state["params_ema"]
    assert_bit_identical(final, {k: v for k, v in ema.items()})
    trained = [k for k in raw if k.endswith("weight") and "mean" not in k]
    assert any(not torch.equal(raw[k], final[k]) for k in trained)


def test_run_folder_guards(tmp_path: Path, reference: Path) -> None:
    with pytest.raises(UserError, match="already holds a training run"):
        train(tiny(), out=reference, quiet=True)
    with pytest.raises(UserError, match=r"config differs.*optim\.lr\b"):
        train(tiny("optim.lr=5e-4"), out=reference, resume=True, quiet=True)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to run folder"):
        train(tiny(), out=blocker / "run", quiet=True)


def test_resume_of_a_finished_run_extends_it(tmp_path: Path, reference: Path) -> None:
    # 20 iterations, then resumed to 30: the same as 30 iterations in one go
    out = tmp_path / "run"
    train(tiny("optim.iterations=20"), out=out, quiet=True)
    train(tiny("optim.iterations=30"), out=out, resume=True, quiet=True)
    assert_bit_identical(
        weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    )


def test_resume_refuses_a_checkpoint_with_crafted_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    out = tmp_path / "run"
    train(tiny("optim.iterations=10"), out=out, quiet=True)
    latest = latest_checkpoint(out)
    assert latest is not None
    state = weights(latest / "model.safetensors")
    state["head.0.weight"] = torch.ones_like(state["head.0.weight"], dtype=torch.bool)
    save_file(state, str(latest / "model.safetensors"))
    with pytest.raises(UserError, match=r"model\.safetensors.*head\.0\.weight \(torch\.bool\)"):
        train(tiny("optim.iterations=20"), out=out, resume=True, quiet=True)


def test_scale_mismatch_is_an_error(tmp_path: Path) -> None:
    cfg = tiny()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, scale=3))
    with pytest.raises(UserError, match=r"model\.scale=3.*scale 2"):
        train(cfg, out=tmp_path / "run", quiet=True)


def test_fp16_needs_cuda(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"run\.amp=fp16 needs a CUDA device"):
        train(tiny("run.amp=fp16"), out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_amp_auto_trains_bf16_only_where_it_is_native(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.amp=auto (the cpu profile's): fp32 on a CPU without native bf16 (bit-identical to
    run.amp=none), bf16 on one with it; config.yaml records what ran, and the same `auto`
    config resumes on the same machine."""
    caps = {"avx2": True, "avx512_bf16": False, "amx_bf16": False, "amx_tile": False}
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: caps)
    train(tiny("run.amp=auto"), out=tmp_path / "avx2", quiet=True)
    assert load_config(tmp_path / "avx2" / "config.yaml").run.amp == "none"
    fp32 = weights(reference / "model.safetensors")
    assert_bit_identical(weights(tmp_path / "avx2" / "model.safetensors"), fp32)
    caps["avx512_bf16"] = True
    native = tmp_path / "native"
    train(tiny("run.amp=auto"), out=native, quiet=True)
    assert load_config(native / "config.yaml").run.amp == "bf16"
    ours = weights(native / "model.safetensors")
    assert max((ours[k] - fp32[k]).abs().max().item() for k in fp32) > 1e-3
    train(tiny("run.amp=auto", "optim.iterations=32"), out=native, resume=True, quiet=True)
    assert load_config(native / "config.yaml").run.amp == "bf16"


def test_bf16_on_cpu_with_channels_last_resumes_exactly(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.amp=bf16 on the CPU (autocast; weights, Adam and loss in fp32) with NHWC
    activations: interrupted at 7 and resumed, it ends bit-identical to an uninterrupted
    bf16 run, and it is really bf16 (it differs from the fp32 run by more than NHWC rounding)."""
    bf16 = ("run.amp=bf16", "run.channels_last=true")
    whole = tmp_path / "whole"
    train(tiny(*bf16), out=whole, quiet=True)
    real, calls = train_loop.random_batch, {"n": 0}

    def interrupting_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_loop, "random_batch", interrupting_batch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(*bf16), out=out, quiet=True)
    monkeypatch.setattr(train_loop, "random_batch", real)
    train(tiny(*bf16), out=out, resume=True, quiet=True)
    ours = weights(out / "model.safetensors")
    assert_bit_identical(ours, weights(whole / "model.safetensors"))
    fp32 = weights(reference / "model.safetensors")
    assert max((ours[k] - fp32[k]).abs().max().item() for k in fp32) > 1e-3


def test_cuda_graph_is_chosen_only_where_it_works() -> None:
    """run.cuda_graph (opt-in): captured on CUDA for none/bf16, single process, eager
    modules; the reason otherwise. On the CPU the switch is ignored: no graph, float lr."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    cfg = tiny("run.cuda_graph=true")
    assert cfg.run.cuda_graph and tiny().run.cuda_graph is False
    assert train_mod.graph_blocker(cfg, cuda) is None
    assert train_mod.graph_blocker(tiny("run.amp=bf16"), cuda) is None
    assert "GradScaler" in train_mod.graph_blocker(tiny("run.amp=fp16"), cuda)
    assert "compile" in train_mod.graph_blocker(tiny("run.compile=true"), cuda)
    assert "DDP" in train_mod.graph_blocker(cfg, cuda, Dist(rank=0, world=2))
    assert "CUDA device" in train_mod.graph_blocker(cfg, cpu)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, fused=True)
    assert step_graph(cfg, cpu, Dist(), opt, step=lambda *a, **k: None) is None
    assert opt.param_groups[0]["lr"] == 1e-3 and not opt.param_groups[0]["capturable"]


def test_optimizer_state_of_a_graph_run_loads_anywhere() -> None:
    """A CUDA-graph run's Adam holds a tensor lr and capturable=True; its checkpoint stores a
    float lr and capturable=False, so an eager (CPU) resume continues as usual."""
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([param], lr=torch.tensor(2e-3), capturable=True, fused=True)
    param.grad = torch.ones(3)
    opt.step()
    saved = portable_optimizer_state(opt.state_dict())
    assert saved["param_groups"][0]["lr"] == pytest.approx(2e-3)
    assert saved["param_groups"][0]["capturable"] is False
    eager = torch.optim.Adam([torch.nn.Parameter(param.detach().clone())], lr=1.0, fused=True)
    eager.load_state_dict(saved)
    set_lr(eager, 5e-4)
    assert eager.param_groups[0]["lr"] == 5e-4
    set_lr(opt, 5e-4)  # a graph's tensor lr is refilled in place
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    assert opt.param_groups[0]["lr"].item() == pytest.approx(5e-4)


def test_smoke_config_trains_through_the_cli_function(tmp_path: Path) -> None:
    from twostage.api import train_network

    path = train_network(
        REPO / "configs" / "train" / "smoke.yaml",
        overrides=["optim.iterations=6", "log.checkpoint_every=3", "run.threads=1"],
        out=tmp_path / "smoke",
        quiet=True,
    ).model_path
    assert path == tmp_path / "smoke" / "model.safetensors" and path.is_file()
    assert latest_checkpoint(tmp_path / "smoke").name == "iter_00000006"


def test_channels_last_on_cpu_trains_the_same_network(tmp_path: Path, reference: Path) -> None:
    """run.channels_last on the CPU (NHWC convs in oneDNN) changes only float rounding: after
    30 iterations the weights agree with the contiguous reference run to ~1e-4, and the stored
    weights are ordinary contiguous tensors."""
    out = tmp_path / "run"
    train(tiny("run.channels_last=true"), out=out, quiet=True)
    ours, ref = weights(out / "model.safetensors"), weights(reference / "model.safetensors")
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key].is_contiguous(), key
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-3, atol=1e-4, msg=key)


# ---------------------------------------------------------------------------------------------
# run folders the trainer does not own


def _copy(run: Path, out: Path) -> Path:
    shutil.copytree(run, out)
    return out


def test_fresh_run_refuses_a_folder_it_does_not_own(tmp_path: Path) -> None:
    """Files a user keeps in the folder (even under the names a run writes) are never written
    over without --overwrite; with it only the run's own names are, the rest stays."""
    out = tmp_path / "mine"
    out.mkdir()
    mine: dict[str, str] = {}
    first = {"config.yaml": "my notes\n", "metrics.csv": "a,b\n1,2\n"}
    for extra in (first, {"model.safetensors": "w"}, {"notes.txt": "keep"}):
        mine.update(extra)
        for name, text in extra.items():
            (out / name).write_text(text)
        with pytest.raises(UserError, match=r"mine holds .*choose another --out, or pass --over"):
            train(tiny("optim.iterations=10"), out=out, quiet=True)
        assert {n: (out / n).read_text() for n in mine} == mine
    train(tiny("optim.iterations=10"), out=out, overwrite=True, quiet=True)
    assert load_config(out / "config.yaml") == tiny("optim.iterations=10")
    assert (out / "notes.txt").read_text() == "keep"


def test_fresh_run_refuses_a_run_of_another_config(tmp_path: Path, reference: Path) -> None:
    """A run killed before its first checkpoint may be started afresh with its own config,
    not with another one; a finished run needs --resume or --overwrite."""
    out = tmp_path / "run"
    out.mkdir()
    save_config(tiny("optim.iterations=10"), out / "config.yaml")
    (out / "metrics.csv").write_text("iteration,loss\n5,0.1\n")
    with pytest.raises(UserError, match=r"another config \(optim\.lr differ"):
        train(tiny("optim.iterations=10", "optim.lr=5e-4"), out=out, quiet=True)
    train(tiny("optim.iterations=10"), out=out, quiet=True)  # the same config: afresh
    with pytest.raises(UserError, match=r"already holds a training run.*--overwrite"):
        train(tiny("optim.iterations=10"), out=out, quiet=True)


def test_overwrite_deletes_only_the_checkpoints_a_run_wrote(
    tmp_path: Path, reference: Path
) -> None:
    out = _copy(reference, tmp_path / "run")
    (out / "notes.txt").write_text("keep")
    (out / "checkpoints" / "iter_1").mkdir()
    (out / "checkpoints" / "iter_1" / "mine.txt").write_text("keep")
    train(tiny("optim.iterations=10"), out=out, overwrite=True, quiet=True)
    kept = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["iter_00000010", "iter_1"]  # the old run's 20, 30 and best are gone
    assert (out / "checkpoints" / "best.txt").read_text().strip() == "iter_00000010"
    assert (out / "checkpoints" / "iter_1" / "mine.txt").read_text() == "keep"
    assert (out / "notes.txt").read_text() == "keep"
    assert [r["iteration"] for r in csv.DictReader((out / "metrics.csv").open())] == ["5", "10"]


def test_a_symlinked_checkpoints_folder_is_refused_and_never_written_through(
    tmp_path: Path, reference: Path
) -> None:
    """checkpoints/ linked to another run's: --overwrite would replace that run's checkpoints
    and --resume would write into it; both are refused and the other run stays as it was."""
    other = _copy(reference, tmp_path / "other")
    before = {p: p.read_bytes() for p in (other / "checkpoints").rglob("*") if p.is_file()}
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").symlink_to(other / "checkpoints")
    for kwargs in ({"overwrite": True}, {"resume": True}, {}):
        with pytest.raises(UserError, match=r"checkpoints is a symbolic link") as err:
            train(tiny("optim.iterations=10"), out=out, quiet=True, **kwargs)
        assert "\n" not in str(err.value)
    assert {p: p.read_bytes() for p in (other / "checkpoints").rglob("*") if p.is_file()} == before


def test_keep_last_deletes_only_checkpoint_folders_the_trainer_wrote(
    tmp_path: Path, reference: Path
) -> None:
    """Folders named like checkpoints (iter_1, iter_7) that the trainer did not write survive
    the keep-last clean-up; one it would have to replace (iter_00000001) is refused up front."""
    out = _copy(reference, tmp_path / "run")
    root = out / "checkpoints"
    for name in ("iter_1", "iter_7"):
        (root / name).mkdir()
        (root / name / "mine.txt").write_text(name)
    train(tiny("optim.iterations=50"), out=out, resume=True, quiet=True)
    assert latest_checkpoint(out) == root / "iter_00000050"
    assert not (root / "iter_00000030").exists()  # the trainer's own: cleaned up
    for name in ("iter_1", "iter_7"):
        assert (root / name / "mine.txt").read_text() == name
    (root / "iter_00000001").mkdir()
    (root / "iter_00000001" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match=r"iter_00000001 holds no twostage-checkpoint.txt"):
        train(tiny("optim.iterations=60"), out=out, resume=True, quiet=True)
    assert (root / "iter_00000001" / "mine.txt").read_text() == "keep"


def test_resume_is_checked_against_the_config_stored_in_the_checkpoint(
    tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited OUT/config.yaml does not make a changed lr resumable: the checkpoint holds the
    config it was trained with. An unreadable config.yaml is a one-line error, not a skip."""
    out = _copy(reference, tmp_path / "run")
    edited = tiny("optim.lr=0.5", "optim.iterations=40")
    save_config(edited, out / "config.yaml")
    with pytest.raises(UserError, match=r"config differs from .*iter_00000030's in optim\.lr\b"):
        train(edited, out=out, resume=True, quiet=True)
    args = ["train", str(out / "config.yaml"), "--resume", "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and len(err.splitlines()) == 1
    (out / "config.yaml").write_text("optim: [\n")  # unparseable
    for cfg in (tiny("optim.iterations=40"), tiny("data.patch_size=8", "optim.iterations=40")):
        with pytest.raises(UserError, match=r"cannot resume: .*config\.yaml.*invalid YAML"):
            train(cfg, out=out, resume=True, quiet=True)
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000030"


def test_resume_refuses_a_checkpoint_without_a_stored_config(
    tmp_path: Path, reference: Path
) -> None:
    """A training state written before the config was stored in it cannot be checked, so it
    is not resumed (the message says what to delete)."""
    out = _copy(reference, tmp_path / "run")
    state_path = out / "checkpoints" / "iter_00000030" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    assert json.loads(state.pop("config")) == json.loads(train_mod.config_json(tiny()))
    torch.save(state, state_path)
    with pytest.raises(UserError, match=r"records no config.*delete .*checkpoints"):
        train(tiny("optim.iterations=40"), out=out, resume=True, quiet=True)


def test_a_run_folder_in_use_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from twostage.ops.files import folder_lock

    out = tmp_path / "run"
    with folder_lock(out, "run folder"):
        with pytest.raises(UserError, match=rf"in use by twostage pid {os.getpid()} on ") as err:
            train(tiny("optim.iterations=10"), out=out, quiet=True)
        assert socket.gethostname() in str(err.value)
    assert not (out / "config.yaml").exists()
    train(tiny("optim.iterations=10"), out=out, quiet=True)  # released


# ------------- resume from what a killed run left, stale temporaries, a full disk, a wrong init


def tiny20(*overrides: str) -> TrainConfig:
    """The `tiny` profile's own settings (rcan-tiny, batch 2 of 8², loss logged every 5,
    checkpoints every 10) for 20 iterations on the folders above."""
    return apply_overrides(
        profile_defaults("tiny"), [*TINY_DATA, "optim.iterations=20", *overrides]
    )


@pytest.fixture(scope="module")
def reference20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted `tiny20` run: what every resumed run below must equal."""
    out = tmp_path_factory.mktemp("reference20") / "run"
    train(tiny20(), out=out, quiet=True)
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


def test_resume_without_latest_txt_uses_the_newest_complete_checkpoint(
    tmp_path: Path, reference20: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train(tiny20("optim.iterations=10"), out=out, quiet=True)
    (out / "checkpoints" / "latest.txt").unlink()  # killed before its first pointer moved
    (out / "model.safetensors").unlink()
    (out / "checkpoints" / "iter_00000020").mkdir()  # begun, never completed
    train(tiny20(), out=out, resume=True, quiet=True)
    assert "no checkpoint pointer" in capsys.readouterr().out
    _same_run(out, reference20)


def test_resume_without_any_complete_checkpoint_starts_from_scratch(
    tmp_path: Path, reference20: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    (out / "checkpoints" / "iter_00000010").mkdir(parents=True)
    (out / "checkpoints" / "iter_00000010" / "model.safetensors").write_bytes(b"half")
    (out / "checkpoints" / "iter_00000010" / CHECKPOINT_MARK).write_text("")  # ours, cut short
    train(tiny20(), out=out, resume=True, quiet=True)
    assert "starting from scratch" in capsys.readouterr().out
    _same_run(out, reference20)


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"iter_99999999\n", b"../../etc\n"])
def test_garbage_latest_txt_is_unreadable_not_missing(tmp_path: Path, garbage: bytes) -> None:
    out = tmp_path / "run"
    train(tiny20("optim.iterations=10"), out=out, quiet=True)
    (out / "checkpoints" / "latest.txt").write_bytes(garbage)
    with pytest.raises(UserError, match=r"latest\.txt is unreadable") as err:
        train(tiny20(), out=out, resume=True, quiet=True)
    assert "missing" not in str(err.value)


def test_first_loss_after_a_kill_and_resume_equals_the_uninterrupted_runs(
    tmp_path: Path, reference20: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM at iteration 7 saves a checkpoint there; the resumed run's loss at 10 must
    average iterations 6-10, as the uninterrupted run's does, not only 8-10."""
    real, calls = train_loop.random_batch, {"n": 0}

    def terminating_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 7:
            signal.raise_signal(signal.SIGTERM)  # handled at the end of iteration 7
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_loop, "random_batch", terminating_batch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny20(), out=out, quiet=True)
    assert latest_checkpoint(out) == out / "checkpoints" / "iter_00000007"
    monkeypatch.setattr(train_loop, "random_batch", real)
    train(tiny20(), out=out, resume=True, quiet=True)
    _same_run(out, reference20)


def test_training_removes_stale_temporaries_and_respects_the_umask(
    tmp_path: Path, dead_pid: int
) -> None:
    out, dead = tmp_path / "run", dead_pid
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
        train(tiny20("optim.iterations=10"), out=out, quiet=True)
    finally:
        os.umask(old)
    assert [p for p in out.rglob(".*")] == []
    folder = out / "checkpoints" / "iter_00000010"
    assert folder.stat().st_mode & 0o777 == 0o750  # mkdtemp's would be 0700
    assert (folder / "state.pt").stat().st_mode & 0o777 == 0o640


def test_full_disk_while_saving_training_state_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo_pairs: list[str]
) -> None:
    overrides = photo_pairs
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


def test_init_of_another_architecture_leaves_no_config(tmp_path: Path, edsr_file: Path) -> None:
    init = edsr_file  # EDSR ×2, 8 channels; the tiny profile trains rcan-tiny
    out = tmp_path / "run"
    with pytest.raises(
        CheckpointError, match=r"the weights are EDSR ×2 \(1 block, 8 ch\), but RCAN"
    ):
        train(tiny20(f"model.init={init}"), out=out, quiet=True)
    assert not (out / "config.yaml").exists()
    with pytest.raises(UserError, match=r"model\.scale=3"):
        train(tiny20("model.scale=3"), out=out, quiet=True)
    assert not (out / "config.yaml").exists()
