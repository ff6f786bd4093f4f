"""The real trainer on a GPU: `run.cuda_graph` against eager, the step time and MFU.

`run.cuda_graph` stays off by default until this check passes on a GPU (BENCHMARKS.md). It
trains the paper profile (rcan-paper ×2, Adam, L1, batch 8 of 96×96 LR patches, fp32 with
cuDNN's TF32 convolutions) with `twostage.train.train` itself, for `--steps` iterations from
one seed:

1. Equality: eager, then `run.cuda_graph=true`; deterministic cuDNN kernels, every step's loss
   logged (`log.log_every=1`, metrics.csv). The per-step losses must agree within `--rtol`;
   the final weights' largest difference is reported too. A mismatch is printed and the exit
   code is 1.
2. Speed: each mode again with the profile's own speed settings (cudnn.benchmark) and the loss
   read every `steps // 4` iterations. Step time = the trainer's seconds between its first and
   last log over the iterations between (warm-up and the graph capture excluded); MFU = the
   step's convolution FLOPs (3 × 2 × MACs × batch) / step time, against the datasheet peak.

`--tiny --device cpu --steps 2` runs the same code on the CPU with rcan-tiny (the trainer
ignores run.cuda_graph there; the JSON says so) for tests/test_benchmarks.py. Writes
gpu-trainer.json and gpu-trainer.md into `--out` (default: $OUT, else the current folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from safetensors.torch import load_file

from twostage.config import TrainConfig, apply_overrides, profile_defaults
from twostage.data.datasets import open_dataset
from twostage.models import conv_macs, preset_spec
from twostage.train import graph_blocker, train

# Dense datasheet peaks in TFLOP/s (bf16, TF32), matched in this order against the GPU name.
PEAKS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 417.5),
    ("H100", 989.4, 494.7),
    ("H200", 989.4, 494.7),
)
MODES = ("eager", "graph")


def compare_losses(
    eager: list[float], graph: list[float], *, rtol: float, atol: float = 1e-7
) -> dict:
    """Per-step losses of the two runs: equal when every step is within atol + rtol·|eager|
    and both have the same length. `first_mismatch` is the 1-based step of the first miss."""
    diffs = [abs(a - b) for a, b in zip(eager, graph)]
    bad = [
        i + 1
        for i, (a, b) in enumerate(zip(eager, graph))
        if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > atol + rtol * abs(a)
    ]
    same_length = len(eager) == len(graph) and len(eager) > 0
    rel = [d / abs(a) for d, a in zip(diffs, eager) if a != 0]
    return {
        "equal": same_length and not bad,
        "steps": min(len(eager), len(graph)),
        "lengths": [len(eager), len(graph)],
        "rtol": rtol,
        "atol": atol,
        "max_abs_diff": max(diffs, default=None),
        "max_rel_diff": max(rel, default=None),
        "identical_steps": sum(a == b for a, b in zip(eager, graph)),
        "first_mismatch": bad[0] if bad else None,
        "mismatches": len(bad),
    }


def config(*, tiny: bool, device: str, steps: int, graph: bool, equality: bool) -> TrainConfig:
    """The paper profile (or tiny) for `steps` iterations, no validation, one checkpoint."""
    log_every = 1 if equality else max(1, steps // 4)
    overrides = [
        f"optim.iterations={steps}",
        f"log.log_every={log_every}",
        f"log.checkpoint_every={steps}",
        f"log.val_every={steps}",
        "log.tensorboard=false",
        "data.val=null",
        "run.seed=0",
        f"run.device={device}",
        f"run.cuda_graph={'true' if graph else 'false'}",
    ]
    if equality:
        overrides.append("run.deterministic=true")
    return apply_overrides(profile_defaults("tiny" if tiny else "paper"), overrides)


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {"iteration": int(r["iteration"]), "loss": float(r["loss"]), "seconds": float(r["seconds"])}
        for r in rows
        if r.get("loss")
    ]


def step_seconds(rows: list[dict[str, float]]) -> tuple[float, int]:
    """Seconds per iteration between the first and the last logged row, and the iterations."""
    first, last = rows[0], rows[-1]
    if len(rows) < 2:  # one row: the whole run, warm-up included
        return last["seconds"] / last["iteration"], int(last["iteration"])
    iters = int(last["iteration"] - first["iteration"])
    return (last["seconds"] - first["seconds"]) / iters, iters


def peaks(gpu: str | None) -> tuple[float | None, float | None]:
    for name, bf16, tf32 in PEAKS:
        if gpu and name in gpu:
            return bf16, tf32
    return None, None


def run_mode(cfg: TrainConfig, train_set, folder: Path, out: Path, tag: str) -> dict:
    """One training run with the real trainer; its metrics.csv is copied to out/tag.csv."""
    start = time.perf_counter()
    result = train(cfg, out=folder, train_set=train_set, quiet=True)
    wall = time.perf_counter() - start
    (out / f"{tag}-metrics.csv").write_bytes((folder / "metrics.csv").read_bytes())
    rows = read_metrics(folder / "metrics.csv")
    return {"rows": rows, "wall_s": wall, "model": result.model_path}


def weights_max_abs_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a)), load_file(str(b))
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def markdown(result: dict) -> str:
    c = result["comparison"]
    verdict = "EQUAL" if c["equal"] else "MISMATCH"
    lines = [
        f"## Trainer on {result['gpu'] or result['device']}: run.cuda_graph vs eager",
        "",
        f"{result['preset']} ×{result['scale']}, batch {result['batch']} of {result['patch']}², "
        f"amp {result['amp']}, {result['steps']} steps, seed 0; torch {result['torch']}; "
        f"graph captured: {result['graph_active']}"
        + (f" ({result['graph_blocker']})" if result["graph_blocker"] else ""),
        "",
        f"- Losses ({c['steps']} steps, rtol {c['rtol']:g}): **{verdict}**; identical steps "
        f"{c['identical_steps']}, max abs diff {c['max_abs_diff']}, max rel diff "
        f"{c['max_rel_diff']}, first mismatch {c['first_mismatch']}; final weights max abs "
        f"diff {result['weights_max_abs_diff']}",
        "",
        "| mode | step (ms) | TFLOP/s | MFU (TF32 datasheet) | MFU (bf16 datasheet) |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        t = result["timing"][mode]

        def pct(v: float | None) -> str:
            return f"{v:.1%}" if v is not None else "–"

        lines.append(
            f"| {mode} | {t['step_ms']:.1f} | {t['tflops']:.1f} | "
            f"{pct(t['mfu_tf32_datasheet'])} | {pct(t['mfu_bf16_datasheet'])} |"
        )
    lines.append("")
    lines.append(f"Graph speed-up over eager: {result['speedup']:.2f}×.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tiny", action="store_true", help="rcan-tiny (the CPU smoke test)")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "."))
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2")
    return args


def run_all(args: argparse.Namespace, base: TrainConfig) -> tuple[dict[str, dict], float]:
    """The four training runs (equality: deterministic, every loss; timing), each eager and
    with run.cuda_graph, their metrics.csv copied into --out; and the largest difference of
    the equality runs' final weights."""
    train_set = open_dataset(base.data.train)  # prepared once, passed to every run
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-trainer-") as tmp:
        for equality in (True, False):
            for mode in MODES:
                cfg = config(
                    tiny=args.tiny,
                    device=args.device,
                    steps=args.steps,
                    graph=mode == "graph",
                    equality=equality,
                )
                tag = f"{'equality' if equality else 'timing'}-{mode}"
                print(f"gpu_trainer: {tag}: {args.steps} steps ...", flush=True)
                runs[tag] = run_mode(cfg, train_set, Path(tmp) / tag, args.out, tag)
        weights_diff = weights_max_abs_diff(
            runs["equality-eager"]["model"], runs["equality-graph"]["model"]
        )
    return runs, weights_diff


