"""The generalization matrix: every branch on every test degradation, against interp-bicubic.

`matrix(results, suite=..., detail=...)` is results.json's `"generalization"` key (report.py
documents it): branch × test set PSNR/SSIM, their margins over `interp-bicubic` (per seed, then
mean ± std over seeds), and each branch's mean margin over the held-out suite's test sets (the
photos'; with `detail`, also over the fine-detail images' suite test sets, apart). `markdown` is
its table in results.md; `heat_map` draws the PSNR margins at a glance (figures/).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twostage.ops.files import atomic_path

FLOOR = "interp-bicubic"


def _per_seed(rows: Sequence[dict], key: str) -> dict[tuple[str, str], dict[int, float]]:
    """Mean of `key` over images for every (branch, test set), per seed."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for row in rows:
        by_seed = groups.setdefault((row["branch"], row["test_set"]), {})
        by_seed.setdefault(int(row.get("seed", 0)), []).append(float(row[key]))
    return {k: {s: statistics.fmean(v) for s, v in d.items()} for k, d in groups.items()}


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def matrix(results: dict, *, suite: Sequence[str], detail: Sequence[str] = ()) -> dict:
    """results.json's "generalization": lists of rows (one per branch) of columns (test sets).

    Keys: test_sets, suite (the test sets of the held-out suite), branches, and for metric in
    psnr, ssim: `<metric>` and `<metric>_margin` (branch − interp-bicubic), `mean_<metric>` and
    `mean_<metric>_margin` (over the suite's test sets, one value per branch), each with a
    `_std` twin (std over seeds; null with one seed). Margins are taken seed by seed. With
    `detail` (the fine-detail images' suite test sets, kept out of `suite`): `detail_suite` and
    `detail_mean_<metric>`, `detail_mean_<metric>_margin` (+ `_std`), the same over them.
    """
    out: dict = {
        "test_sets": list(results["test_sets"]),
        "suite": list(suite),
        "branches": list(results["branches"]),
    }
    if detail:
        out["detail_suite"] = list(detail)
    for key in ("psnr", "ssim"):
        raw = _per_seed(results["rows"], key)
        margin = {
            (b, t): {s: v - raw[(FLOOR, t)][s] for s, v in by_seed.items()}
            for (b, t), by_seed in raw.items()
        }
        _fill(out, key, raw)
        _fill(out, f"{key}_margin", margin)
    return out


def _fill(out: dict, name: str, table: dict[tuple[str, str], dict[int, float]]) -> None:
    """out[name] (+ _std): branch × test set; out[mean_<name>] (+ _std): the suite mean, and
    out[detail_mean_<name>] (+ _std) over the detail suite when there is one."""
    branches, tests = out["branches"], out["test_sets"]
    cells = [[_mean_std(list(table[(b, t)].values())) for t in tests] for b in branches]
    out[name] = [[c[0] for c in row] for row in cells]
    out[f"{name}_std"] = [[c[1] for c in row] for row in cells]
    for prefix, suite in _suites(out):
        means = [_suite_mean(table, b, suite) for b in branches]
        out[f"{prefix}mean_{name}"] = [m[0] for m in means]
        out[f"{prefix}mean_{name}_std"] = [m[1] for m in means]


def _suite_mean(
    table: dict[tuple[str, str], dict[int, float]], branch: str, suite: Sequence[str]
) -> tuple[float | None, float | None]:
    """A branch's mean over the suite's test sets, per seed, then mean ± std over seeds."""
    seeds = table[(branch, suite[0])].keys() if suite else []
    per_seed = [statistics.fmean(table[(branch, t)][s] for t in suite) for s in seeds]
    return _mean_std(per_seed) if per_seed else (None, None)


def _suites(gen: dict) -> list[tuple[str, list[str]]]:
    """(key prefix, test sets) of the photos' suite and of the detail suite (when present)."""
    detail = [("detail_", gen["detail_suite"])] if "detail_suite" in gen else []
    return [("", gen["suite"]), *detail]


