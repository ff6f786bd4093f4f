"""The loader section: `realistic-mix` drawn per patch as training draws it, with 0 and 2
loader workers (patches/s, and the loader's share of a cpu-profile step), the rate the
paper profile's GPU step needs, and the batched-torch alternatives to the numpy family."""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .harness import Context, Row, fmt, gpu_results, median_times, pct, table

FAMILY = "realistic-mix"
WORKERS = (0, 2)


def _config(*overrides: str) -> Any:
    """The cpu profile training the demo's map2 network (rcan-cpu ×2, batch 8 of 32²) on
    `realistic-mix` per patch: 8 HR patches of 128² per batch, degraded ×4."""
    from twostage.config import apply_overrides, profile_defaults

    train = (
        f"data.train={{kind: samples, preset: {FAMILY}, per_patch: true, scale: 4, "
        "target_domain: bicubic-x2}"
    )
    base = ["model.scale=2", "data.val=null", "log.tensorboard=false", "run.amp=none"]
    return apply_overrides(profile_defaults("cpu"), [train, *base, *overrides])


def _rate(cfg: Any, train_set: Any, workers: int, iterations: int) -> Row:
    """Patches per second of `batches` (the trainer's loader), after its first batch."""
    from twostage.train.loader import batches
    from twostage.train.loop import draw_batch

    draw = functools.partial(draw_batch, cfg, train_set, 0)
    start = time.perf_counter()
    with batches(draw, first=1, last=iterations + 1, num_workers=workers) as stream:
        next(stream)
        first = time.perf_counter()
        for _ in stream:
            pass
    end = time.perf_counter()
    hr = cfg.data.patch_size * 4
    return {
        "kind": "rate",
        "workers": workers,
        "hr": hr,
        "batch": cfg.data.batch_size,
        "first_batch_s": first - start,
        "patches_per_s": iterations * cfg.data.batch_size / (end - first),
        "iterations": iterations,
    }


def _share(workers: int, iterations: int, warmup: int = 3) -> Row:
    """The real Trainer's loop: time blocked on the loader vs the step, per iteration."""
    from twostage.train.dist import dist_from_env
    from twostage.train.loop import Trainer

    cfg = _config(f"optim.iterations={iterations}", f"data.num_workers={workers}")
    torch.set_num_threads(cfg.run.threads)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out=Path(out) / "run", device=torch.device("cpu"), d=dist_from_env())
        trainer.net.train()
        waits, steps = [], []
        with trainer.loader() as stream:
            t = time.perf_counter()
            for it, drawn in stream:
                t1 = time.perf_counter()
                trainer.step(it, *trainer.to_device(*drawn))
                t2 = time.perf_counter()
                if it > warmup:
                    waits.append(t1 - t)
                    steps.append(t2 - t1)
                t = t2
    wait, step = statistics.mean(waits), statistics.mean(steps)
    return {
        "kind": "share",
        "workers": workers,
        "wait_ms": wait * 1e3,
        "step_ms": step * 1e3,
        "iteration_ms": (wait + step) * 1e3,
        "share": wait / (wait + step),
        "iterations": len(waits),
    }


def _gpu_need() -> list[Row]:
    """Patches/s each stored GPU row of the paper profile consumes: batch / step time."""
    rows = []
    for name, g in gpu_results():
        for r in g.get("train", []):
            if r.get("step_ms"):
                rows.append(
                    {
                        "kind": "gpu",
                        "file": name,
                        "device": g.get("device"),
                        "mode": r["mode"],
                        "scale": r["scale"],
                        "batch": r.get("batch", g.get("batch")),
                        "hr": 4 * g.get("patch", 96),
                        "step_ms": r["step_ms"],
                        "patches_per_s": r.get("batch", g.get("batch")) * 1e3 / r["step_ms"],
                    }
                )
    return rows


def _torch_vs_numpy(hr: int, repeats: int, threads: int) -> list[Row]:
    """Round 1 of the family on 8 HR patches, numpy per patch (as trained) against batched
    torch with `threads` threads: the blur as one grouped convolution (kernels zero-padded to
    21², reflected borders) and the resize by `F.interpolate`, both from the same draws."""
    import torch.nn.functional as F

    from twostage.ops.degrade import PRESETS
    from twostage.ops.realistic import _draw_plan, _filter, _resize, _times

    family = PRESETS[FAMILY].steps[0]
    rng0 = np.random.default_rng(0)
    x = rng0.random((8, 3, hr, hr), dtype=np.float32)
    xt = torch.from_numpy(x)
    plans = [_draw_plan(np.random.default_rng([0, 1, i]), family) for i in range(64)]
    plans = [p for p in plans if p.first.kernel is not None][:8]
    kernels = np.zeros((8, 21, 21), np.float32)
    for i, p in enumerate(plans):
        k, c = p.first.kernel, (21 - p.first.kernel.shape[0]) // 2
        kernels[i, c : c + k.shape[0], c : c + k.shape[0]] = k
    weight = torch.from_numpy(kernels).repeat_interleave(3, 0)[:, None]  # 24×1×21×21
    sizes = [_times((hr, hr), p.first.factor) for p in plans]

    def blur_numpy() -> None:
        for i, p in enumerate(plans):
            _filter(x[i], p.first.kernel)

    def blur_torch() -> None:
        padded = F.pad(xt.reshape(1, 24, hr, hr), (10, 10, 10, 10), mode="reflect")
        F.conv2d(padded, weight, groups=24)

    def resize_numpy() -> None:
        for i, p in enumerate(plans):
            _resize(x[i], sizes[i], p.first.mode)

    def resize_torch() -> None:
        for i, p in enumerate(plans):
            mode = p.first.mode
            kw = {} if mode == "area" else {"align_corners": False}
            F.interpolate(xt[i : i + 1], size=sizes[i], mode=mode, **kw)

    fns = {
        "blur numpy": blur_numpy,
        "blur torch": blur_torch,
        "resize numpy": resize_numpy,
        "resize torch": resize_torch,
    }
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = median_times(fns, warmup=2, repeats=repeats)
    finally:
        torch.set_num_threads(before)
    return [
        {
            "kind": "torch",
            "hr": hr,
            "threads": threads,
            "op": op,
            "ms": statistics.median(t) * 1e3,
            "repeats": repeats,
        }
        for op, t in times.items()
    ]


