"""Ship a trained bundle: copy it into the package and write its card data beside it.

    python scripts/ship_model.py runs/default-model --demo runs/demo

reads RUN/results.json (a `twostage run` of configs/recipes/default-model.yaml) and the demo's
results.json, copies RUN/bundles/map2-specialized-x2.safetensors to
src/twostage/weights/blind-x4.safetensors, writes blind-x4.json (the numbers docs/models.md and
`twostage models` show) and prints the SHA-256 to put in `twostage.models.shipped.SHIPPED`.
The demo comparison uses the demo's rows of the run's seed: the same seed degrades the same
test photos the same way, which is checked (interp-bicubic must agree to the last digit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from twostage.config import PROFILES
from twostage.ops.degrade import SUITE
from twostage.report import compute_means

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "map2-specialized-x2"


def _means(results: dict, branch: str, seed: int) -> dict[str, tuple[float, float]]:
    """{test set: (mean PSNR, mean SSIM)} of one branch at one seed (report.compute_means)."""
    rows = [r for r in results["rows"] if r["branch"] == branch and r["seed"] == seed]
    return {m["test_set"]: (m["psnr"], m["ssim"]) for m in compute_means(rows)}


def card_data(run: dict, demo: dict, *, command: str) -> dict:
    seed = run["seed"]
    ours, bicubic = _means(run, BRANCH, seed), _means(run, "interp-bicubic", seed)
    demo_ours, demo_bicubic = _means(demo, BRANCH, seed), _means(demo, "interp-bicubic", seed)
    suite = [f"samples-{name}" for name in SUITE]
    for test_set in [*suite, "samples-gaussian-aniso"]:
        if demo_bicubic.get(test_set) != bicubic[test_set]:
            sys.exit(f"{test_set}: the demo's test inputs differ from the run's (seed {seed}?)")
    table = {
        t: {
            "psnr": ours[t][0],
            "ssim": ours[t][1],
            "bicubic_psnr": bicubic[t][0],
            "bicubic_ssim": bicubic[t][1],
            "demo_psnr": demo_ours[t][0],
        }
        for t in [*suite, "samples-gaussian-aniso", run["in_distribution"]]
    }
    margins = [table[t]["psnr"] - table[t]["bicubic_psnr"] for t in suite]
    profile = PROFILES[run["profile"]]
    return {
        "command": command,
        "recipe": run["recipe"],
        "profile": run["profile"],
        "networks": profile.rcan,
        "iterations": {
            role: profile.iterations_for(role) for role in ("offshelf", "mapping", "specialized")
        },
        "seed": seed,
        "in_distribution": run["in_distribution"],
        "train_seconds": run["seconds"],
        "suite": suite,
        "table": table,
        "suite_mean_margin": sum(margins) / len(margins),
        "suite_above": sum(m > 0 for m in margins),
        "vs_demo": sum(table[t]["psnr"] - table[t]["demo_psnr"] for t in suite) / len(suite),
    }


def markdown(data: dict) -> str:
    """The card's results table: PSNR/SSIM per test set against interp-bicubic and the demo."""
    rows = [
        "| test set | bicubic PSNR / SSIM | blind-x4 PSNR / SSIM | vs bicubic dB | vs demo dB |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in [*data["suite"], "mean", "samples-gaussian-aniso", data["in_distribution"]]:
        if t == "mean":
            vals = [data["table"][s] for s in data["suite"]]
            v = {k: sum(x[k] for x in vals) / len(vals) for k in vals[0]}
            name = "**suite mean**"
        else:
            v, name = data["table"][t], t.removeprefix("samples-")
        rows.append(
            f"| {name} | {v['bicubic_psnr']:.2f} / {v['bicubic_ssim']:.3f} "
            f"| {v['psnr']:.2f} / {v['ssim']:.3f} | {v['psnr'] - v['bicubic_psnr']:+.2f} "
            f"| {v['psnr'] - v['demo_psnr']:+.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the default-model run folder")
    parser.add_argument("--demo", type=Path, required=True, help="a `twostage demo` run folder")
    parser.add_argument("--name", default="blind-x4")
    args = parser.parse_args()
    run = json.loads((args.run / "results.json").read_text())
    demo = json.loads((args.demo / "results.json").read_text())
    command = (
        f"twostage run configs/recipes/default-model.yaml --profile {run['profile']} "
        f"--out {args.run}"
    )
    data = card_data(run, demo, command=command)
    weights = ROOT / "src" / "twostage" / "weights"
    weights.mkdir(exist_ok=True)
    target = weights / f"{args.name}.safetensors"
    shutil.copyfile(args.run / "bundles" / f"{BRANCH}.safetensors", target)
    (weights / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {target} and {args.name}.json")
    print(f"sha256 {hashlib.sha256(target.read_bytes()).hexdigest()}")
    print(f"suite mean {data['suite_mean_margin']:+.3f} dB over bicubic, ", end="")
    print(f"above on {data['suite_above']}/{len(data['suite'])}, {data['vs_demo']:+.3f} vs demo")
    print(markdown(data))


if __name__ == "__main__":
    main()
