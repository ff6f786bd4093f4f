"""The benchmark scripts: fair comparison, timing order, report verdicts, and that they run."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))  # the package benchmarks/bench and its sibling reference.py


def _load(name: str) -> types.ModuleType:
    """benchmarks/<name>.py under a unique module name (plain scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"twostage_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


reference = _load("reference")

from bench import harness, nets, report, sections  # noqa: E402
from bench import targets as bench_targets  # noqa: E402
from bench import train as bench_train  # noqa: E402

import twostage.train as twostage_train  # noqa: E402
from twostage.config import apply_overrides, profile_defaults  # noqa: E402
from twostage.models import build_model, preset_spec  # noqa: E402


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_reference_rcan_with_our_weights_computes_the_same_function(scale: int) -> None:
    # The benchmark's ours/reference ratio is only meaningful if both run the same network.
    spec = preset_spec("rcan-tiny", scale=scale)
    torch.manual_seed(scale)
    ours = build_model(spec).eval()
    ref = reference.ReferenceRCAN(
        scale=scale,
        n_resgroups=spec.n_resgroups,
        n_resblocks=spec.n_resblocks,
        n_feats=spec.n_feats,
        reduction=spec.reduction,
    ).eval()
    ref.net.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 12, 10)
    keep = x.clone()
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.equal(x, keep)  # the wrapper protects the caller's input from spandrel
    assert a.shape == (2, 3, 12 * scale, 10 * scale)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_median_times_alternates_and_counts_runs() -> None:
    calls: list[str] = []
    times = harness.median_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=2, repeats=3
    )
    assert calls == ["a", "b"] * 5  # round-robin: load changes hit both alike
    assert [len(v) for v in times.values()] == [3, 3]


def test_speed_row_ratios() -> None:
    row = bench_train.speed_row(
        "rcan-paper",
        2,
        {"ours": [2.0, 1.0, 3.0], "reference": [3.0, 3.0]},
        gflop=100.0,
        gemm=200.0,
        repeats=3,
    )
    assert row["seconds"] == 2.0  # median
    assert row["gflops"] == pytest.approx(50.0)
    assert row["of_gemm"] == pytest.approx(0.25)
    assert row["speedup"] == pytest.approx(1.5)  # reference time / ours


def _section(rows: list[dict]) -> dict:
    return {
        "command": "python benchmarks/run.py",
        "when": "2026-01-01T00:00",
        "load_before": {"loadavg": [0.1, 0.1, 0.1], "others": []},
        "rows": rows,
    }


def test_render_states_verdicts_from_the_numbers() -> None:
    train = [
        {
            "preset": "rcan-paper",
            "scale": 2,
            "batch": 8,
            "patch": 96,
            "repeats": 3,
            "seconds": 10.0,
            "gflops": 95.0,
            "of_gemm": 0.95,
            "ref_seconds": 9.0,
            "speedup": 0.9,
            "note": "x",
        }
    ]
    infer = [
        {
            "setup": "ours: channels_last",
            "size": 256,
            "seconds": 1.0,
            "mp_per_s": 0.26,
            "gflops": 100.0,
            "of_gemm": 0.5,
            "vs_reference_eager": 1.3,
            "repeats": 5,
        },
        {
            "setup": "ours: channels_last + bf32 convs",
            "size": 256,
            "seconds": 0.5,
            "mp_per_s": 0.5,
            "gflops": 200.0,
            "of_gemm": 1.0,
            "vs_reference_eager": 2.6,
            "repeats": 5,
        },
    ]
    text = report.render(
        {
            "machine": {"cpu": "Test CPU"},
            "sections": {"train": _section(train), "infer": _section(infer)},
        }
    )
    lines = text.splitlines()

    def target(prefix: str) -> str:
        return next(ln for ln in lines if ln.startswith(f"| {prefix}"))

    assert "0.90×" in target("CPU train step rcan-paper ×2 ≥ 1.0×")
    assert "**not met**" in target("CPU train step rcan-paper ×2 ≥ 1.0×")
    assert "**met**" in target("CPU train step rcan-paper ×2 ≥ 90 %")
    # the fp32 target takes the best fp32 set-up, not the reduced-precision one
    assert "1.30×" in target("CPU inference ≥ 1.25×") and "**met**" in target(
        "CPU inference ≥ 1.25×"
    )
    assert "50 %" in target("CPU inference ≥ 90 %") and "**not met**" in target(
        "CPU inference ≥ 90 %"
    )
    assert "Test CPU" in text
    assert "Not measured yet (`python benchmarks/run.py --only demo`)" in text