def timing(runs: dict[str, dict], flops: float, gpu: str | None) -> dict[str, dict]:
    """Per mode: the step time from the timing run's log, TFLOP/s and MFU."""
    bf16_peak, tf32_peak = peaks(gpu)
    out = {}
    for mode in MODES:
        seconds, iters = step_seconds(runs[f"timing-{mode}"]["rows"])
        tflops = flops / seconds / 1e12
        out[mode] = {
            "step_ms": seconds * 1e3,
            "iterations_timed": iters,
            "tflops": tflops,
            "mfu_tf32_datasheet": tflops / tf32_peak if tf32_peak else None,
            "mfu_bf16_datasheet": tflops / bf16_peak if bf16_peak else None,
            "wall_s": runs[f"timing-{mode}"]["wall_s"],
        }
    return out


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    """The check's result: losses compared, weights compared, step times and MFU."""
    begin = time.perf_counter()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    base = config(tiny=args.tiny, device=args.device, steps=args.steps, graph=True, equality=True)
    blocker = graph_blocker(base, device)
    runs, weights_diff = run_all(args, base)
    losses = {m: [r["loss"] for r in runs[f"equality-{m}"]["rows"]] for m in MODES}
    spec = preset_spec(base.model.preset, scale=base.model.scale)
    patch, batch = base.data.patch_size, base.data.batch_size
    flops = 3 * 2 * conv_macs(spec, patch, patch) * batch  # forward + 2× backward
    times = timing(runs, flops, gpu)
    return {
        "device": str(device),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "profile": "tiny" if args.tiny else "paper",
        "preset": base.model.preset,
        "scale": base.model.scale,
        "batch": batch,
        "patch": patch,
        "amp": base.run.amp,
        "steps": args.steps,
        "graph_active": blocker is None,
        "graph_blocker": blocker,
        "train_flops_per_step": flops,
        "losses": losses,
        "comparison": compare_losses(losses["eager"], losses["graph"], rtol=args.rtol),
        "weights_max_abs_diff": weights_diff,
        "timing": times,
        "speedup": times["eager"]["step_ms"] / times["graph"]["step_ms"],
        "seconds_total": time.perf_counter() - begin,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_trainer: no CUDA device; use --device cpu --tiny for the smoke test")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    result = measure(args, torch.device(args.device))
    (args.out / "gpu-trainer.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu-trainer.md").write_text(markdown(result))
    print(markdown(result))
    comparison = result["comparison"]
    if not comparison["equal"]:
        print(
            f"gpu_trainer: MISMATCH: graph and eager losses differ from step "
            f"{comparison['first_mismatch']} ({comparison['mismatches']} step(s) over rtol "
            f"{args.rtol:g}); run.cuda_graph must stay off",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