def _cell(value: float | None, std: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def markdown(gen: dict) -> str:
    """results.md's section: PSNR of interp-bicubic, then every branch's margin over it."""
    tests, suite, detail = gen["test_sets"], gen["suite"], gen.get("detail_suite", [])
    head = ["branch", *tests] + (["suite mean"] if suite else [])
    head += ["detail suite mean"] if detail else []
    lines = [
        "## Generalization: PSNR margin over interp-bicubic (dB)",
        "",
        f"Suite (held out from training): {', '.join(suite) or 'none'}. The first row is "
        "interp-bicubic's own PSNR; ± is the std over seeds."
        + (
            f" The detail suite mean is over the fine-detail images ({', '.join(detail)}), "
            "apart from the suite mean of the photos."
            if detail
            else ""
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for i, branch in enumerate(gen["branches"]):
        margin = branch != FLOOR
        key = "psnr_margin" if margin else "psnr"
        cells = [_cell(v, s) for v, s in zip(gen[key][i], gen[f"{key}_std"][i])]
        if not margin:
            cells = [c.lstrip("+") for c in cells]
        for prefix in (p for p, tests in _suites(gen) if tests):
            mean = _cell(gen[f"{prefix}mean_{key}"][i], gen[f"{prefix}mean_{key}_std"][i])
            cells.append(mean if margin else mean.lstrip("+"))
        lines.append(f"| `{branch}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heat_map(gen: dict, png: Path) -> bool:
    """figures/generalization.png: learned branches × test sets (+ the suite mean), coloured by
    PSNR margin over interp-bicubic (red below, blue above, white at 0), numbers in the cells.
    False (nothing written) when there is no learned branch."""
    rows = [i for i, b in enumerate(gen["branches"]) if b != FLOOR]
    if not rows:
        return False
    means = [p for p, suite in _suites(gen) if suite]
    cols = list(gen["test_sets"]) + [f"{p.replace('_', ' ')}suite mean" for p in means]
    data = np.array(
        [gen["psnr_margin"][i] + [gen[f"{p}mean_psnr_margin"][i] for p in means] for i in rows],
        dtype=float,
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = min(2.0, max(0.5, float(np.nanmax(np.abs(data)))))  # ±2 dB saturates
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 1.2 + 0.45 * len(rows)))
    image = ax.imshow(data, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(
        range(len(cols)),
        [c.removeprefix("samples-") for c in cols],
        rotation=40,
        ha="right",
        fontsize=8,
    )
    ax.set_yticks(range(len(rows)), [gen["branches"][i] for i in rows], fontsize=8)
    for (r, c), v in np.ndenumerate(data):
        colour = "white" if abs(v) > 0.6 * limit else "black"
        ax.text(c, r, f"{v:+.2f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label="dB vs bicubic")
    ax.set_title("PSNR margin over bicubic interpolation", fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def reading(gen: dict, ours: str, rival: str) -> str:
    """Where a recipe's claim (branch `ours` beats branch `rival`) held on the suite: `ours`
    against interp-bicubic on every suite entry and on the suite mean, then against `rival`.
    Empty without the suite or without `ours`."""
    branches, suite = gen["branches"], gen["suite"]
    if not suite or ours not in branches:
        return ""
    cols = [gen["test_sets"].index(t) for t in suite]
    i = branches.index(ours)
    margin = {gen["test_sets"][c]: gen["psnr_margin"][i][c] for c in cols}
    below = [t for t, v in margin.items() if v <= 0]
    mean = gen["mean_psnr_margin"][i]
    text = (
        f"On the held-out suite ({len(suite)} degradations never trained on), {ours} is above "
        f"bicubic interpolation on {len(suite) - len(below)} of {len(suite)}"
        + (f" (not on {', '.join(below)})" if below else "")
        + f"; its mean margin over it is {mean:+.2f} dB."
    )
    if gen.get("detail_suite"):
        detail = gen["detail_mean_psnr_margin"][i]
        text += (
            f" On the fine-detail images (print and man-made structure) under the same "
            f"degradations, its mean margin is {detail:+.2f} dB."
        )
    if rival in branches:
        j = branches.index(rival)
        gaps = {t: margin[t] - gen["psnr_margin"][j][c] for t, c in zip(suite, cols)}
        behind = [t for t, v in gaps.items() if v < 0]
        diff = mean - gen["mean_psnr_margin"][j]
        text += (
            f" Against {rival} it is ahead on {len(suite) - len(behind)} of {len(suite)}"
            + (f" (behind on {', '.join(behind)})" if behind else "")
            + f" and {diff:+.2f} dB on the suite mean, so the claim "
            + ("holds" if diff >= 0 else "does not hold")
            + " across the suite on average."
        )
    return text


def text_table(gen: dict) -> str:
    """The matrix for a terminal, transposed (a row per test set, then the suite mean):
    interp-bicubic's PSNR and every learned branch's margin over it, in dB."""
    learned = [i for i, b in enumerate(gen["branches"]) if b != FLOOR]
    floor = gen["branches"].index(FLOOR)
    tests = gen["test_sets"]
    labels = [t if t in gen["suite"] or c else f"{t} (trained)" for c, t in enumerate(tests)]
    width = max(len(t) for t in [*labels, "detail suite mean"]) + 2
    cell = max(16, *(len(gen["branches"][i]) + 2 for i in learned))
    head = "test set".ljust(width) + "bicubic dB".rjust(cell)
    head += "".join(gen["branches"][i].rjust(cell) for i in learned)
    lines = [head, "-" * len(head)]

    def row(label: str, psnr: tuple, margins: list[tuple]) -> str:
        cells = [_cell(*psnr).lstrip("+")] + [_cell(*m) for m in margins]
        return label.ljust(width) + "".join(c.rjust(cell) for c in cells)

    for c, label in enumerate(labels):
        lines.append(
            row(
                label,
                (gen["psnr"][floor][c], gen["psnr_std"][floor][c]),
                [(gen["psnr_margin"][i][c], gen["psnr_margin_std"][i][c]) for i in learned],
            )
        )
    for p, suite in _suites(gen):
        if suite:
            lines.append(
                row(
                    f"{p.replace('_', ' ')}suite mean",
                    (gen[f"{p}mean_psnr"][floor], gen[f"{p}mean_psnr_std"][floor]),
                    [
                        (gen[f"{p}mean_psnr_margin"][i], gen[f"{p}mean_psnr_margin_std"][i])
                        for i in learned
                    ],
                )
            )
    lines.append("PSNR margin over bicubic interpolation (dB, RGB); ± = std over seeds")
    return "\n".join(lines)