def test_report_shows_every_section_of_the_one_list_in_its_order(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(harness, "RESULTS", tmp_path)  # no GPU results either
    text = report.render({"machine": {"cpu": "x"}, "sections": {}})
    heads = [ln for ln in text.splitlines() if ln.startswith("## ")]
    titles = [f"## {s.title}" for s in sections.SECTIONS]
    assert [h for h in heads if h in titles] == titles
    for s in sections.SECTIONS:
        assert f"Not measured yet (`python benchmarks/run.py --only {s.name}`)." in text
    assert "## Targets" not in text  # nothing measured: no target row


def test_gpu_target_takes_the_best_row_of_the_last_result_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    for name, mfus in (("gpu-a.json", [0.5]), ("gpu-b.json", [0.25, None, 0.375])):
        train = [
            {"scale": 2, "mode": "fp32", "step_ms": 9.0, "tflops": 1.0, "mfu_measured_matmul": 0.1}
            | {"mfu_datasheet": m}
            for m in mfus
        ]
        (tmp_path / name).write_text(json.dumps({"train": train}))
    text = report.render({"machine": {"cpu": "x"}, "sections": {}})
    assert "## Targets\n" in text
    row = "| GPU ≥ 40 % MFU (bf16 dense datasheet peak; best row of gpu-b.json) | 37.5 % |"
    assert row + " **not met** |" in text


def test_gpu_section_names_the_result_files_that_timed_a_private_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    gpu = _load("gpu")
    for name, script in (("gpu-a.json", "gpu.py v2"), ("gpu-b.json", gpu.SCRIPT)):
        (tmp_path / name).write_text(json.dumps({"script": script, "train": []}))
    text = "\n".join(report.render_gpu())
    assert "times the trainer's own step" in text
    assert "; gpu-a.json: a stand-alone copy of it." in text
    (tmp_path / "gpu-b.json").unlink()
    assert "stand-alone step (`benchmarks/gpu.py`" in "\n".join(report.render_gpu())


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def test_run_smoke_writes_results_and_report(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "cpu.json", tmp_path / "B.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--smoke",
            "--only",
            "train,infer,data,degrade",
            "--json",
            str(out_json),
            "--write",
            str(out_md),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out_json.read_text())
    assert set(results["sections"]) == {"gemm", "train", "infer", "data", "degrade"}
    for name in ("train", "infer", "data", "degrade"):
        assert "error" not in results["sections"][name], results["sections"][name]
    train = results["sections"]["train"]["rows"]
    assert {r["preset"] for r in train} == {"rcan-paper", "rcan-cpu", "edsr-cpu"}
    assert all(r["seconds"] > 0 for r in train)
    assert all("speedup" in r for r in train if r["preset"].startswith("rcan"))
    assert "## Training step, ours vs the reference RCAN" in out_md.read_text()
    degrade = results["sections"]["degrade"]["rows"]
    assert [r["degradation"] for r in degrade] == ["realistic", "realistic-mix", "camera"]
    for r in degrade:
        assert r["degrade_ms"] > 0 and r["ratio"] == pytest.approx(r["degrade_ms"] / r["step_ms"])
    assert "`realistic` degraded on the fly ≤ 10 %" in out_md.read_text()
    assert "`realistic-mix` degraded on the fly ≤ 10 %" in out_md.read_text()


def test_gpu_script_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--dry-run", "--no-compile", "--json", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {r["mode"]: r for r in result["train"]}
    assert rows["fp32"]["step_ms"] > 0 and rows["bf16-b32"]["batch"] == 32
    assert "CUDA" in rows["fp32-graph"]["error"]  # graph rows need a GPU; reported, not fatal
    assert result["inference_x2_mps"] > 0


def test_precision_section_smoke_and_targets(tmp_path: Path) -> None:
    from twostage.models import preset_spec
    from twostage.pipeline import Pipeline

    torch.manual_seed(0)
    Pipeline(None, build_model(preset_spec("rcan-tiny", scale=4))).save_bundle(
        tmp_path / "tiny-x4.safetensors"
    )
    out_json, out_md = tmp_path / "cpu.json", tmp_path / "B.md"
    args = ["--smoke", "--only", "precision", "--bundles", str(tmp_path), "--json", str(out_json)]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), *args, "--write", str(out_md)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    section = json.loads(out_json.read_text())["sections"]["precision"]
    assert "error" not in section, section
    rows = section["rows"]
    speed = [r for r in rows if r["kind"] == "speed"]
    assert {r["preset"] for r in speed} == {"rcan-paper", "rcan-cpu"}
    assert sum(r["auto"] for r in speed) == 2  # one mode per network is what auto picks
    quality = [r for r in rows if r["kind"] == "quality"]
    assert {r["test_set"] for r in quality} == {"samples-realistic-mix", "samples-gaussian-aniso"}
    assert all(r["psnr_auto_vs_fp32"] >= 45 for r in quality)  # tiny net: bf16 ≈ 62 dB
    text = out_md.read_text()
    assert "## Inference precision: restore --precision" in text
    assert "| auto ≥ 45 dB PSNR against the fp32 output |" in text

    # The verdicts come from the numbers: 3.2× met, a 0.06 dB loss not.
    fake = [
        {
            "kind": "speed",
            "preset": "rcan-paper",
            "auto": True,
            "vs_reference": 3.2,
            "vs_fp32": 2.9,
        },
        {"kind": "speed", "preset": "rcan-cpu", "auto": True, "vs_reference": 1.5, "vs_fp32": 0.9},
        *[
            {
                "kind": "quality",
                "bundle": "b",
                "test_set": "t",
                "psnr_fp32": 30.0,
                "psnr_auto": 30.0 - d,
                "psnr_auto_vs_fp32": 50.0,
            }
            for d in (0.05, 0.07)
        ],
    ]
    targets = {
        row[0]: (row[1], row[2]) for row in bench_targets.target_rows({"precision": {"rows": fake}})
    }
    assert targets["CPU restore --precision auto ≥ 3× the fp32 reference (rcan-paper ×2)"] == (
        "3.20×",
        "**met**",
    )
    assert targets["restore --precision auto ≥ 1.0× fp32 (every network)"][1] == "**not met**"
    assert targets["auto within 0.05 dB of fp32 against GT (demo bundles)"] == (
        "0.060 dB",
        "**not met**",
    )


