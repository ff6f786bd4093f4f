"""The numbers of an experiment: results.{json,csv,md,tex}, their reading, strips and curves.

`results` is the dict written as results.json (docs/design.md, "Contracts"): recipe, profile, seed,
in_distribution, test_sets, branches, rows (one per branch × test set × image) and means (one per
branch × test set). With several seeds each row also carries its `seed`, `results["seeds"]` lists
them, and a mean carries `<metric>_std`: the standard deviation over seeds of the per-seed means.

When the run tests on the held-out suite, `results["generalization"]` is the branch × test-set
matrix of generalize.py: {"test_sets", "suite" (the suite's test sets), "branches", "psnr",
"ssim", "psnr_margin", "ssim_margin" (over interp-bicubic; lists of rows per branch, of columns
per test set), "mean_psnr", "mean_ssim", "mean_psnr_margin", "mean_ssim_margin" (over the suite,
one per branch), each with a `_std` twin (over seeds, null with one); with the embedded
fine-detail test sets, "detail_suite" and "detail_mean_*" the same over them}; results.md gets
its table and figures/generalization.png its heat-map. `results["stages"]` (stages.py) scores
each stage of the two-stage branches on its own job.

Tables follow the paper's Tables 1–3: one table per test set, branches as columns, metrics as rows.
Everything is written atomically; the HTML page around them is report_html.py's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twostage import generalize, stages
from twostage.ops.files import atomic_path, read_text_bounded, write_text_atomic
from twostage.ops.imageio import to_uint8

if TYPE_CHECKING:
    from twostage.recipes import Claim

# (key in rows, label in tables, True when higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("psnr", "PSNR (dB)", True),
    ("ssim", "SSIM", True),
    ("lpips_alex", "LPIPS-Alex", False),
    ("lpips_vgg", "LPIPS-VGG", False),
)
DIGITS = {"psnr": 3, "ssim": 4, "lpips_alex": 4, "lpips_vgg": 4}
GENERALIZATION_PNG = "figures/generalization.png"


@dataclass(frozen=True)
class Panel:
    """One image of a comparison strip: its label, the whole image, and its PSNR (or None)."""

    label: str
    image: np.ndarray  # H×W×3 float32 in [0, 1] or uint8, at the ground truth's size
    psnr: float | None


@dataclass(frozen=True)
class Comparison:
    """The versions of one test image: GT first, then the input, interp-bicubic and every
    branch. Drawn as a Fig. 1/Fig. 4-style crop strip, and saved whole for the page's viewer."""

    test_set: str
    image: str
    panels: tuple[Panel, ...]  # the first panel is the ground truth


def compute_means(rows: Sequence[dict], keys: Sequence[str] | None = None) -> list[dict]:
    """Mean of every metric (METRICS, or `keys`) per (branch, test set); with several seeds,
    mean ± std over seeds.

    The mean over seeds is the mean of each seed's mean over images, and `<metric>_std` is the
    sample standard deviation of those per-seed means (what `--seeds N` reports).
    """
    keys = [k for k, _, _ in METRICS] if keys is None else keys
    groups: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for row in rows:
        key = (row["branch"], row["test_set"])
        groups.setdefault(key, {}).setdefault(int(row.get("seed", 0)), []).append(row)
    means = []
    for (branch, test_set), by_seed in groups.items():
        entry: dict = {"branch": branch, "test_set": test_set}
        for key in keys:
            per_seed = [
                statistics.fmean(r[key] for r in seed_rows)
                for seed_rows in by_seed.values()
                if all(r.get(key) is not None for r in seed_rows)
            ]
            if len(per_seed) != len(by_seed):
                continue
            entry[key] = statistics.fmean(per_seed)
            if len(per_seed) > 1:
                entry[f"{key}_std"] = statistics.stdev(per_seed)
        entry["images"] = sum(len(v) for v in by_seed.values()) // len(by_seed)
        means.append(entry)
    return means


