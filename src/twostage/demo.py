"""`twostage demo`: the blind sr-x4 demo recipe (trained on `realistic`, tested on the held-out
suite) on the embedded photos with the cpu profile; its tables and reading, printed."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import torch

from twostage import config, generalize
from twostage.data.splits import EMBEDDED
from twostage.recipes import demo_recipe
from twostage.report import describe, format_table
from twostage.runner import run_recipe


def run_demo(*, out: Path, seeds: int, quick: bool) -> None:
    """Run the demo recipe into `out` and print its tables, where its files are, and its reading."""
    torch.set_num_threads(2)
    start = time.perf_counter()
    recipe = demo_recipe()
    results = run_recipe(
        recipe,
        data={"samples": Path(EMBEDDED)},
        profile=config.QUICK if quick else config.PROFILES["cpu"],
        out=out,
        seeds=seeds,
        device="cpu",
        quiet=False,
    )
    minutes = (time.perf_counter() - start) / 60
    bundle = out / "bundles" / "map2-specialized-x2.safetensors"
    gen = results["generalization"]
    suite = gen["suite"] + gen.get("detail_suite", [])
    seen = {**results, "test_sets": [t for t in results["test_sets"] if t not in suite]}
    print(f"\n{format_table(seen)}\n")
    print(f"{generalize.text_table(results['generalization'])}\n")
    print(f"report:  {out / 'index.html'}")
    print(f"bundle:  {bundle} (a blind ×4 restorer)")
    print(f"         (try: twostage restore --model {bundle} photo.png --out restored/)")
    print(f"time:    {minutes:.1f} min{' (--quick)' if quick else ''}\n")
    print(textwrap.fill(describe(results, recipe.claim), width=96))