def test_render_variants_states_the_trainers_bf16_ratio() -> None:
    def row(variant: object, seconds: float) -> dict:
        return {
            "preset": "edsr-cpu",
            "scale": 4,
            "batch": 8,
            "patch": 32,
            "variant": variant.label,  # type: ignore[attr-defined]
            "seconds": seconds,
            "gflops": 10.0,
            "of_gemm": 0.1,
            "vs_contiguous": 1.0,
            "repeats": 2,
        }

    rows = [
        row(nets.Variant(), 0.7),
        row(bench_train.TRAINER_FP32, 0.5),
        row(bench_train.TRAINER_BF16, 0.625),
    ]
    text = report.render({"machine": {"cpu": "x"}, "sections": {"variants": _section(rows)}})
    assert "edsr-cpu ×4: `run.amp: bf16` trains 0.80× as fast as fp32" in text


def test_benchmark_train_step_runs_the_trainers_make_step(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    made = []

    def spy(cfg, net, device):  # type: ignore[no-untyped-def]
        made.append(real_make_step(cfg, net, device))
        return made[-1]

    real_make_step = bench_train.make_step
    assert real_make_step is twostage_train.make_step
    monkeypatch.setattr(bench_train, "make_step", spy)
    net = build_model(preset_spec("rcan-tiny", scale=2))
    step = bench_train.train_step(net, batch=2, patch=8, variant=nets.Variant(bf16=True))
    for _ in range(3):
        step()
    assert len(made) == 1 and made[0].net is net
    assert made[0].cfg.run.amp == "bf16"
    assert made[0].cfg.optim.betas == (0.9, 0.99) and made[0].cfg.optim.eps == 1e-8
    adam = made[0].optimizer.state[next(net.parameters())]
    assert int(adam["step"]) == 3  # the timed callable drives the trainer's optimizer


def test_benchmark_train_step_updates_weights_as_the_trainer_does_bit_for_bit() -> None:
    batch, patch, steps = 2, 8, 3
    torch.manual_seed(0)
    benched = build_model(preset_spec("rcan-tiny", scale=2))
    trained = copy.deepcopy(benched)
    before = copy.deepcopy(benched.state_dict())
    step = bench_train.train_step(
        benched, batch=batch, patch=patch, variant=nets.Variant(channels_last=True), seed=5
    )
    for _ in range(steps):
        step()

    cfg = apply_overrides(profile_defaults("tiny"), ["optim.lr=1e-4", "run.channels_last=true"])
    trained.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(batch, 3, patch, patch, generator=g)
    y = torch.rand(batch, 3, 2 * patch, 2 * patch, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    trainer_step = twostage_train.make_step(cfg, trained, torch.device("cpu"))
    for it in range(1, steps + 1):
        trainer_step(it, x, y)
    ours, theirs = benched.state_dict(), trained.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    assert any(not torch.equal(ours[k], before[k]) for k in ours)  # the steps trained


def test_gpu_sh_cpu_smoke_runs_the_real_trainer_and_writes_json(tmp_path: Path) -> None:
    env = {**_env(), "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--device", "cpu", "--tiny", "--steps", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    result = json.loads((tmp_path / "gpu-trainer.json").read_text())
    assert {"gpu", "torch", "preset", "steps", "losses", "comparison", "timing", "speedup"} <= set(
        result
    )
    assert result["preset"] == "rcan-tiny" and result["steps"] == 2
    assert result["graph_active"] is False and "CUDA" in result["graph_blocker"]
    assert result["comparison"]["equal"] and result["comparison"]["steps"] == 2
    for mode in ("eager", "graph"):
        assert len(result["losses"][mode]) == 2 and all(v > 0 for v in result["losses"][mode])
        timing = result["timing"][mode]
        assert timing["step_ms"] > 0 and timing["tflops"] > 0
        assert timing["mfu_tf32_datasheet"] is None  # no datasheet peak for a CPU
    # the losses are the trainer's own, read from the run's metrics.csv (one row per step)
    with open(tmp_path / "equality-eager-metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["loss"]) for r in rows] == result["losses"]["eager"]
    assert "EQUAL" in (tmp_path / "gpu-trainer.md").read_text()


def test_gpu_trainer_comparison_flags_a_mismatch() -> None:
    gpu_trainer = _load("gpu_trainer")
    same = gpu_trainer.compare_losses([0.5, 0.25, 0.125], [0.5, 0.25, 0.125], rtol=1e-3)
    assert same["equal"] and same["identical_steps"] == 3 and same["first_mismatch"] is None
    close = gpu_trainer.compare_losses([0.5, 0.25], [0.5002, 0.25], rtol=1e-3)
    assert close["equal"] and close["max_abs_diff"] == pytest.approx(2e-4)
    off = gpu_trainer.compare_losses([0.5, 0.25, 0.125], [0.5, 0.26, 0.125], rtol=1e-3)
    assert not off["equal"] and off["first_mismatch"] == 2 and off["mismatches"] == 1
    assert off["max_rel_diff"] == pytest.approx(0.04)
    assert not gpu_trainer.compare_losses([0.5, float("nan")], [0.5, float("nan")], rtol=1)["equal"]
    assert not gpu_trainer.compare_losses([0.5, 0.25], [0.5], rtol=1e-3)["equal"]  # cut short
    assert not gpu_trainer.compare_losses([], [], rtol=1e-3)["equal"]


def test_gpu_trainer_exits_1_and_says_so_on_a_mismatch(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    gpu_trainer = _load("gpu_trainer")
    real = gpu_trainer.compare_losses

    def shifted(eager: list[float], graph: list[float], *, rtol: float) -> dict:
        return real(eager, [v * 1.1 for v in graph], rtol=rtol)

    monkeypatch.setattr(gpu_trainer, "compare_losses", shifted)
    args = ["--device", "cpu", "--tiny", "--steps", "2", "--out", str(tmp_path)]
    assert gpu_trainer.main(args) == 1
    assert "MISMATCH" in capsys.readouterr().err
    assert (
        json.loads((tmp_path / "gpu-trainer.json").read_text())["comparison"]["first_mismatch"] == 1
    )


def test_gpu_section_says_the_trainer_check_has_not_run_until_a_result_exists(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    gpu_trainer = _load("gpu_trainer")
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    text = "\n".join(report.render_gpu())
    assert "off by default" in text and "not yet run" in text
    result = {
        "device": "cuda:0",
        "gpu": "NVIDIA H100 80GB HBM3",
        "torch": "2.11",
        "preset": "rcan-paper",
        "scale": 2,
        "batch": 8,
        "patch": 96,
        "amp": "none",
        "steps": 200,
        "graph_active": True,
        "graph_blocker": None,
        "comparison": gpu_trainer.compare_losses([0.1, 0.09], [0.1, 0.2], rtol=1e-3),
        "weights_max_abs_diff": 0.5,
        "timing": {
            m: {
                "step_ms": ms,
                "tflops": 40.0,
                "mfu_tf32_datasheet": 0.08,
                "mfu_bf16_datasheet": 0.04,
            }
            for m, ms in (("eager", 80.0), ("graph", 40.0))
        },
        "speedup": 2.0,
    }
    (tmp_path / "gpu_trainer-h100.json").write_text(json.dumps(result))
    text = "\n".join(report.render_gpu())
    assert "not yet run" not in text and "**MISMATCH**" in text and "first mismatch 2" in text
    assert "| graph | 40.0 |" in text
