"""Timing, machine facts, the load on the machine, the results JSON, and markdown helpers."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CPU_JSON = RESULTS / "cpu.json"
NOTES = ROOT / "benchmarks" / "notes.md"
Step = Callable[[], object]
Row = dict[str, Any]


@dataclass
class Context:
    """What a section's measurer gets: the command line and this run's GEMM peak."""

    args: argparse.Namespace
    gemm: float | None = None  # fp32 GFLOP/s measured in this run


@dataclass(frozen=True)
class Section:
    """One part of the report: `measure` makes its rows (stored in cpu.json), `render` turns
    them into markdown lines under `## title`."""

    name: str
    title: str
    measure: Callable[[Context], list[Row]]
    render: Callable[[list[Row]], list[str]]
    needs_gemm: bool = False  # its ratios use a GEMM peak measured just before


# ============================================================================ timing


def median_times(fns: dict[str, Step], *, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, called round-robin (`warmup` untimed rounds first)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """`torch.mm` of two n×n matrices: median of 7 after 3 warm-ups."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = median_times({"mm": lambda: torch.mm(a, b)}, warmup=3, repeats=7)["mm"]
    return 2 * n**3 / statistics.median(times) / 1e9


def run_polled(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run `cmd`; wall seconds, peak RSS (bytes, the process and its children, polled every
    20 ms) and the output's tail."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                rss = ps.memory_info().rss + sum(
                    c.memory_info().rss for c in ps.children(recursive=True)
                )
                peak = max(peak, rss)
            time.sleep(0.02)
        wall = time.perf_counter() - start
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {tail}")
    return wall, peak, tail


# ============================================================================ machine, load


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [
                    f
                    for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                    if f in flags
                ]
    return []


def machine() -> dict[str, Any]:
    onednn = torch.backends.mkldnn.is_available()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "flags": cpu_flags(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onednn": onednn,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }


def other_busy_processes() -> list[str]:
    """Other processes using over a fifth of a core (sampled for 1 s): who shares the CPU."""
    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] == me:
            continue
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
            procs.append(p)
    time.sleep(1.0)
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            pct = p.cpu_percent(None)
            if pct > 20:
                cmd = " ".join(" ".join(p.info["cmdline"] or []).split())[:80]
                busy.append(f"{pct:.0f}% {cmd}")
    return busy


def load_snapshot() -> dict[str, Any]:
    return {"loadavg": [round(v, 2) for v in os.getloadavg()], "others": other_busy_processes()}


def wait_for_quiet(deadline: float) -> None:
    """Poll every 60 s, until `deadline` (time.monotonic), for no other process to use a core."""
    while True:
        busy = other_busy_processes()
        if not busy or time.monotonic() >= deadline:
            if busy:
                print(f"  machine still busy after waiting: {busy}", flush=True)
            return
        print(f"  waiting for a quiet machine: {busy}", flush=True)
        time.sleep(min(60.0, max(1.0, deadline - time.monotonic())))


# ============================================================================ results files


def read_results(path: Path) -> dict[str, Any]:
    """The stored results (an empty set when `path` does not exist yet)."""
    results: dict[str, Any] = {}
    if path.is_file():
        results = json.loads(path.read_text(encoding="utf-8"))
    results.setdefault("sections", {})
    return results


def gpu_results(prefix: str = "gpu-") -> list[tuple[str, dict[str, Any]]]:
    """benchmarks/results/<prefix>*.json: the stand-alone step's (gpu.py), or with prefix
    "gpu_trainer-" the trainer check's (gpu_trainer.py, saved under that name)."""
    found = []
    for p in sorted(RESULTS.glob(f"{prefix}*.json")):
        if prefix == "gpu-" and p.name.startswith("gpu-trainer"):
            continue  # gpu_trainer.py's own output name, copied as is
        with contextlib.suppress(OSError, ValueError):
            found.append((p.name, json.loads(p.read_text(encoding="utf-8"))))
    return found


# ============================================================================ markdown


def fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")
