"""Ship a trained bundle: copy it into the package and write its card data beside it.

    python scripts/ship_model.py runs/default-model --name blind-x4 --strength 0.75 \\
        [--branch map2-specialized-x2] [--demo runs/demo]

reads RUN/results.json (a `twostage run` of configs/recipes/default-model.yaml or blind-x2.yaml),
copies RUN/bundles/BRANCH.safetensors to src/twostage/weights/NAME.safetensors and writes
NAME.json: the run's table at strength 1, stage 1 on clean (bicubic) input from the run's stage
diagnostics, and the held-out suite on the test photos and on the fine-detail images at
`--strength`, the default that benchmarks/strength.py chose on the training images
(benchmarks/shipped_suite.py measures them). It prints the SHA-256 to put in
`twostage.models.shipped.SHIPPED`. `--demo`: also compare with the demo's rows of the run's seed;
the same seed degrades the same test photos the same way, which is checked (interp-bicubic must
agree to the last digit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
from pathlib import Path

import twostage
from twostage.config import PROFILES
from twostage.ops.degrade import SUITE
from twostage.report import compute_means

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shipped_suite import margins  # noqa: E402  (benchmarks/ is a folder of scripts)


def _means(results: dict, branch: str, seed: int) -> dict[str, tuple[float, float]]:
    """{test set: (mean PSNR, mean SSIM)} of one branch at one seed (report.compute_means)."""
    rows = [r for r in results["rows"] if r["branch"] == branch and r["seed"] == seed]
    return {m["test_set"]: (m["psnr"], m["ssim"]) for m in compute_means(rows)}


def _table(run: dict, branch: str) -> dict:
    """{test set: PSNR/SSIM of the branch and of bicubic} at strength 1, from the run."""
    seed = run["seed"]
    ours, bicubic = _means(run, branch, seed), _means(run, "interp-bicubic", seed)
    tests = [t for t in ours if t.startswith("samples-")]
    return {
        t: {
            "psnr": ours[t][0],
            "ssim": ours[t][1],
            "bicubic_psnr": bicubic[t][0],
            "bicubic_ssim": bicubic[t][1],
        }
        for t in tests
    }


def _vs_demo(run: dict, demo: dict, table: dict, branch: str) -> float:
    """Mean PSNR over the suite against the demo's same branch, same seed, same inputs."""
    seed = run["seed"]
    demo_ours, demo_bicubic = _means(demo, branch, seed), _means(demo, "interp-bicubic", seed)
    suite = [f"samples-{name}" for name in SUITE]
    for test_set in [*suite, "samples-gaussian-aniso"]:
        if demo_bicubic.get(test_set, (None,))[0] != table[test_set]["bicubic_psnr"]:
            sys.exit(f"{test_set}: the demo's test inputs differ from the run's (seed {seed}?)")
    for t in suite:
        table[t]["demo_psnr"] = demo_ours[t][0]
    return statistics.mean(table[t]["psnr"] - demo_ours[t][0] for t in suite)


def _stage1_clean(run: dict, branch: str) -> dict:
    """Stage 1 against its true intermediate on clean bicubic input, beside bicubic's."""
    (row,) = [
        m
        for m in run["stages"]["means"]
        if m["branch"] == branch and m["test_set"] == "samples-bicubic"
    ]
    return {"psnr": row["stage1_psnr"], "bicubic_psnr": row["stage1_bicubic_psnr"]}


def card_data(run: dict, bundle: Path, *, branch: str, strength: float, command: str) -> dict:
    """The card: the run's numbers at strength 1, the suite measured at `strength`."""
    model = twostage.load(bundle, device="cpu", precision="fp32")
    at = margins(model, split="test", strength=strength)
    detail = margins(model, split="detail", strength=strength)
    profile = PROFILES[run["profile"]]
    return {
        "command": command,
        "recipe": run["recipe"],
        "profile": run["profile"],
        "scale": model.scale,
        "networks": profile.rcan,
        "iterations": {
            role: profile.iterations_for(role) for role in ("offshelf", "mapping", "specialized")
        },
        "seed": run["seed"],
        "in_distribution": run["in_distribution"],
        "train_seconds": run["seconds"],
        "suite": [f"samples-{name}" for name in SUITE],
        "table": _table(run, branch),
        "stage1_clean": _stage1_clean(run, branch),
        "strength": strength,
        "at_strength": {f"samples-{name}": m for name, m in at.items()},
        "detail_at_strength": {f"detail-{name}": m for name, m in detail.items()},
        "suite_mean_margin": statistics.mean(at.values()),
        "suite_above": sum(m > 0 for m in at.values()),
        "detail_mean_margin": statistics.mean(detail.values()),
        "vs_demo": None,
    }


def markdown(data: dict) -> str:
    """The card's results table: per suite entry, bicubic, the model at strength 1 and at its
    default strength (PSNR over bicubic, dB), and on the fine-detail images at the default."""
    s = data["strength"]
    rows = [
        f"| test set | bicubic PSNR / SSIM | strength 1 PSNR / SSIM | vs bicubic, s = 1 "
        f"| vs bicubic, s = {s:g} | fine detail vs bicubic, s = {s:g} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in data["suite"]:
        v, name = data["table"][t], t.removeprefix("samples-")
        detail = data["detail_at_strength"][f"detail-{name}"]
        rows.append(
            f"| {name} | {v['bicubic_psnr']:.2f} / {v['bicubic_ssim']:.3f} "
            f"| {v['psnr']:.2f} / {v['ssim']:.3f} | {v['psnr'] - v['bicubic_psnr']:+.2f} "
            f"| {data['at_strength'][t]:+.2f} | {detail:+.2f} |"
        )
    full = statistics.mean(
        data["table"][t]["psnr"] - data["table"][t]["bicubic_psnr"] for t in data["suite"]
    )
    rows.append(
        f"| **suite mean** | | | {full:+.2f} | **{data['suite_mean_margin']:+.2f}** "
        f"| **{data['detail_mean_margin']:+.2f}** |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder of the shipped recipe")
    parser.add_argument("--name", required=True, help="blind-x4 or blind-x2")
    parser.add_argument("--strength", type=float, required=True, help="the chosen default")
    parser.add_argument("--branch", help="default: the run's specialized ×2 branch")
    parser.add_argument("--demo", type=Path, help="a `twostage demo` run folder to compare with")
    args = parser.parse_args()
    run = json.loads((args.run / "results.json").read_text())
    recipe = {"blind-x4": "default-model", "blind-x2": "blind-x2"}.get(args.name, args.name)
    command = (
        f"twostage run configs/recipes/{recipe}.yaml --profile {run['profile']} --out {args.run}"
    )
    branch = args.branch or next(b for b in run["branches"] if b.endswith("specialized-x2"))
    bundle = args.run / "bundles" / f"{branch}.safetensors"
    data = card_data(run, bundle, branch=branch, strength=args.strength, command=command)
    if args.demo:
        demo = json.loads((args.demo / "results.json").read_text())
        data["vs_demo"] = _vs_demo(run, demo, data["table"], branch)
    weights = ROOT / "src" / "twostage" / "weights"
    weights.mkdir(exist_ok=True)
    target = weights / f"{args.name}.safetensors"
    shutil.copyfile(bundle, target)
    (weights / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {target} and {args.name}.json")
    print(f"sha256 {hashlib.sha256(target.read_bytes()).hexdigest()}")
    print(f"suite mean {data['suite_mean_margin']:+.3f} dB over bicubic at s = {args.strength:g}")
    print(markdown(data))


if __name__ == "__main__":
    main()
