"""GPU benchmark: the paper's RCAN train step and inference on one CUDA card (H100/H200).

Measures, in one short run (about 3 minutes; `--budget-s` skips what does not fit):
- the card's bf16 dense matmul rate (8192^3, random data) and device copy bandwidth;
- the trainer's own `rcan-paper` x2 train step (`twostage.train.make_step`: fused Adam, L1,
  batch 8 of 96x96 LR patches) in fp32 (TF32), bf16 autocast (run.amp), bf16 + channels_last,
  each eager and replayed as the trainer's CUDA graph (run.cuda_graph: forward, backward,
  Adam), the host time spent issuing an eager step (when it is close to the
  step time, the GPU waits for the CPU to launch kernels), a profile of one eager step
  (kernel count, GPU-busy time, top kernels), batch 32 (how MFU grows with work per kernel),
  x1, and torch.compile(mode="reduce-overhead") last; MFU against the bf16 datasheet peak and
  the measured matmul rate; projected time for the paper's 150k iterations;
- inference megapixels/s of `rcan-paper` x2 and of the map2 + x2 pipeline on 512x512 inputs.

Every variant runs in its own try/except and the JSON is rewritten after every row, so a
failure or a timeout loses only what was not measured yet. `--dry-run` runs the same code on
the CPU with a tiny preset and few repeats (CUDA-graph rows are reported as skipped there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from twostage.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from twostage.data.datasets import SamplesData
from twostage.models import build_model, conv_macs, preset_spec
from twostage.train import graph_blocker, make_step
from twostage.train.cuda_graph import GRAPH_WARMUP
from twostage.train.dist import Dist

BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense bf16, SXM datasheet
TF32_PEAK_TFLOPS = {"H100": 494.7, "H200": 494.7}  # dense TF32, SXM datasheet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(
    fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int
) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _issue_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median host time to *issue* one call (no sync inside): for an eager step, the CPU cost
    of launching its kernels. Close to the step time means the GPU waits for the CPU."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    _sync(device)
    return statistics.median(times)


def matmul_tflops(device: torch.device, n: int, repeats: int) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sec = _median_seconds(lambda: a @ b, device, warmup=3, repeats=repeats)
    return 2 * n**3 / sec / 1e12


def copy_tbps(device: torch.device, mbytes: int) -> float:
    src = torch.randn(mbytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    sec = _median_seconds(lambda: dst.copy_(src), device, warmup=3, repeats=10)
    return 2 * src.numel() * 4 / sec / 1e12


@dataclass(frozen=True)
class Mode:
    """One way to run the train step."""

    name: str
    bf16: bool = False
    channels_last: bool = False
    batch: int = 8
    scale: int = 2
    graph: bool = False  # run.cuda_graph: the whole step captured once and replayed
    compile: str | None = None  # torch.compile mode


def mode_config(mode: Mode, *, device: torch.device, patch: int) -> TrainConfig:
    """The trainer's config for `mode`: the paper's Adam (lr 1e-4, β = 0.9/0.99, ε = 1e-8) and
    L1; run.amp, run.channels_last, run.cuda_graph and run.compile from the mode."""
    return TrainConfig(
        model=ModelConfig(preset=None, scale=mode.scale),
        data=DataConfig(
            train=SamplesData(preset="bicubic"), patch_size=patch, batch_size=mode.batch
        ),
        optim=OptimConfig(lr=1e-4, betas=(0.9, 0.99), eps=1e-8, loss="l1"),
        run=RunConfig(
            device=device.type,
            amp="bf16" if mode.bf16 else "none",
            channels_last=mode.channels_last,
            cuda_graph=mode.graph,
            compile=mode.compile is not None,
        ),
    )


def make_train_step(
    preset: str, mode: Mode, *, device: torch.device, patch: int
) -> tuple[Callable[[], object], Callable[[], object] | None]:
    """(step, eager_step): `step` is the trainer's own step (`twostage.train.make_step`, its
    CUDA graph for graph rows, already captured) on a fixed random batch; `eager_step` (None
    for graph/compile rows) is the same step issued eagerly, for the host-issue measurement."""
    cfg = mode_config(mode, device=device, patch=patch)
    if mode.graph and (why := graph_blocker(cfg, device)) is not None:
        raise RuntimeError(f"skipped: {why}")
    net = build_model(preset_spec(preset, scale=mode.scale)).to(device)
    x = torch.rand(mode.batch, 3, patch, patch, device=device)
    y = torch.rand(mode.batch, 3, patch * mode.scale, patch * mode.scale, device=device)
    if mode.channels_last:  # as the trainer does: the network and its input
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    train_step = make_step(cfg, net, device)
    if mode.compile:
        train_step.model = torch.compile(net, mode=mode.compile)
    iterations = itertools.count(1)

    def step() -> None:
        train_step(next(iterations), x, y)

    if not mode.graph:
        return step, (step if mode.compile is None else None)
    train_step.enable_graph(Dist())
    for _ in range(GRAPH_WARMUP):  # eager warm-up steps, then the capture
        step()
    if train_step.graph is None or train_step.graph.replay is None:
        raise RuntimeError("run.cuda_graph did not capture the step")
    return step, None


def profile_step(preset: str, mode: Mode, *, device: torch.device, patch: int) -> dict:
    """Kernel count, summed kernel time and the top kernels of one eager train step."""
    from torch.profiler import ProfilerActivity, profile

    step, _ = make_train_step(preset, mode, device=device, patch=patch)
    for _ in range(3):
        step()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {"mode": mode.name, "profiled_wall_ms": wall * 1e3}
    try:
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        result["kernels"] = len(kernels)
        result["kernel_ms"] = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
        result["cpu_ops"] = sum(
            1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU
        )
    except Exception as exc:  # profiler API details differ between versions
        result["count_error"] = repr(exc)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    try:
        result["table"] = prof.key_averages().table(
            sort_by=sort, row_limit=15, max_name_column_width=50
        )
    except Exception as exc:
        result["table_error"] = repr(exc)
    return result


@torch.inference_mode()
def inference_mps(
    presets: list[tuple[str, int]],
    *,
    device: torch.device,
    size: int,
    repeats: int,
    bf16: bool = True,
    channels_last: bool = True,
) -> float:
    """Output megapixels per second of a chain of networks."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    models = [
        build_model(preset_spec(p, scale=s)).to(device).eval().to(memory_format=memory_format)
        for p, s in presets
    ]
    x = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=memory_format)

    def run() -> torch.Tensor:
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"
        ):
            out = x
            for m in models:
                out = m(out).clamp_(0, 1)
        return out

    shape = run().shape
    sec = _median_seconds(run, device, warmup=2, repeats=repeats)
    return shape[-1] * shape[-2] / sec / 1e6


