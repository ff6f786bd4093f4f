"""GPU benchmark: the paper's RCAN train step and inference on one CUDA card (H100/H200).

Measures, in one short run (<= 5 minutes):
- the card's bf16 dense matmul rate (8192^3, random data) and device copy bandwidth;
- the `rcan-paper` x2 and x1 train step (batch 8 of 96x96 LR patches, Adam, L1) in fp32,
  bf16 autocast + channels_last, and the same with torch.compile; MFU against the bf16 datasheet
  peak and against the measured matmul rate; projected time for the paper's 150k iterations;
- inference megapixels/s of `rcan-paper` x2 and of the map2 + x2 pipeline on 512x512 inputs.

Writes a JSON file and prints a short table. `--dry-run` runs the same code on the CPU with a
tiny preset and few repeats, to check the script before spending device time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from twostage.models import build_model, conv_macs, preset_spec

BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense bf16, SXM datasheet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn, device: torch.device, *, warmup: int, repeats: int) -> float:
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


def train_step_seconds(preset: str, scale: int, *, device: torch.device, batch: int, patch: int,
                       mode: str, repeats: int) -> float:
    """Median seconds of one Adam + L1 step; mode is fp32, bf16-cl or bf16-cl-compile."""
    model = build_model(preset_spec(preset, scale=scale)).to(device)
    bf16 = mode.startswith("bf16")
    memory_format = torch.channels_last if "cl" in mode else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    step_model = torch.compile(model) if mode.endswith("compile") else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    x = torch.rand(batch, 3, patch, patch, device=device).to(memory_format=memory_format)
    y = torch.rand(batch, 3, patch * scale, patch * scale, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.l1_loss(step_model(x).float(), y)
        loss.backward()
        opt.step()

    warmup = 3 if mode.endswith("compile") else 2
    return _median_seconds(step, device, warmup=warmup, repeats=repeats)


@torch.inference_mode()
def inference_mps(presets: list[tuple[str, int]], *, device: torch.device, size: int,
                  repeats: int) -> float:
    """Output megapixels per second of a chain of networks (bf16 + channels_last on CUDA)."""
    models = [
        build_model(preset_spec(p, scale=s)).to(device).eval().to(memory_format=torch.channels_last)
        for p, s in presets
    ]
    x = torch.rand(1, 3, size, size, device=device).to(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = x
            for m in models:
                out = m(out).clamp_(0, 1)
        return out

    out_px = run().shape[-1] * run().shape[-2]
    sec = _median_seconds(run, device, warmup=2, repeats=repeats)
    return out_px / sec / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu-bench.json"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, few repeats")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

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

    result: dict = {"device": name, "torch": torch.__version__, "preset": preset,
                    "batch": 8, "patch": patch}
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    result["matmul_tflops"] = matmul_tflops(device, 512 if dry else 8192, repeats)
    result["copy_tbps"] = copy_tbps(device, 16 if dry else 4096)
    print(f"matmul {result['matmul_tflops']:.1f} TFLOP/s, copy {result['copy_tbps']:.2f} TB/s",
          flush=True)

    def save() -> None:  # after every row, so a run cut short still reports what it measured
        args.json.write_text(json.dumps(result, indent=2))

    # Cheapest and most telling first; torch.compile (slow to build) last.
    plan = [(2, "fp32"), (2, "bf16-cl"), (1, "bf16-cl"), (1, "fp32")]
    if not args.no_compile:
        plan.append((2, "bf16-cl-compile"))
    result["train"] = rows = []
    size = 64 if dry else 512
    result["inference_size"] = size
    for i, (scale, mode) in enumerate(plan):
        if i == 3:  # inference before the optional rows
            result["inference_x2_mps"] = inference_mps([(preset, 2)], device=device, size=size,
                                                       repeats=repeats)
            result["inference_map2_x2_mps"] = inference_mps(
                [(preset, 2), (preset, 2)], device=device, size=size, repeats=repeats)
            print(f"inference x2 {result['inference_x2_mps']:.1f} MP/s, map2+x2 "
                  f"{result['inference_map2_x2_mps']:.1f} MP/s (output megapixels)", flush=True)
            save()
        spec = preset_spec(preset, scale=scale)
        train_flops = 3 * 2 * conv_macs(spec, patch, patch) * 8  # fwd + 2x for backward
        t0 = time.perf_counter()
        try:
            sec = train_step_seconds(preset, scale, device=device, batch=8, patch=patch,
                                     mode=mode, repeats=repeats)
        except Exception as exc:  # a failed variant is reported, the rest still run
            print(f"x{scale} {mode}: failed: {exc}", flush=True)
            rows.append({"scale": scale, "mode": mode, "error": str(exc)})
            continue
        tflops = train_flops / sec / 1e12
        row = {
            "scale": scale, "mode": mode, "step_ms": sec * 1e3, "tflops": tflops,
            "mfu_datasheet": tflops / peak if peak else None,
            "mfu_measured_matmul": tflops / result["matmul_tflops"],
            "paper_150k_hours": sec * 150_000 / 3600,
            "wall_s_incl_warmup": time.perf_counter() - t0,
        }
        rows.append(row)
        mfu = f", MFU {row['mfu_datasheet']:.1%}" if peak else ""
        print(f"x{scale} {mode}: {row['step_ms']:.1f} ms/step, {tflops:.1f} TFLOP/s{mfu}, "
              f"150k iters {row['paper_150k_hours']:.1f} h", flush=True)
        save()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
