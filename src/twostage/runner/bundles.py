"""A run's bundles: `bundles/<branch>.safetensors`, each branch's networks in one file."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from twostage.data.splits import short_name
from twostage.runner.networks import Run, branch_instances, branch_pipeline


def write_bundles(run: Run) -> list[Path]:
    """bundles/<branch>.safetensors (one per training degradation when there are several)."""
    written = []
    degradations = run.recipe.degradations
    for branch in run.recipe.branches:
        for deg in degradations:
            s1, s2 = branch_instances(run, branch, deg)
            specific = any(n is not None and n.degradation for n in (s1, s2))
            if not specific and deg != degradations[0]:
                continue
            name = branch.name
            if specific and len(degradations) > 1:
                name = f"{branch.name}-{short_name(deg)}"
            pipeline = branch_pipeline(run, branch, deg)
            if not all(hasattr(m, "spec") for m in (pipeline.stage1, pipeline.stage2) if m):
                # A given third-party (spandrel) network: its bundle cannot hold it. Say so.
                tqdm.write(
                    f"twostage: note: no bundle for {name}: a given off-the-shelf "
                    "network is not RCAN/EDSR; restore with its own checkpoint"
                )
                continue
            path = run.out / "bundles" / f"{name}.safetensors"
            about = {
                "branch": branch.name,
                "recipe": run.recipe.name,
                "profile": run.profile.name,
                "degradation": deg,
                "domain": branch.domain,
                "seed": str(run.seed),
                "networks": json.dumps([n.label for n in (s1, s2) if n is not None]),
            }
            pipeline.save_bundle(path, about)
            written.append(path)
    return written