SCRIPT = "gpu.py v3"  # v3: the trainer's own step (v2 timed a private copy of it)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu-bench.json"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, few repeats")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=170.0,
        help="skip rows that would start after this many seconds",
    )
    return parser.parse_args()


@dataclass
class Run:
    """One benchmark run: its sizes, the card's peaks, the result written after every row
    (a run cut short still reports what it measured) and the time budget."""

    json: Path
    budget_s: float
    device: torch.device
    preset: str
    repeats: int
    patch: int
    size: int  # inference input side
    peak: float | None  # bf16 dense datasheet TFLOP/s
    tf32_peak: float | None
    result: dict[str, Any]
    t_start: float

    def save(self) -> None:
        self.json.write_text(json.dumps(self.result, indent=2))

    def over_budget(self, what: str) -> bool:
        spent = time.perf_counter() - self.t_start
        if spent <= self.budget_s:
            return False
        print(f"{what}: skipped, {spent:.0f} s spent (budget {self.budget_s:.0f} s)", flush=True)
        self.result.setdefault("skipped", []).append(what)
        self.save()
        return True


def start_run(args: argparse.Namespace) -> Run:
    """The device (CUDA with TF32, or the CPU for --dry-run), sizes and the result's header."""
    t_start = time.perf_counter()
    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or "cpu"
    preset, patch = ("rcan-tiny", 24) if dry else ("rcan-paper", 96)
    result: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "preset": preset,
        "batch": 8,
        "patch": patch,
        "script": SCRIPT,
    }
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    return Run(
        json=args.json,
        budget_s=args.budget_s,
        device=device,
        preset=preset,
        repeats=2 if dry else 10,
        patch=patch,
        size=64 if dry else 512,
        peak=next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None),
        tf32_peak=next((v for k, v in TF32_PEAK_TFLOPS.items() if k in name), None),
        result=result,
        t_start=t_start,
    )


def measure_card(run: Run, *, dry: bool) -> None:
    """The card's matmul rate and copy bandwidth."""
    n = 512 if dry else 8192
    run.result["matmul_n"] = n
    run.result["matmul_tflops"] = matmul_tflops(run.device, n, run.repeats)
    run.result["copy_tbps"] = copy_tbps(run.device, 16 if dry else 4096)
    print(
        f"matmul {run.result['matmul_tflops']:.1f} TFLOP/s, "
        f"copy {run.result['copy_tbps']:.2f} TB/s",
        flush=True,
    )
    run.save()


def plan(*, compile: bool) -> list[Mode | str]:
    """The rows in order: most telling first; slow-to-build rows (batch 32, compile) last."""
    rows: list[Mode | str] = [
        Mode("fp32"),
        Mode("bf16", bf16=True),
        Mode("bf16-cl", bf16=True, channels_last=True),
        Mode("fp32-graph", graph=True),
        Mode("bf16-graph", bf16=True, graph=True),
        Mode("bf16-cl-graph", bf16=True, channels_last=True, graph=True),
        "profile",
        Mode("fp32-b32", batch=32),
        Mode("bf16-b32", bf16=True, batch=32),
        Mode("bf16-graph-b32", bf16=True, graph=True, batch=32),
        "inference",
        Mode("bf16-graph-x1", bf16=True, graph=True, scale=1),
    ]
    if compile:
        rows.append(Mode("bf16-compile-reduce-overhead", bf16=True, compile="reduce-overhead"))
    return rows


