"""results.json's "stages": each stage of the two-stage branches on its own job, against bicubic.

The runner (runner/stages.py) writes, for every branch with a stage 1 and every test set, rows
per image and means (report.compute_means over KEYS: per seed, then mean ± `_std` over seeds):
stage 1 against its true intermediate and bicubic on that job, stage 2 alone on the true
intermediate (the ceiling a perfect stage 1 would reach) and bicubic on it, the whole pipeline
and interp-bicubic. `markdown` is its table in results.md; `reading` says which stage loses more.
"""

from __future__ import annotations

import statistics

# (stage's PSNR key, its bicubic's key, column heading), in the order the tables show them
STAGES: tuple[tuple[str, str, str], ...] = (
    ("stage1_psnr", "stage1_bicubic_psnr", "stage 1"),
    ("stage2_psnr", "stage2_bicubic_psnr", "stage 2 on the true intermediate"),
    ("pipeline_psnr", "pipeline_bicubic_psnr", "pipeline"),
)
KEYS: tuple[str, ...] = tuple(k for keys in STAGES for k in keys[:2])
ABOUT = (
    "Stage 1 against its true intermediate (the branch's domain image of HR), beside bicubic "
    "of the input resized to it (the input itself for a ×1 map); stage 2 alone on the true "
    "intermediate against HR (the ceiling a perfect stage 1 would reach), beside bicubic of the "
    "true intermediate; the whole pipeline, beside interp-bicubic. PSNR (dB) on RGB, {border} "
    "pixels of HR cropped at each border (fewer of a smaller intermediate: the same region); "
    "the margin over bicubic in brackets."
)


def ordered_means(stages: dict) -> list[dict]:
    """The means branch by branch, each over the test sets in the report's order."""
    by = {(m["branch"], m["test_set"]): m for m in stages["means"]}
    pairs = [(b, t) for b in stages["branches"] for t in stages["test_sets"]]
    return [by[k] for k in pairs if k in by]


def _cell(mean: dict, key: str, floor: str | None = None) -> str:
    text = f"{mean[key]:.2f}" + (f" ± {mean[key + '_std']:.2f}" if key + "_std" in mean else "")
    return text + (f" ({mean[key] - mean[floor]:+.2f})" if floor else "")


def markdown(stages: dict) -> str:
    """results.md's section: one row per two-stage branch × test set."""
    head = ["branch", "test set"] + [h for _, _, name in STAGES for h in (name, "bicubic")]
    lines = [
        "## Stage by stage: each stage on its own job (PSNR, dB)",
        "",
        ABOUT.format(border=stages["crop_border"]),
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for m in ordered_means(stages):
        cells = [c for stage, floor, _ in STAGES for c in (_cell(m, stage, floor), _cell(m, floor))]
        lines.append(f"| `{m['branch']}` | {m['test_set']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def margins(stages: dict, branch: str) -> dict[str, float]:
    """A branch's mean over its test sets of: stage 1's and stage 2's margins over bicubic on
    their own jobs (`stage1`, `stage2`) and the stage-2 ceiling minus the pipeline (`gap`)."""
    means = [m for m in stages["means"] if m["branch"] == branch]
    return {
        "stage1": statistics.fmean(m["stage1_psnr"] - m["stage1_bicubic_psnr"] for m in means),
        "stage2": statistics.fmean(m["stage2_psnr"] - m["stage2_bicubic_psnr"] for m in means),
        "gap": statistics.fmean(m["stage2_psnr"] - m["pipeline_psnr"] for m in means),
    }


def reading(stages: dict) -> str:
    """Per two-stage branch: each stage's margin over bicubic on its own job, how far the whole
    pipeline is below what a perfect stage 1 would give, and which stage loses more."""
    parts = []
    for branch in stages["branches"]:
        if not any(m["branch"] == branch for m in stages["means"]):
            continue
        d = margins(stages, branch)
        weaker = "stage 1" if d["stage1"] < d["stage2"] else "stage 2"
        parts.append(
            f"Stage by stage, {branch} (mean over {len(stages['test_sets'])} test sets): stage 1 "
            f"is {d['stage1']:+.2f} dB against bicubic on its own job; stage 2 is "
            f"{d['stage2']:+.2f} dB on the true intermediate, a ceiling {d['gap']:+.2f} dB over "
            f"the whole pipeline; {weaker} loses more."
        )
    return " ".join(parts)
