"""The `twostage` command: parse, call one function, print, exit.

Bad input of any kind (a `UserError`, or argparse's own) is one line on stderr and exit code 2.
Heavy modules are imported inside each command so that `twostage --help` stays instant.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from twostage import __version__
from twostage.errors import InputWarning, UserError
from twostage.limits import MAX_OUTPUT_PIXELS, MAX_PIXELS, MIN_TILE


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN included
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _tile(text: str) -> int | str:
    if text == "auto":
        return text
    value = _positive_int(text)
    if value < MIN_TILE:
        raise argparse.ArgumentTypeError(
            f"expected auto or a tile of at least {MIN_TILE}, got {text!r}"
        )
    return value


def _max_pixels_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse images of more than N pixels, read from the header (default {MAX_PIXELS:,})",
    )


def _data_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def _lpips_nets(text: str) -> list[str]:
    nets = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in nets if n not in ("alex", "vgg")]
    if bad or not nets:
        raise argparse.ArgumentTypeError(f"expected a list of alex,vgg, got {text!r}")
    return nets


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf32", "bf16")  # models.inference.PRECISIONS (kept light here)
PRECISION_HELP = (
    "auto (default): bf16 where the CPU (AMX, AVX512-BF16) or GPU runs it natively, else "
    "fp32; bf32: fp32 tensors, bf16 conv math (CPU). The last conv and the output stay fp32; "
    "bf16 may move an output by an 8-bit level or so: fp32 for exact or 16-bit results"
)


def build_parser() -> argparse.ArgumentParser:
    """The `twostage` parser: one sub-parser per command, each naming its handler (`func`)."""
    parser = _Parser(
        prog="twostage",
        description="Two-stage domain-adapted training for real-world image SR and restoration.",
    )
    parser.add_argument("--version", action="version", version=f"twostage {__version__}")
    parser.set_defaults(func=lambda args: _print_help(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


# ----------------------------------------------------------------------------- demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the blind x4 demo: train on realistic-mix, test on the held-out suite (CPU)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    p.add_argument("--seeds", type=_positive_int, default=1, help="repeat with N seeds")
    p.add_argument("--quick", action="store_true", help="a <= 2 minute smoke version")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from twostage.demo import run_demo

    run_demo(out=args.out, seeds=args.seeds, quick=args.quick)
    return 0


# ----------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one network from a YAML config")
    p.add_argument("config", type=Path, help="config YAML (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=2e-4 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoints/latest.txt's checkpoint (without that file: the "
        "newest complete one; none: start afresh)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds other files: config.yaml, metrics.csv "
        "and model.safetensors are written over, an earlier run's checkpoints deleted; "
        "nothing else is touched",
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>)")
    p.add_argument("--device", choices=DEVICES, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from twostage.api import train_network

    train_network(
        args.config,
        overrides=args.overrides,
        resume=args.resume,
        overwrite=args.overwrite,
        out=args.out,
        device=args.device,
        quiet=args.quiet,
    )
    return 0


# ----------------------------------------------------------------------------- run


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a recipe: every branch of a paper table, with report")
    p.add_argument("recipe", help="sr-x4, sr-x2, bicubic-x4, deblur, or a recipe YAML file")
    p.add_argument(
        "--data",
        action="append",
        type=_data_arg,
        default=[],
        metavar="NAME=PATH",
        help="training/test data: photos=DIR (a folder of your photos, repeatable), "
        "photos-valid=DIR, div2k=ROOT, realsr=ROOT, samples=embedded (repeatable)",
    )
    p.add_argument("--profile", choices=("paper", "cpu", "tiny", "ship"), default="cpu")
    p.add_argument(
        "--branches",
        type=lambda t: [b for b in t.split(",") if b],
        default=None,
        metavar="A,B",
        help="run only these branches (default: all of the recipe)",
    )
    p.add_argument(
        "--offshelf",
        action="append",
        type=_data_arg,
        default=[],
        metavar="NAME=FILE",
        help="use this checkpoint as off-the-shelf network NAME "
        "(e.g. offshelf-x2=EDSR_x2.pt) instead of training it (repeatable)",
    )
    p.add_argument(
        "--test-suite",
        action="store_true",
        help="also test on the nine held-out suite degradations (docs/degradations.md: the suite)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/experiment"))
    p.add_argument("--seeds", type=_positive_int, default=1)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="of the evaluated branches: fp32 (default: tables reproduce across machines), "
        "or auto, bf32, bf16 (faster where the hardware has bf16; recorded in results.json)",
    )
    _max_pixels_arg(p)
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="photos= images that cannot be read (or are over --max-pixels) are named and "
        "left out, instead of stopping the run",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the networks, data, iterations and a time estimate; train nothing",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from twostage.api import run
    from twostage.report import format_table
    from twostage.runner import run_recipe

    options = dict(
        data=args.data,
        profile=args.profile,
        out=args.out,
        seeds=args.seeds,
        device=args.device,
        quiet=args.quiet,
        branches=args.branches,
        offshelf=dict(args.offshelf),
        test_suite=args.test_suite,
        precision=args.precision,
        max_pixels=args.max_pixels,
        skip_unreadable=args.skip_unreadable,
    )
    if args.dry_run:  # prints the plan; nothing to report
        run_recipe(args.recipe, dry_run=True, **options)
        return 0
    results = run(args.recipe, **options)
    print(format_table(results.data))
    print(f"report: {args.out / 'index.html'}")
    return 0


# ----------------------------------------------------------------------------- degrade


def _add_degrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="write degraded copies of images with a preset")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files, folders, globs")
    p.add_argument("--preset", required=True, help="a preset name or a preset YAML file")
    p.add_argument("--scale", type=_positive_int, default=None, help="downscale factor")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="run seed (per-image seeds)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _max_pixels_arg(p)
    p.set_defaults(func=_degrade)


def _degrade(args: argparse.Namespace) -> int:
    from twostage.ops.degrade import degrade_files

    written, failed = degrade_files(
        args.inputs,
        preset=args.preset,
        scale=args.scale,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels,
    )
    failures = f", {failed} failed" if failed else ""
    print(f"wrote {len(written)} image(s) to {args.out}{failures}")
    return 2 if failed else 0


# ----------------------------------------------------------------------------- evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="PSNR/SSIM (and LPIPS) of predictions against GT")
    p.add_argument("--pred", type=Path, required=True, help="folder or file of predictions")
    p.add_argument("--gt", type=Path, required=True, help="folder or file of ground truth")
    p.add_argument("--crop-border", type=_non_negative_int, default=0)
    p.add_argument("--y-channel", action="store_true", help="on Y (BT.601) instead of RGB")
    p.add_argument("--lpips", type=_lpips_nets, default=[], metavar="alex,vgg")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --json file (never an input)"
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="ground truth without a prediction is a warning, not an error",
    )
    _max_pixels_arg(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from twostage.evaluate import evaluate_folders, format_evaluation

    result = evaluate_folders(
        args.pred,
        args.gt,
        crop_border=args.crop_border,
        y_channel=args.y_channel,
        lpips=args.lpips,
        json_path=args.json,
        overwrite=args.overwrite,
        allow_missing=args.allow_missing,
        max_pixels=args.max_pixels,
    )
    print(format_evaluation(result))
    return 0


# ----------------------------------------------------------------------------- restore


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore/super-resolve images with a model or pipeline")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files, folders, globs")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="pipeline bundle, checkpoint (native/official/BasicSR/spandrel) or .onnx "
        "(default: the shipped model of --scale; `twostage models` lists them)",
    )
    p.add_argument(
        "--scale",
        type=_positive_int,
        default=None,
        help="without --model: which shipped model (default 4); with it: checked against it",
    )
    p.add_argument(
        "--strength",
        type=_strength,
        default=None,
        metavar="S",
        help="0 to 1: blend stage 1 with bicubic in the intermediate domain (1: full "
        "restoration, 0: stage 2 on the bicubic image); default: the model's own",
    )
    p.add_argument(
        "--stage2",
        type=Path,
        default=None,
        metavar="CKPT",
        help="replace the model's stage 2 with this network (same scale, e.g. an official "
        "EDSR/RCAN ×2): the blind stage 1 in front of any bicubic SR checkpoint",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="self-ensemble: average over the 8 flips and 90° rotations of the input (8× time)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--tile",
        type=_tile,
        default="auto",
        metavar="N|auto",
        help=f"restore in N×N input tiles (N >= {MIN_TILE}); auto (default) picks the largest "
        "tile that fits in free memory; N larger than the image runs it whole",
    )
    p.add_argument(
        "--tile-pad",
        type=_non_negative_int,
        default=16,
        help="pixels of context around each tile (default 16); more than the image's side "
        "is the whole image",
    )
    p.add_argument(
        "--device", choices=DEVICES, default="auto", help="where to run (default: cuda if any)"
    )
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--suffix", default="", help="appended to each output stem (no / or ..)")
    p.add_argument(
        "--ext",
        choices=("png", "tif", "tiff", "webp", "jpg", "bmp"),
        default="png",
        help="output format (default png; 16-bit input stays 16-bit in png and tif)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _max_pixels_arg(p)
    p.add_argument(
        "--max-output-pixels",
        type=_positive_int,
        default=MAX_OUTPUT_PIXELS,
        metavar="N",
        help="refuse inputs whose output would have more than N pixels, read from the "
        f"input's header (default {MAX_OUTPUT_PIXELS:,})",
    )
    p.set_defaults(func=_restore)


def _restore(args: argparse.Namespace) -> int:
    from twostage.restore import restore_files

    failures = restore_files(
        args.model,
        args.inputs,
        scale=args.scale,
        out=args.out,
        tile=args.tile,
        tile_pad=args.tile_pad,
        device=args.device,
        precision=args.precision,
        suffix=args.suffix,
        ext=args.ext,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels,
        max_output_pixels=args.max_output_pixels,
        strength=args.strength,
        tta=args.tta,
        stage2=args.stage2,
    )
    return 2 if failures else 0


# ----------------------------------------------------------------------------- export


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model or pipeline to ONNX (checked)")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--opset", type=_positive_int, default=17)
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --onnx file (never --model)"
    )
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from twostage.export import export_onnx

    diff = export_onnx(args.model, args.onnx, opset=args.opset, overwrite=args.overwrite)
    print(f"wrote {args.onnx} (onnxruntime vs PyTorch max abs diff {diff:.2e})")
    return 0


# ----------------------------------------------------------------------------- models


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the shipped models, and the presets with their sizes")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from twostage.models import presets_table
    from twostage.models.shipped import shipped_table

    shipped, problems = shipped_table()
    print(shipped + "\n\nModel presets (architectures to train):\n" + presets_table())
    for problem in problems:
        sys.stderr.write(f"twostage: error: {problem}\n")
    return 2 if problems else 0


# ----------------------------------------------------------------------------- data


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="the embedded offline data")
    p.set_defaults(func=lambda args: p.parse_args(["--help"]))  # `twostage data`: its help
    data_sub = p.add_subparsers(dest="data_command", metavar="WHAT", parser_class=_Parser)
    s = data_sub.add_parser("samples", help="the embedded photos and their train/test split")
    s.add_argument("--list", action="store_true", help="print names, sizes and split")
    s.add_argument("--out", type=Path, default=None, help="write the images here")
    s.add_argument("--overwrite", action="store_true", help="replace existing images")
    s.set_defaults(func=_samples)


def _samples(args: argparse.Namespace) -> int:
    from twostage.data.samples import samples_table, write_samples

    if args.out is None or args.list:
        print(samples_table())
    if args.out is not None:
        written = write_samples(args.out, overwrite=args.overwrite)
        print(f"wrote {len(written)} image(s) to {args.out}")
    return 0


# The commands in the order `twostage --help` lists them.
COMMANDS = (
    _add_demo,
    _add_train,
    _add_run,
    _add_degrade,
    _add_evaluate,
    _add_restore,
    _add_export,
    _add_models,
    _add_data,
)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    """Our `InputWarning`s as one line, as the errors are; other warnings as Python shows them."""
    if issubclass(category, InputWarning):
        sys.stderr.write(f"twostage: warning: {message}\n")
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _printable_streams() -> None:
    """Print what the terminal's encoding cannot hold (a file name's undecodable bytes, "×"
    under LC_ALL=C) as backslash escapes: a strict stdout must not fail after the work."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _printable_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except UserError as exc:
        sys.stderr.write(f"twostage: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("twostage: interrupted\n")
        return 130
    except BrokenPipeError:  # `twostage ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