def section_loader(ctx: Context) -> list[Row]:
    from twostage.data.datasets import open_dataset

    smoke = ctx.args.smoke
    rows: list[Row] = []
    for patch in (8,) if smoke else (32, 96):  # cpu profile's 32² LR, the paper's 96²
        cfg = _config(f"data.patch_size={patch}")
        train_set = open_dataset(cfg.data.train)
        n = 2 if smoke else max(4, 6 * ctx.args.repeats * 32 // patch)
        rows += [_rate(cfg, train_set, w, n) for w in WORKERS]
    n = 4 if smoke else 10 * ctx.args.repeats
    rows += [_share(w, n) for _ in range(1 if smoke else 2) for w in WORKERS]  # alternately
    rows += _gpu_need()
    for threads in sorted({1, torch.get_num_threads()}):  # 1: as in a loader worker
        for hr in (32,) if smoke else (128, 384):
            rows += _torch_vs_numpy(hr, 1 if smoke else 4 * ctx.args.repeats, threads)
    return rows


# ============================================================================ render


def _fastest(rows: list[Row]) -> list[Row]:
    """Of each result file and batch size, the row that needs the most patches per second."""
    best: dict[tuple[str, int], Row] = {}
    for r in rows:
        key = (r["file"], r["batch"])
        if key not in best or r["patches_per_s"] > best[key]["patches_per_s"]:
            best[key] = r
    return list(best.values())


def render_loader(rows: list[Row]) -> list[str]:
    by = {k: [r for r in rows if r["kind"] == k] for k in ("rate", "share", "gpu", "torch")}
    L = [
        f"`{FAMILY}` per patch, drawn as training draws it (`draw_batch` through the trainer's "
        "DataLoader, batch 8, ×4): patches per second after the first batch.",
        "",
    ]
    L += table(
        ["HR patch", "workers", "patches/s", "first batch (s)", "batches timed"],
        [
            [
                f"{r['hr']}²",
                str(r["workers"]),
                fmt(r["patches_per_s"], ".0f"),
                fmt(r["first_batch_s"], ".2f"),
                str(r["iterations"]),
            ]
            for r in by["rate"]
        ],
    )
    L += [
        "",
        "The loader's share of a cpu-profile training step (the trainer's own loop: rcan-cpu ×2 "
        "map2 network, batch 8 of 32², fp32, channels_last, 2 torch threads): the time the loop "
        "waits for its batch, against the step; 0 and 2 workers alternately, twice.",
        "",
    ]
    L += table(
        ["workers", "wait (ms)", "step (ms)", "ms/iteration", "loader share", "iterations"],
        [
            [
                str(r["workers"]),
                fmt(r["wait_ms"], ".1f"),
                fmt(r["step_ms"], ".1f"),
                fmt(r["iteration_ms"], ".1f"),
                pct(r["share"]),
                str(r["iterations"]),
            ]
            for r in by["share"]
        ],
    )
    L += [
        "",
        "What the paper profile's GPU step consumes (the GPU rows below, the fastest mode of "
        "each file and batch size: batch / step time; HR patches of 384² for a ×4 family):",
        "",
    ]
    L += table(
        ["GPU", "mode", "batch", "ms/step", "patches/s needed"],
        [
            [
                f"{r['device']} (`{r['file']}`)",
                f"×{r['scale']} {r['mode']}",
                str(r["batch"]),
                fmt(r["step_ms"], ".1f"),
                fmt(r["patches_per_s"], ".0f"),
            ]
            for r in _fastest(by["gpu"])
        ],
    )
    L += [
        "",
        "Round 1 of the family on 8 HR patches, numpy per patch (what trains) against batched "
        "torch on the CPU: the blur as one grouped 21² convolution, the resizes by "
        "`F.interpolate`, from the same draws (ms per batch; torch threads: 1 as in a loader "
        "worker, 2 as in the training process; numpy runs one thread either way).",
        "",
    ]
    L += table(
        ["HR patch", "torch threads", "operation", "ms"],
        [
            [f"{r['hr']}²", str(r.get("threads", "–")), r["op"], fmt(r["ms"], ".2f")]
            for r in by["torch"]
        ],
    )
    return L
