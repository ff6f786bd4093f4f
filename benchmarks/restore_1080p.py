"""Peak RSS and wall time of `twostage restore` with default options on a 1920×1080 photo, ×4.

The bundle is the demo's shape (map2 + ×2: rcan-cpu ×2 mapping, rcan-cpu ×2), randomly
initialised (speed and memory do not depend on the weights); the input is a real photo
(skimage's astronaut) resized to 1920×1080 with MATLAB bicubic. The restore runs under
`/usr/bin/time -v` in a subprocess: `python benchmarks/restore_1080p.py [--keep DIR]`.
`--shipped` restores with the shipped model instead (no `--model`: what a new user runs).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import skimage.data
import torch

from twostage.models import build_model, preset_spec
from twostage.ops.imageio import to_float, write_image
from twostage.ops.resize import imresize
from twostage.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--shipped", action="store_true", help="the shipped model, no --model")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="restore1080p."))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    stages = [build_model(preset_spec("rcan-cpu", scale=2)) for _ in range(2)]
    bundle = work / "map2-x2.safetensors"
    Pipeline(*stages, name="map2-specialized-x2").save_bundle(bundle)
    photo = to_float(skimage.data.astronaut())
    photo = imresize(photo, size=(1080, 1920))
    write_image(work / "in.png", photo)
    exe = str(Path(sys.executable).with_name("twostage"))
    model = [] if args.shipped else ["--model", str(bundle)]
    cmd = ["/usr/bin/time", "-v", exe, "restore", *model, str(work / "in.png")]
    cmd += ["--out", str(work / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr)[1]
    shown = "" if args.shipped else "--model map2-x2.safetensors "
    print(f"command: twostage restore {shown}in.png --out out")
    print(f"peak RSS {peak / 2**20:.2f} GiB, wall {wall} (m:ss)")


if __name__ == "__main__":
    main()
