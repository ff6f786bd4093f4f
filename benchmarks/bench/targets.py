"""The goals the benchmarks are held to, as one table, and their verdicts.

A target reads one section's rows (or the GPU results: pseudo-section "gpu"), picks the row
that answers it (or derives one), and compares one number of that row with its goal. A target
whose section has no such row is left out of the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .harness import Row, table, verdict
from .inference import precision_delta, precision_groups

Pick = Callable[[list[Row]], Row | None]


@dataclass(frozen=True)
class Target:
    what: str  # the table's text; {field} takes that field of the picked row
    section: str  # whose rows are read
    pick: Pick  # the row that answers the target, None: not measured
    field: str  # the number compared with the goal
    goal: float
    shown: str  # how the number is shown: a key of SHOWN
    at_most: bool = False  # the number must not exceed the goal (default: reach it)


SHOWN: dict[str, Callable[[float], str]] = {
    "ratio": lambda v: f"{v:.2f}×",
    "percent": lambda v: f"{100 * v:.0f} %",
    "percent.1": lambda v: f"{100 * v:.1f} %",
    "dB.3": lambda v: f"{v:.3f} dB",
    "dB.1": lambda v: f"{v:.1f} dB",
}


# ============================================================================ row pickers


def first(**match: Any) -> Pick:
    """The first row whose fields equal `match`."""

    def pick(rows: list[Row]) -> Row | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)

    return pick


def lowest(field: str, **match: Any) -> Pick:
    """Of the rows matching `match`, the one with the lowest `field` (the worst case)."""

    def pick(rows: list[Row]) -> Row | None:
        found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        return min(found, key=lambda r: r[field]) if found else None

    return pick


def last(rows: list[Row]) -> Row | None:
    return rows[-1] if rows else None


def best_fp32_inference(rows: list[Row]) -> Row | None:
    """Our fastest fp32 set-up against the reference (no bf16 or bf32 convs)."""

    def speed(r: Row) -> float:
        setup = r.get("setup", "")
        fp32 = setup.startswith("ours") and "bf16" not in setup and "bf32" not in setup
        return r.get("vs_reference_eager", 0) if fp32 else 0

    best = max(rows or [{}], key=speed)
    return best if best.get("setup") else None


def worst_precision_loss(rows: list[Row]) -> Row | None:
    """The largest |mean PSNR change| of `auto` against fp32 over (bundle, test set)."""
    quality = [r for r in rows if r["kind"] == "quality"]
    if not quality:
        return None
    return {"loss_db": max(abs(precision_delta(g)) for g in precision_groups(quality).values())}


TARGETS = (
    *(
        target
        for net in ("rcan-paper", "rcan-cpu")
        for target in (
            Target(
                f"CPU train step {net} ×2 ≥ 1.0× reference",
                "train",
                first(preset=net, scale=2),
                "speedup",
                1.0,
                "ratio",
            ),
            Target(
                f"CPU train step {net} ×2 ≥ 90 % of GEMM peak",
                "train",
                first(preset=net, scale=2),
                "of_gemm",
                0.9,
                "percent",
            ),
        )
    ),
    Target(
        "CPU inference ≥ 1.25× reference (eager), fp32 ({setup})",
        "infer",
        best_fp32_inference,
        "vs_reference_eager",
        1.25,
        "ratio",
    ),
    Target(
        "CPU inference ≥ 90 % of GEMM peak, fp32",
        "infer",
        best_fp32_inference,
        "of_gemm",
        0.9,
        "percent",
    ),
    Target(
        "CPU restore --precision auto ≥ 3× the fp32 reference (rcan-paper ×2)",
        "precision",
        first(kind="speed", auto=True, preset="rcan-paper"),
        "vs_reference",
        3.0,
        "ratio",
    ),
    Target(
        "restore --precision auto ≥ 1.0× fp32 (every network)",
        "precision",
        lowest("vs_fp32", kind="speed", auto=True),
        "vs_fp32",
        1.0,
        "ratio",
    ),
    Target(
        "auto within 0.05 dB of fp32 against GT (demo bundles)",
        "precision",
        worst_precision_loss,
        "loss_db",
        0.05,
        "dB.3",
        at_most=True,
    ),
    Target(
        "auto ≥ 45 dB PSNR against the fp32 output",
        "precision",
        lowest("psnr_auto_vs_fp32", kind="quality"),
        "psnr_auto_vs_fp32",
        45.0,
        "dB.1",
    ),
    *(
        Target(
            f"`{family}` degraded on the fly ≤ 10 % of a cpu-profile train step",
            "degrade",
            first(degradation=family),
            "ratio",
            0.1,
            "percent",
            at_most=True,
        )
        for family in ("realistic", "realistic-mix")
    ),
    *(
        Target(
            f"loader ≤ 10 % of a cpu-profile train step, `realistic-mix` per patch, "
            f"{workers} workers",
            "loader",
            first(kind="share", workers=workers),
            "share",
            0.1,
            "percent",
            at_most=True,
        )
        for workers in (0, 2)
    ),
    Target(
        "GPU ≥ 40 % MFU (bf16 dense datasheet peak; best row of {file})",
        "gpu",
        last,
        "mfu",
        0.4,
        "percent.1",
    ),
)


# ============================================================================ verdicts


def target_rows(sections: dict[str, Any]) -> list[list[str]]:
    """[target, measured, verdict] for each target whose section has its row."""
    out = []
    for t in TARGETS:
        row = t.pick(sections.get(t.section, {}).get("rows", []))
        if row is None:
            continue
        value = row.get(t.field)
        ok = None if value is None else (value <= t.goal if t.at_most else value >= t.goal)
        shown = "–" if value is None else SHOWN[t.shown](value)
        out.append([t.what.format(**row), shown, verdict(ok)])
    return out


def render_targets(sections: dict[str, Any]) -> list[str]:
    rows = target_rows(sections)
    if not rows:
        return []
    return ["## Targets", "", *table(["target", "measured", ""], rows), ""]