def measure_profiles(run: Run) -> None:
    """Kernel counts of one eager fp32 and one bf16 step."""
    run.result["profiles"] = profiles = []
    for mode in (Mode("fp32"), Mode("bf16", bf16=True)):
        try:
            prof = profile_step(run.preset, mode, device=run.device, patch=run.patch)
            print(
                f"profile {mode.name}: {prof.get('kernels')} kernels, "
                f"{prof.get('kernel_ms', float('nan')):.1f} ms of kernels in a "
                f"{prof['profiled_wall_ms']:.1f} ms step (profiled)",
                flush=True,
            )
        except Exception as exc:
            prof = {"mode": mode.name, "error": repr(exc)}
            print(f"profile {mode.name}: failed: {exc!r}", flush=True)
        profiles.append(prof)
        run.save()


def measure_inference(run: Run) -> None:
    """Output megapixels/s of ×2 and map2 + ×2, bf16 channels_last, fp32 and bf16 contiguous."""
    for key, chain, bf16, cl in (
        ("inference_x2_mps", [(run.preset, 2)], True, True),
        ("inference_map2_x2_mps", [(run.preset, 2), (run.preset, 2)], True, True),
        ("inference_x2_fp32_mps", [(run.preset, 2)], False, False),
        ("inference_x2_bf16_contiguous_mps", [(run.preset, 2)], True, False),
    ):
        try:
            run.result[key] = inference_mps(
                chain,
                device=run.device,
                size=run.size,
                repeats=run.repeats,
                bf16=bf16,
                channels_last=cl,
            )
            print(f"{key}: {run.result[key]:.1f} MP/s (output megapixels)", flush=True)
        except Exception as exc:
            run.result[key + "_error"] = repr(exc)
            print(f"{key}: failed: {exc!r}", flush=True)
        run.save()


def measure_mode(run: Run, mode: Mode) -> dict[str, Any]:
    """One train-step row: its median step, host issue time, TFLOP/s, MFU and the paper's
    150k-iteration time; a failure is reported in the row, the rest still run."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {"scale": mode.scale, "mode": mode.name, "batch": mode.batch}
    try:
        step, eager = make_train_step(run.preset, mode, device=run.device, patch=run.patch)
        warmup = 3 if mode.compile else 2
        sec = _median_seconds(step, run.device, warmup=warmup, repeats=run.repeats)
        if eager is not None:
            row["issue_ms"] = _issue_seconds(eager, run.device, max(3, run.repeats // 2)) * 1e3
    except Exception as exc:
        print(f"x{mode.scale} {mode.name}: failed: {exc!r}", flush=True)
        row["error"] = repr(exc)
        row["traceback"] = traceback.format_exc()[-1500:]
        return row
    spec = preset_spec(run.preset, scale=mode.scale)
    train_flops = 3 * 2 * conv_macs(spec, run.patch, run.patch) * mode.batch  # fwd + 2x bwd
    tflops = train_flops / sec / 1e12
    tf32 = run.tf32_peak and not mode.bf16
    row.update(
        {
            "step_ms": sec * 1e3,
            "tflops": tflops,
            "mfu_datasheet": tflops / run.peak if run.peak else None,
            "mfu_tf32_datasheet": tflops / run.tf32_peak if tf32 else None,
            "mfu_measured_matmul": tflops / run.result["matmul_tflops"],
            "paper_150k_hours": sec * 150_000 / 3600 * (8 / mode.batch),
            "wall_s_incl_warmup": time.perf_counter() - t0,
        }
    )
    mfu = f", MFU {row['mfu_datasheet']:.1%}" if run.peak else ""
    issue = f", host issue {row['issue_ms']:.1f} ms" if "issue_ms" in row else ""
    print(
        f"x{mode.scale} {mode.name}: {row['step_ms']:.1f} ms/step, {tflops:.1f} TFLOP/s"
        f"{mfu}{issue}, 150k iters (batch 8 equivalent) {row['paper_150k_hours']:.1f} h",
        flush=True,
    )
    return row


def main() -> int:
    args = parse_args()
    run = start_run(args)
    measure_card(run, dry=args.dry_run)
    run.result["train"] = rows = []
    run.result["inference_size"] = run.size
    for item in plan(compile=not args.no_compile):
        name = item if isinstance(item, str) else item.name
        if run.over_budget(name):
            continue
        if item == "profile":
            measure_profiles(run)
        elif item == "inference":
            measure_inference(run)
        else:
            assert isinstance(item, Mode)
            rows.append(measure_mode(run, item))
            run.save()
            _free(run.device)
    run.result["total_s"] = time.perf_counter() - run.t_start
    run.save()
    return 0


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    raise SystemExit(main())