def mean_lookup(results: dict) -> dict[tuple[str, str], dict]:
    """The means of results.json by (branch, test set)."""
    return {(m["branch"], m["test_set"]): m for m in results["means"]}


def present_metrics(results: dict) -> list[tuple[str, str, bool]]:
    """The rows of METRICS that some mean has (LPIPS only when it was measured)."""
    return [m for m in METRICS if any(m[0] in mean for mean in results["means"])]


def format_mean(mean: dict | None, key: str, *, tex: bool = False) -> str:
    """A mean as tables print it: DIGITS decimals, ± its std over seeds when there are several."""
    if mean is None or mean.get(key) is None:
        return "–"
    text = f"{mean[key]:.{DIGITS[key]}f}"
    if f"{key}_std" in mean:
        sep = " $\\pm$ " if tex else " ± "
        text += f"{sep}{mean[f'{key}_std']:.{DIGITS[key]}f}"
    return text


def best_branch(results: dict, test_set: str, key: str, higher: bool) -> str | None:
    """The branch with the best mean `key` on `test_set` (None when no branch has it)."""
    lookup = mean_lookup(results)
    values = {
        b: lookup[(b, test_set)][key]
        for b in results["branches"]
        if (b, test_set) in lookup and lookup[(b, test_set)].get(key) is not None
    }
    if not values:
        return None
    return (max if higher else min)(values, key=values.__getitem__)


def title(results: dict, test_set: str) -> str:
    """A test set's heading; the in-distribution one says so."""
    note = " (in-distribution)" if test_set == results.get("in_distribution") else ""
    return f"{test_set}{note}"


