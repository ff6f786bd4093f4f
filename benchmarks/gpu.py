"""GPU benchmark: the paper's RCAN train step and inference on one CUDA card (H100/H200).

Measures, in one short run (about 3 minutes; `--budget-s` skips what does not fit):
- the card's bf16 dense matmul rate (8192^3, random data) and device copy bandwidth;
- the `rcan-paper` x2 train step (Adam, L1, batch 8 of 96x96 LR patches) in fp32 (TF32), bf16
  autocast, bf16 + channels_last, each eager and replayed as one CUDA graph (the whole step:
  forward, backward, Adam), the host time spent issuing an eager step (when it is close to the
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from twostage.models import build_model, conv_macs, preset_spec

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
    graph: bool = False  # the whole step captured once as a CUDA graph and replayed
    compile: str | None = None  # torch.compile mode


def _setup(preset: str, mode: Mode, device: torch.device, patch: int):
    model = build_model(preset_spec(preset, scale=mode.scale)).to(device)
    memory_format = torch.channels_last if mode.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.Adam(
        model.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8, capturable=mode.graph
    )
    x = torch.rand(mode.batch, 3, patch, patch, device=device).contiguous(
        memory_format=memory_format
    )
    y = torch.rand(mode.batch, 3, patch * mode.scale, patch * mode.scale, device=device)
    return model, opt, x, y


def make_train_step(
    preset: str, mode: Mode, *, device: torch.device, patch: int
) -> tuple[Callable[[], object], Callable[[], object] | None]:
    """(step, eager_step): `step` is what is timed; `eager_step` (None for graph/compile rows)
    is the same step issued eagerly, for the host-issue measurement."""
    model, opt, x, y = _setup(preset, mode, device, patch)
    net = torch.compile(model, mode=mode.compile) if mode.compile else model

    def forward_loss() -> torch.Tensor:
        # cache_enabled=False: required inside CUDA-graph capture, harmless elsewhere
        with torch.autocast(
            device.type,
            dtype=torch.bfloat16,
            enabled=mode.bf16,
            cache_enabled=False if mode.graph else None,
        ):
            out = net(x)
        return F.l1_loss(out.float(), y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward_loss().backward()
        opt.step()

    if not mode.graph:
        return step, (step if mode.compile is None else None)
    if device.type != "cuda":
        raise RuntimeError("skipped: CUDA graphs need a CUDA device")
    # PyTorch's whole-network capture recipe: warm up on a side stream (cuDNN picks its
    # algorithms, Adam creates its state), then capture one full step into a graph.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        forward_loss().backward()
        opt.step()
    return graph.replay, None


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


def main() -> int:
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
    args = parser.parse_args()

    t_start = time.perf_counter()
    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    preset = "rcan-tiny" if dry else "rcan-paper"
    repeats = 2 if dry else 10
    patch = 24 if dry else 96
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    tf32_peak = next((v for k, v in TF32_PEAK_TFLOPS.items() if k in name), None)

    result: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "preset": preset,
        "batch": 8,
        "patch": patch,
        "script": "gpu.py v2",
    }
    print(f"device: {name}, torch {torch.__version__}", flush=True)

    def save() -> None:  # after every row, so a run cut short still reports what it measured
        args.json.write_text(json.dumps(result, indent=2))

    def over_budget(what: str) -> bool:
        spent = time.perf_counter() - t_start
        if spent > args.budget_s:
            print(
                f"{what}: skipped, {spent:.0f} s spent (budget {args.budget_s:.0f} s)", flush=True
            )
            result.setdefault("skipped", []).append(what)
            save()
            return True
        return False

    n = 512 if dry else 8192
    result["matmul_n"] = n
    result["matmul_tflops"] = matmul_tflops(device, n, repeats)
    result["copy_tbps"] = copy_tbps(device, 16 if dry else 4096)
    print(
        f"matmul {result['matmul_tflops']:.1f} TFLOP/s, copy {result['copy_tbps']:.2f} TB/s",
        flush=True,
    )
    save()

    # Most telling first; slow-to-build rows (batch 32, compile) last.
    plan = [
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
    if not args.no_compile:
        plan.append(Mode("bf16-compile-reduce-overhead", bf16=True, compile="reduce-overhead"))
    result["train"] = rows = []
    size = 64 if dry else 512
    result["inference_size"] = size
    for item in plan:
        if item == "profile":
            if over_budget("profile"):
                continue
            result["profiles"] = profiles = []
            for mode in (Mode("fp32"), Mode("bf16", bf16=True)):
                try:
                    prof = profile_step(preset, mode, device=device, patch=patch)
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
                save()
            continue
        if item == "inference":
            if over_budget("inference"):
                continue
            for key, chain, bf16, cl in (
                ("inference_x2_mps", [(preset, 2)], True, True),
                ("inference_map2_x2_mps", [(preset, 2), (preset, 2)], True, True),
                ("inference_x2_fp32_mps", [(preset, 2)], False, False),
                ("inference_x2_bf16_contiguous_mps", [(preset, 2)], True, False),
            ):
                try:
                    result[key] = inference_mps(
                        chain,
                        device=device,
                        size=size,
                        repeats=repeats,
                        bf16=bf16,
                        channels_last=cl,
                    )
                    print(f"{key}: {result[key]:.1f} MP/s (output megapixels)", flush=True)
                except Exception as exc:
                    result[key + "_error"] = repr(exc)
                    print(f"{key}: failed: {exc!r}", flush=True)
                save()
            continue
        assert isinstance(item, Mode)
        mode = item
        if over_budget(mode.name):
            continue
        spec = preset_spec(preset, scale=mode.scale)
        train_flops = 3 * 2 * conv_macs(spec, patch, patch) * mode.batch  # fwd + 2x backward
        t0 = time.perf_counter()
        row: dict[str, Any] = {"scale": mode.scale, "mode": mode.name, "batch": mode.batch}
        try:
            step, eager = make_train_step(preset, mode, device=device, patch=patch)
            warmup = 3 if mode.compile else 2
            sec = _median_seconds(step, device, warmup=warmup, repeats=repeats)
            if eager is not None:
                row["issue_ms"] = _issue_seconds(eager, device, max(3, repeats // 2)) * 1e3
        except Exception as exc:  # a failed variant is reported, the rest still run
            print(f"x{mode.scale} {mode.name}: failed: {exc!r}", flush=True)
            row["error"] = repr(exc)
            row["traceback"] = traceback.format_exc()[-1500:]
            rows.append(row)
            save()
            _free(device)
            continue
        tflops = train_flops / sec / 1e12
        row.update(
            {
                "step_ms": sec * 1e3,
                "tflops": tflops,
                "mfu_datasheet": tflops / peak if peak else None,
                "mfu_tf32_datasheet": tflops / tf32_peak if tf32_peak and not mode.bf16 else None,
                "mfu_measured_matmul": tflops / result["matmul_tflops"],
                "paper_150k_hours": sec * 150_000 / 3600 * (8 / mode.batch),
                "wall_s_incl_warmup": time.perf_counter() - t0,
            }
        )
        rows.append(row)
        mfu = f", MFU {row['mfu_datasheet']:.1%}" if peak else ""
        issue = f", host issue {row['issue_ms']:.1f} ms" if "issue_ms" in row else ""
        print(
            f"x{mode.scale} {mode.name}: {row['step_ms']:.1f} ms/step, {tflops:.1f} TFLOP/s"
            f"{mfu}{issue}, 150k iters (batch 8 equivalent) {row['paper_150k_hours']:.1f} h",
            flush=True,
        )
        save()
        _free(device)
    result["total_s"] = time.perf_counter() - t_start
    save()
    return 0


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    raise SystemExit(main())
