"""Choose the shipped model's default `--strength` on a validation split of the TRAINING images.

    PYTHONPATH=src python benchmarks/strength.py [--model blind-x4] [--crop 256] [--out FILE.json]

The embedded training split (`load_samples("train")`, never the test photos), each image
centre-cropped to at most CROP×CROP (mod the scale, to bound the time on a 2-core CPU), degraded
by `realistic-mix` (one family for every model compared) and by the nine suite presets (`SUITE`)
at the model's scale, one fixed seed per image (`derive_seed(0, name)`, as `twostage degrade`
derives them). Each degraded input is restored by the model (`--model`: a shipped name or a
bundle file; fp32, CPU, whole image) at every strength in STRENGTHS; the score is PSNR (RGB,
border = scale, both sides rounded to 8 bits) minus that of MATLAB bicubic of the same input.
The default is the strength of the best mean over the ten sets. Then the self-ensemble (`tta=True`)
is measured at that strength on the five photos of the split (not the dead leaves: 8× the time),
against the same photos without it, and its time against a plain restore (one crop, best of 2).
Each finished strength is kept in the output file, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np

from twostage.data.samples import load_samples
from twostage.ops.degrade import SUITE, degrade, derive_seed
from twostage.ops.imageio import to_float
from twostage.ops.metrics import psnr
from twostage.ops.resize import imresize
from twostage.restore import open_model

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
PRESETS = ("realistic-mix", *SUITE)


def _crop(img: np.ndarray, side: int, scale: int) -> np.ndarray:
    """The centre side×side crop (or the whole side when shorter), mod-cropped to `scale`."""
    h, w = (min(side, n) // scale * scale for n in img.shape[:2])
    y, x = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[y : y + h, x : x + w]


def _score(out: np.ndarray, hr: np.ndarray, scale: int) -> float:
    def rounded(a: np.ndarray) -> np.ndarray:
        return np.floor(np.clip(a, 0.0, 1.0) * 255.0 + 0.5) / 255.0

    return psnr(rounded(out), rounded(hr), crop_border=scale)


def _gains(pipe, jobs, strength: float, *, tta: bool = False, only=None) -> dict[str, dict]:
    """{preset: {image: PSNR over bicubic}} at one strength (the images named in `only`)."""
    restore = partial(pipe.restore, tile=None, strength=strength, tta=tta)
    return {
        preset: {
            name: _score(restore(lr), hr, pipe.scale) - bicubic
            for name, hr, lr, bicubic in items
            if only is None or name in only
        }
        for preset, items in jobs.items()
    }


def _means(gains: dict[str, dict], only=None) -> dict[str, float]:
    """Mean per preset over the images (those named in `only`)."""
    return {
        preset: float(np.mean([g for name, g in row.items() if only is None or name in only]))
        for preset, row in gains.items()
    }


def _mean(gains: dict[str, dict], only=None) -> float:
    return float(np.mean(list(_means(gains, only).values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blind-x4", help="a shipped name or a bundle file")
    parser.add_argument("--crop", type=int, default=256, help="HR crop side (default 256)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/strength-MODEL.json")
    parser.add_argument("--render", action="store_true", help="print the tables of --out")
    args = parser.parse_args()
    args.out = args.out or Path(f"benchmarks/results/strength-{Path(args.model).stem}.json")
    if args.render:
        print(render(json.loads(args.out.read_text())))
        return
    pipe = open_model(args.model, device="cpu", precision="fp32")
    scale = pipe.scale
    crops = [(name, _crop(img, args.crop, scale)) for name, img in load_samples("train")]
    images = [(name, to_float(img)) for name, img in crops]
    jobs = {}
    for preset in PRESETS:
        items = []
        for name, hr in images:
            lr = degrade(hr, preset, scale=scale, seed=derive_seed(0, name))
            bicubic = _score(imresize(lr, float(scale)), hr, scale)
            items.append((name, hr, lr, bicubic))
        jobs[preset] = items
    done = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if (done.get("crop"), done.get("model")) != (args.crop, args.model):
        done = {"crop": args.crop, "model": args.model, "gains": {}}
    table = {float(s): row for s, row in done["gains"].items()}
    for strength in STRENGTHS:
        if strength not in table:
            start = time.perf_counter()
            table[strength] = _gains(pipe, jobs, strength)
            print(f"s={strength}: {time.perf_counter() - start:.0f} s")
            done["gains"] = {str(s): row for s, row in table.items()}
            _save(args.out, done)
        print(f"s={strength}: mean {_mean(table[strength]):+.3f} dB")
    means = {s: _mean(table[s]) for s in STRENGTHS}
    best = max(STRENGTHS, key=lambda s: means[s])
    photos = [name for name, _ in images if not name.startswith("deadleaves")]
    tta = _gains(pipe, jobs, best, tta=True, only=photos)
    lr = jobs["bicubic"][0][2]
    seconds = {}
    for flag in (False, True):
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            pipe.restore(lr, tile=None, strength=best, tta=flag)
            runs.append(time.perf_counter() - start)
        seconds["tta" if flag else "plain"] = min(runs)
    result = {
        "command": f"python benchmarks/strength.py --model {args.model} --crop {args.crop}",
        "model": args.model,
        "scale": scale,
        "machine": platform.processor() or platform.machine(),
        "images": [name for name, _ in images],
        "crop": args.crop,
        "presets": list(PRESETS),
        "gains": {str(s): table[s] for s in STRENGTHS},
        "margins": {str(s): _means(table[s]) for s in STRENGTHS},
        "means": {str(s): m for s, m in means.items()},
        "photos": photos,
        "photos_means": {str(s): _mean(table[s], photos) for s in STRENGTHS},
        "best": best,
        "photos_margins": _means(table[best], photos),
        "photos_mean": _mean(table[best], photos),
        "tta_gains": tta,
        "tta_margins": _means(tta),
        "tta_mean": _mean(tta),
        "tta_seconds": seconds,
        "tta_image": f"{lr.shape[1]}x{lr.shape[0]}",
    }
    _save(args.out, result)
    print(render(result))


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def render(result: dict) -> str:
    """Markdown: mean PSNR over bicubic per preset and strength; TTA at the best strength."""
    strengths = list(result["margins"])
    lines = ["| set | " + " | ".join(f"s = {s}" for s in strengths) + " |"]
    lines.append("|---" * (len(strengths) + 1) + "|")
    for preset in result["presets"]:
        cells = [f"{result['margins'][s][preset]:+.2f}" for s in strengths]
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    cells = [f"**{result['means'][s]:+.3f}**" for s in strengths]
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    cells = [f"{result['photos_means'][s]:+.3f}" for s in strengths]
    lines.append(f"| mean of the {len(result['photos'])} photos | " + " | ".join(cells) + " |")
    best = result["best"]
    lines += [
        "",
        f"| set (the {len(result['photos'])} photos) | s = {best} | s = {best} + TTA |",
    ]
    lines.append("|---|---|---|")
    for preset in result["presets"]:
        plain, tta = result["photos_margins"][preset], result["tta_margins"][preset]
        lines.append(f"| {preset} | {plain:+.2f} | {tta:+.2f} |")
    lines.append(f"| **mean** | **{result['photos_mean']:+.3f}** | **{result['tta_mean']:+.3f}** |")
    t = result["tta_seconds"]
    lines.append(
        f"\nBest mean: s = {best}. TTA on a {result['tta_image']} input: "
        f"{t['plain']:.2f} s plain, {t['tta']:.2f} s with TTA ({t['tta'] / t['plain']:.1f}×)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