def format_markdown(results: dict) -> str:
    """results.md: one table per test set, branches as columns, the best value in bold."""
    seeds = results.get("seeds", [results.get("seed")])
    lines = [
        f"# Results: {results['recipe']}",
        "",
        f"Profile `{results['profile']}`, seed(s) {', '.join(str(s) for s in seeds)}. "
        "PSNR/SSIM on RGB, border of `scale` pixels cropped"
        + ("; mean ± std over seeds." if len(seeds) > 1 else "."),
        "",
    ]
    lookup = mean_lookup(results)
    for test_set in results["test_sets"]:
        branches = [b for b in results["branches"] if (b, test_set) in lookup]
        lines += [f"## {title(results, test_set)}", ""]
        lines.append("| metric | " + " | ".join(f"`{b}`" for b in branches) + " |")
        lines.append("|---|" + "---:|" * len(branches))
        for key, label, higher in present_metrics(results):
            best = best_branch(results, test_set, key, higher)
            cells = []
            for b in branches:
                text = format_mean(lookup.get((b, test_set)), key)
                cells.append(f"**{text}**" if b == best else text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if "generalization" in results:
        lines.append(generalize.markdown(results["generalization"]))
    if "stages" in results:
        lines.append(stages.markdown(results["stages"]))
    return "\n".join(lines)


def _tex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&")


def format_latex(results: dict) -> str:
    """results.tex: one booktabs table per test set, laid out like the paper's tables."""
    lookup = mean_lookup(results)
    parts = [
        f"% twostage results: recipe {results['recipe']}, profile {results['profile']}",
        "% needs \\usepackage{booktabs}",
        "",
    ]
    for test_set in results["test_sets"]:
        branches = [b for b in results["branches"] if (b, test_set) in lookup]
        parts += [
            "\\begin{table}[t]",
            "\\centering",
            "\\small",
            f"\\begin{{tabular}}{{l{'c' * len(branches)}}}",
            "\\toprule",
            " & ".join(["Metric", *(_tex_escape(b) for b in branches)]) + " \\\\",
            "\\midrule",
        ]
        for key, label, higher in present_metrics(results):
            best = best_branch(results, test_set, key, higher)
            cells = []
            for b in branches:
                text = format_mean(lookup.get((b, test_set)), key, tex=True)
                cells.append(f"\\textbf{{{text}}}" if b == best else text)
            parts.append(" & ".join([label, *cells]) + " \\\\")
        parts += [
            "\\bottomrule",
            "\\end{tabular}",
            f"\\caption{{{_tex_escape(title(results, test_set))}: "
            f"recipe {_tex_escape(results['recipe'])}, profile "
            f"{_tex_escape(str(results['profile']))}.}}",
            "\\end{table}",
            "",
        ]
    return "\n".join(parts)


def format_csv(results: dict) -> str:
    """results.csv: one row per branch × test set × image (and seed), then one `mean` row each."""
    keys = [k for k, _, _ in present_metrics(results)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["seed", "branch", "test_set", "image", *keys])
    for row in results["rows"]:
        writer.writerow(
            [
                row.get("seed", results.get("seed")),
                row["branch"],
                row["test_set"],
                row["image"],
                *(_csv_value(row.get(k)) for k in keys),
            ]
        )
    for mean in results["means"]:
        writer.writerow(
            [
                "all",
                mean["branch"],
                mean["test_set"],
                "mean",
                *(_csv_value(mean.get(k)) for k in keys),
            ]
        )
    return buf.getvalue()


def _csv_value(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def format_table(results: dict) -> str:
    """A compact plain-text table (branch × test set, PSNR/SSIM) for the terminal."""
    lookup = mean_lookup(results)
    width = max(len(b) for b in results["branches"]) + 2
    cols = results["test_sets"]
    cell_w = max(22, *(len(c) + 2 for c in cols))
    head = "branch".ljust(width) + "".join(
        (c + ("*" if c == results.get("in_distribution") else "")).rjust(cell_w) for c in cols
    )
    lines = [head, "-" * len(head)]
    for b in results["branches"]:
        cells = []
        for c in cols:
            m = lookup.get((b, c))
            if m is None:
                cells.append("–".rjust(cell_w))
                continue
            text = f"{m['psnr']:.2f}"
            if "psnr_std" in m:
                text += f"±{m['psnr_std']:.2f}"
            text += f" / {m['ssim']:.3f}"
            cells.append(text.rjust(cell_w))
        lines.append(b.ljust(width) + "".join(cells))
    lines.append(
        "PSNR (dB) / SSIM on RGB"
        + (
            ";  * = in-distribution (the training degradation)"
            if results.get("in_distribution")
            else ""
        )
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the reading


# Profiles whose networks and schedules are tiny and CPU-sized: their reading says so.
SMALL_PROFILES = ("cpu", "tiny")


def describe(results: dict, claim: Claim | None = None) -> str:
    """A plain-language paragraph about the numbers: who won where, by how much, and whether
    the recipe's `claim` (its branch `ours` against `rival`) held, here and on the suite."""
    means = mean_lookup(results)
    learned = [b for b in results["branches"] if b != generalize.FLOOR]
    gen = results.get("generalization")
    suite = set(gen["suite"] + gen.get("detail_suite", [])) if gen else set()  # one matrix
    tests = [t for t in results["test_sets"] if t not in suite]
    parts = []
    for test in tests:
        scores = {b: means[(b, test)]["psnr"] for b in learned if (b, test) in means}
        if scores:
            parts.append(_test_set_reading(results, test, scores, claim))
    if claim is not None and claim.ours in learned and claim.rival in learned:
        parts += _claim_reading(results, tests, claim)
    if gen:
        parts.append(generalize.reading(gen, claim.ours, claim.rival) if claim else "")
    if "stages" in results:
        parts.append(stages.reading(results["stages"]))
    seeds = results.get("seeds")
    if seeds:
        parts.append(f"Means over {len(seeds)} seeds; ± is the standard deviation across seeds.")
    return " ".join(parts)


def _test_set_reading(
    results: dict, test: str, scores: dict[str, float], claim: Claim | None
) -> str:
    """One test set: the best branch, its margin over bicubic, who fell short, the runner-up."""
    best = max(scores, key=scores.__getitem__)
    floor = mean_lookup(results).get((generalize.FLOOR, test), {}).get("psnr")
    kind = (
        "the training degradation"
        if test == results.get("in_distribution")
        else "a degradation never seen in training"
    )
    text = f"On {test} ({kind}) the best branch is {best} at {scores[best]:.2f} dB"
    if floor is not None:
        text += _floor_reading(scores, best, floor)
    others = sorted((v, b) for b, v in scores.items() if b != best)
    if others:
        runner_up, gap = others[-1][1], scores[best] - others[-1][0]
        text += f"; the runner-up, {runner_up}, is {gap:.2f} dB behind"
    if (
        claim is not None
        and claim.ours in scores
        and claim.rival in scores
        and best not in (claim.ours, claim.rival)
    ):
        diff = scores[claim.ours] - scores[claim.rival]
        text += f"; {claim.ours} vs {claim.rival}: {diff:+.2f} dB"
    return text + "."


def _floor_reading(scores: dict[str, float], best: str, floor: float) -> str:
    """The best branch against bicubic interpolation, and the branches below or near it."""
    margin = scores[best] - floor
    text = (
        f", {margin:.2f} dB above bicubic interpolation"
        if margin >= 0
        else f", {-margin:.2f} dB below bicubic interpolation"
    )
    below = [b for b, v in scores.items() if v < floor]
    short = [b for b, v in scores.items() if floor <= v < floor + 0.5]
    if len(below) == len(scores):
        text += "; no learned branch beats bicubic here"
    elif below:
        text += "; " + _listing(below) + " below bicubic"
    if short:
        text += "; " + _listing(short) + " less than 0.5 dB above it"
    return text


def _claim_reading(results: dict, tests: list[str], claim: Claim) -> list[str]:
    """Whether `claim.ours` beat `claim.rival` on each test set (none without their means)."""
    means = mean_lookup(results)
    gaps = []
    for test in tests:
        a = means.get((claim.ours, test), {}).get("psnr")
        b = means.get((claim.rival, test), {}).get("psnr")
        if a is not None and b is not None:
            gaps.append((test, a - b))
    if not gaps:
        return []
    verdicts = [f"{d:+.2f} dB on {t}" for t, d in gaps]
    wins = sum(d > 0 for _, d in gaps)
    held = (
        "holds on every test set"
        if wins == len(gaps)
        else "holds on none of the test sets"
        if wins == 0
        else "holds on some test sets only"
    )
    scale = " at this (tiny, CPU-sized) scale" if results.get("profile") in SMALL_PROFILES else ""
    return [
        f"The recipe's claim is that {claim.ours} beats {claim.rival}, most of all on unseen "
        f"degradations; here {claim.ours} minus {claim.rival} is {', '.join(verdicts)}, "
        f"so the claim {held}{scale}."
    ]


def _listing(names: list[str]) -> str:
    return ", ".join(names) + (" is" if len(names) == 1 else " are")


# ----------------------------------------------------------------------------- figures


def pick_crop(gt: np.ndarray, *, size: int) -> tuple[int, int, int]:
    """The top-left corner and side of the square crop of `gt` with the most detail.

    Detail = mean absolute Laplacian of the gray image, searched on a stride of size/4 so the
    choice is deterministic and cheap. Images smaller than `size` give their smaller side.
    """
    h, w = gt.shape[:2]
    side = min(size, h, w)
    gray = to_uint8(gt).astype(np.float64).mean(axis=2)
    lap = np.zeros_like(gray)
    lap[1:-1, 1:-1] = np.abs(
        4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    )
    integral = np.pad(lap.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, side // 4)
    best = (-1.0, 0, 0)
    for top in range(0, h - side + 1, stride):
        for left in range(0, w - side + 1, stride):
            total = (
                integral[top + side, left + side]
                - integral[top, left + side]
                - integral[top + side, left]
                + integral[top, left]
            )
            if total > best[0]:
                best = (float(total), top, left)
    return best[1], best[2], side


def render_comparison(comparison: Comparison, *, crop: int = 96, display: int = 192):
    """A PIL image: the same crop of every panel, enlarged (nearest), labelled with its PSNR,
    under a title naming the test set and the image."""
    from PIL import Image, ImageDraw, ImageFont

    top, left, side = pick_crop(np.asarray(comparison.panels[0].image), size=crop)
    font = ImageFont.load_default()
    title_h, label_h, pad = 16, 30, 6
    strip = Image.new(
        "RGB",
        (len(comparison.panels) * (display + pad) + pad, title_h + display + label_h + 2 * pad),
        "white",
    )
    draw = ImageDraw.Draw(strip)
    draw.text((pad, pad), f"{comparison.test_set} / {comparison.image}", fill="black", font=font)
    y = pad + title_h
    for i, panel in enumerate(comparison.panels):
        patch = to_uint8(np.asarray(panel.image))[top : top + side, left : left + side]
        tile = Image.fromarray(patch).resize((display, display), Image.Resampling.NEAREST)
        x = pad + i * (display + pad)
        strip.paste(tile, (x, y))
        draw.text((x, y + display + 3), panel.label[:32], fill="black", font=font)
        if panel.psnr is not None:
            draw.text((x, y + display + 15), f"{panel.psnr:.2f} dB", fill="black", font=font)
    return strip


def read_metrics(metrics_csv: Path) -> list[dict[str, str]]:
    """The rows of a network's metrics.csv; none when it is missing, unreadable or not a
    regular file of at most limits.MAX_RUN_FILE_BYTES."""
    try:
        return list(csv.DictReader(io.StringIO(read_text_bounded(metrics_csv))))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def plot_curves(name: str, metrics_csv: Path, png: Path) -> bool:
    """Plot a network's metrics.csv (every numeric column against the iteration) to `png`.

    Returns False (and writes nothing) when the file is missing or has no numeric rows.
    """
    records = read_metrics(metrics_csv)
    if not records:
        return False
    columns = list(records[0].keys())
    x_key = next((c for c in ("iter", "iteration", "step") if c in columns), None)
    if x_key is None:
        return False
    series: dict[str, tuple[list[float], list[float]]] = {}
    for rec in records:
        x = _number(rec.get(x_key))
        if x is None:
            continue
        for col in columns:
            if col == x_key or col in ("time", "seconds", "epoch", "wall_s", "elapsed_s"):
                continue
            y = _number(rec.get(col))
            if y is not None:
                series.setdefault(col, ([], []))
                series[col][0].append(x)
                series[col][1].append(y)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 2.8), squeeze=False)
    for ax, (col, (xs, ys)) in zip(axes[0], series.items()):
        ax.plot(xs, ys, lw=1.2)
        ax.set_xlabel(x_key)
        ax.set_title(col, fontsize=9)
        if col == "lr" or (col.startswith("loss") and min(ys) > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def strict_json(obj: object) -> str:
    """`obj` as strict JSON (RFC 8259): NaN and ±Inf, which Python's json writes as bare
    `NaN`/`Infinity` that strict parsers reject, become null. The one place results.json's
    numbers are made safe; allow_nan=False makes any other path fail loudly."""

    def finite(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(obj), indent=2, allow_nan=False)


def write_report(results: dict, out_dir: Path) -> list[Path]:
    """Write results.{json,csv,md,tex} into `out_dir` and return their paths (results.json is
    strict JSON: a non-finite number is written as null).

    The page (index.html, its strips, views and curves) is report_html.write_page's;
    with a generalization matrix, its heat-map goes to figures/generalization.png.
    """
    out_dir = Path(out_dir)
    files = {
        "results.json": strict_json(results) + "\n",
        "results.csv": format_csv(results),
        "results.md": format_markdown(results) + "\n",
        "results.tex": format_latex(results),
    }
    for name, content in files.items():
        write_text_atomic(out_dir / name, content)
    written = [out_dir / name for name in files]
    gen = results.get("generalization")
    if gen is not None and generalize.heat_map(gen, out_dir / GENERALIZATION_PNG):
        written.append(out_dir / GENERALIZATION_PNG)
    return written
