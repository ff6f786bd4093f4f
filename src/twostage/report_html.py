"""The offline HTML page of an experiment: index.html and the images it shows.

Mean tables with per-image tables under them (collapsible), the generalization matrix when
results.json has one, a before/after viewer (a slider between any two of GT, input,
interp-bicubic and every branch, with a synchronized zoom on a region the reader clicks), the
static crop strips, and every network's training curves, config and wall time.

Plain HTML, CSS and JavaScript inline; every link is relative, so the page works from file://.
The viewer's images are saved once per test image (a crop of at most VIEW_SIDE pixels, lossless
WebP) and only the two shown are loaded, so the page opens at once however many there are.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from twostage.ops.files import YAML_MAX_BYTES, atomic_path, read_text_bounded, write_text_atomic
from twostage.ops.imageio import to_uint8
from twostage.report import (
    DIGITS,
    GENERALIZATION_PNG,
    Comparison,
    best_branch,
    format_mean,
    mean_lookup,
    pick_crop,
    plot_curves,
    present_metrics,
    read_metrics,
    render_comparison,
    title,
)
from twostage.stages import ABOUT, STAGES, ordered_means

VIEW_SIDE = 384  # larger test images are shown as their most detailed crop of this side
_ZOOM_SIDE = 8  # the default zoom region: the most detailed 1/_ZOOM_SIDE of the view

_ASSETS = Path(__file__).with_name("report_assets")


@dataclass(frozen=True)
class View:
    """One image the viewer can show: its label, its file (relative) and its PSNR (or None)."""

    label: str
    src: str
    psnr: float | None


@dataclass(frozen=True)
class ViewSet:
    """The views of one test image, all the same size, with the default zoom centre (x, y)."""

    test_set: str
    image: str
    width: int
    height: int
    focus: tuple[int, int]
    views: tuple[View, ...]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def save_views(comparison: Comparison, out_dir: Path) -> ViewSet:
    """Write every panel of `comparison` as figures/views/<set>/<image>/<label>.webp (lossless).

    Images larger than VIEW_SIDE are cropped to their most detailed VIEW_SIDE square, the same
    crop for every panel, so the page stays small and the pixels stay exact.
    """
    gt = np.asarray(comparison.panels[0].image)
    h, w = gt.shape[:2]
    top, left, side = pick_crop(gt, size=VIEW_SIDE) if max(h, w) > VIEW_SIDE else (0, 0, 0)
    rows, cols = (slice(top, top + side), slice(left, left + side)) if side else (slice(None),) * 2
    shown = gt[rows, cols]
    ft, fl, fs = pick_crop(shown, size=max(4, min(shown.shape[:2]) // _ZOOM_SIDE))
    folder = f"figures/views/{slug(comparison.test_set)}/{slug(comparison.image)}"
    views = []
    for panel in comparison.panels:
        rel = f"{folder}/{slug(panel.label)}.webp"
        pixels = to_uint8(np.asarray(panel.image))[rows, cols]
        with atomic_path(out_dir / rel) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels)).save(
                tmp, format="WEBP", lossless=True, method=4
            )
        finite = panel.psnr is not None and math.isfinite(panel.psnr)  # JSON has no inf
        views.append(View(panel.label, rel, panel.psnr if finite else None))
    return ViewSet(
        comparison.test_set,
        comparison.image,
        width=shown.shape[1],
        height=shown.shape[0],
        focus=(fl + fs // 2, ft + fs // 2),
        views=tuple(views),
    )


# ----------------------------------------------------------------------------- tables


def _cell(text: str, *, best: bool, **data: object) -> str:
    attrs = "".join(f" data-{k.replace('_', '-')}='{html.escape(str(v))}'" for k, v in data.items())
    return f"<td{' class=best' if best else ''}{attrs}>{html.escape(text)}</td>"


def _mean_table(results: dict, test_set: str) -> str:
    lookup = mean_lookup(results)
    branches = [b for b in results["branches"] if (b, test_set) in lookup]
    out = ["<table class=means><tr><th>metric</th>"]
    out += [f"<th>{html.escape(b)}</th>" for b in branches]
    out.append("</tr>")
    for key, label, higher in present_metrics(results):
        best = best_branch(results, test_set, key, higher)
        out.append(f"<tr><th>{html.escape(label)}</th>")
        for b in branches:
            text = format_mean(lookup.get((b, test_set)), key)
            out.append(_cell(text, best=b == best, branch=b, test_set=test_set, metric=key))
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _image_tables(results: dict, test_set: str) -> str:
    """Per-image numbers of one test set: a table per metric, images as rows, in <details>."""
    rows = [r for r in results["rows"] if r["test_set"] == test_set]
    by = {(r["branch"], r["image"], r.get("seed", 0)): r for r in rows}
    keys = list(dict.fromkeys((r["image"], r.get("seed", 0)) for r in rows))
    branches = [b for b in results["branches"] if any(r["branch"] == b for r in rows)]
    seeds = len({seed for _, seed in keys}) > 1
    parts = [f"<details><summary>Per image ({len(keys)} rows)</summary>"]
    for key, label, higher in present_metrics(results):
        parts.append(f"<table class=images><caption>{html.escape(label)}</caption>")
        parts.append("<tr><th>image</th>")
        parts.append("<th>seed</th>" if seeds else "")
        parts += [f"<th>{html.escape(b)}</th>" for b in branches]
        parts.append("</tr>")
        for image, seed in keys:
            values = {b: by[(b, image, seed)].get(key) for b in branches if (b, image, seed) in by}
            known = {b: v for b, v in values.items() if v is not None}
            best = (max if higher else min)(known, key=known.__getitem__) if known else None
            parts.append(f"<tr><th>{html.escape(image)}</th>")
            parts.append(f"<td>{seed}</td>" if seeds else "")
            for b in branches:
                v = values.get(b)
                text = "–" if v is None else f"{v:.{DIGITS[key]}f}"
                data = {"branch": b, "test_set": test_set, "image": image, "seed": seed}
                parts.append(_cell(text, best=b == best, metric=key, **data))
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("</details>")
    return "".join(parts)


def _per_branch(value: object, branches: Sequence[str]) -> list:
    if isinstance(value, Mapping):
        return [value.get(b) for b in branches]
    return list(value) if isinstance(value, Sequence) else [None] * len(branches)


def generalization_html(results: dict, *, figure: str | None) -> str:
    """results["generalization"] (matrices branch × test set) as a table coloured by the PSNR
    margin over interp-bicubic, then the heat-map figure; "" when there is none."""
    gen = results.get("generalization")
    if not gen:
        return ""
    tests, branches = list(gen["test_sets"]), list(gen["branches"])
    psnr = gen.get("psnr") or [[None] * len(tests) for _ in branches]
    margin = gen.get("psnr_margin") or [[None] * len(tests) for _ in branches]
    mean = _per_branch(gen.get("mean_psnr_margin"), branches)
    detail = _per_branch(gen.get("detail_mean_psnr_margin"), branches)
    spread = max((abs(m) for row in margin for m in row if m is not None), default=0.0) or 1.0
    out = [
        "<h2 id=generalization>Generalization</h2><p>PSNR (dB) of each branch on each test "
        "degradation; the small number and the colour are the margin over interp-bicubic "
        "(green above, red below)."
        + (
            " The detail mean is over the fine-detail images (print, man-made structure) "
            "under the suite's degradations, apart from the photos' mean."
            if "detail_suite" in gen
            else ""
        )
        + "</p><table class=generalization><tr><th>branch</th>"
    ]
    out += [f"<th>{html.escape(t)}</th>" for t in tests]
    out.append("<th>mean margin</th>" if any(m is not None for m in mean) else "")
    out.append("<th>detail mean margin</th></tr>" if "detail_suite" in gen else "</tr>")
    for i, branch in enumerate(branches):
        out.append(f"<tr><th>{html.escape(branch)}</th>")
        for j, test in enumerate(tests):
            out.append(_margin_cell(psnr[i][j], margin[i][j], spread, branch=branch, test=test))
        if any(m is not None for m in mean):
            out.append(_margin_cell(None, mean[i], spread, branch=branch, test="mean"))
        if "detail_suite" in gen:
            out.append(_margin_cell(None, detail[i], spread, branch=branch, test="detail-mean"))
        out.append("</tr>")
    out.append("</table>")
    if figure:
        out.append(f"<p><img src='{html.escape(figure)}' alt='generalization heat-map'></p>")
    return "".join(out)


def _margin_cell(value: float | None, margin: float | None, spread: float, **data: str) -> str:
    text = "" if value is None else f"{value:.2f} "
    style = ""
    if margin is not None:
        text += f"{margin:+.2f}"
        alpha = 0.12 + 0.6 * min(1.0, abs(margin) / spread)
        rgb = "46,160,67" if margin >= 0 else "215,58,73"
        style = f" style='background:rgba({rgb},{alpha:.2f})'"
    attrs = "".join(f" data-{k}='{html.escape(v)}'" for k, v in data.items())
    return f"<td{style}{attrs}>{html.escape(text.strip() or '–')}</td>"


def stages_html(results: dict) -> str:
    """results["stages"]: one row per two-stage branch × test set, each stage's PSNR on its own
    job beside bicubic's (the cell coloured by the margin); "" when there is none."""
    staged = results.get("stages")
    if not staged:
        return ""
    about = html.escape(ABOUT.format(border=staged["crop_border"]))
    out = [
        f"<h2 id=stages>Stage by stage</h2><p>{about}</p>"
        "<table class=stages><tr><th>branch</th><th>test set</th>"
    ]
    out += [f"<th>{html.escape(name)}</th><th>bicubic</th>" for _, _, name in STAGES]
    out.append("</tr>")
    for m in ordered_means(staged):
        out.append(f"<tr><th>{html.escape(m['branch'])}</th><td>{html.escape(m['test_set'])}</td>")
        for key, floor, _ in STAGES:
            data = {"branch": m["branch"], "test": m["test_set"], "stage": key}
            out.append(_margin_cell(m[key], m[key] - m[floor], 2.0, **data))
            out.append(f"<td>{m[floor]:.2f}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


# ----------------------------------------------------------------------------- networks


def _network_html(name: str, folder: Path, out_dir: Path, curve: str | None) -> str:
    """One network: iterations, wall time, last loss, best validation PSNR, curves, config."""
    records = read_metrics(folder / "metrics.csv")
    last = records[-1] if records else {}
    losses = [r["loss"] for r in records if r.get("loss")]
    vals = [float(r["val_psnr"]) for r in records if r.get("val_psnr")]
    facts = [
        f"{last['iteration']} iterations" if last.get("iteration") else "not trained here",
        f"{float(last['seconds']):.1f} s" if last.get("seconds") else "",
        f"last loss {float(losses[-1]):.4g}" if losses else "",
        f"best validation PSNR {max(vals):.2f} dB" if vals else "",
    ]
    where = folder.relative_to(out_dir).as_posix() if folder.is_relative_to(out_dir) else folder
    parts = [
        f"<h3 id='net-{slug(name)}'>{html.escape(name)}</h3>",
        f"<p>{html.escape(' · '.join(f for f in facts if f))} — <code>{html.escape(str(where))}"
        "</code></p>",
    ]
    if curve:
        parts.append(f"<p><img src='{html.escape(curve)}' alt='curves of {html.escape(name)}'></p>")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        config = read_text_bounded(folder / "config.yaml", YAML_MAX_BYTES)
        parts.append(
            f"<details><summary>config.yaml</summary><pre>{html.escape(config)}</pre></details>"
        )
    return "".join(parts)


# ----------------------------------------------------------------------------- the page


def _viewer_html(views: Sequence[ViewSet]) -> str:
    if not views:
        return ""
    data = json.dumps({"sets": [asdict(v) for v in views]}).replace("</", "<\\/")
    return (
        "<h2 id=compare>Compare</h2><p>Pick a test image and two of its versions; drag the slider "
        "to wipe between them; click the image to zoom both on that spot. The input is shown "
        "with its own pixels enlarged; PSNR is of the whole image.</p>"
        + (_ASSETS / "viewer.html").read_text(encoding="utf-8")
        + f"<script type='application/json' id=cmp-data>{data}</script>"
        + f"<script>{(_ASSETS / 'viewer.js').read_text(encoding='utf-8')}</script>"
    )


def _strips_html(strips: Sequence[tuple[Comparison, str]]) -> str:
    if not strips:
        return ""
    out = [
        "<h2 id=strips>Crops</h2><p>The most detailed crop of one image per test set: ground "
        "truth, input, bicubic interpolation and every branch; labels give the PSNR of the "
        "whole image.</p>"
    ]
    for comp, rel in strips:
        caption = f"{comp.test_set} — image {comp.image}"
        out.append(
            f"<figure><img src='{html.escape(rel)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return "".join(out)


def format_page(results: dict, *, sections: Sequence[str], reading: str, bundles: list[str]) -> str:
    """index.html around the already rendered `sections` (viewer, strips, networks …)."""
    seeds = results.get("seeds", [results.get("seed")])
    body = [
        f"<h1>twostage — {html.escape(results['recipe'])}</h1>",
        f"<p>Profile <code>{html.escape(str(results['profile']))}</code>, seed(s) "
        f"{html.escape(', '.join(str(s) for s in seeds))}. PSNR/SSIM on RGB with a border of "
        "<code>scale</code> pixels cropped; the best value of each row is in bold.</p>",
        f"<p>{html.escape(reading)}</p>" if reading else "",
        "<p>Files: "
        + " · ".join(
            f"<a href='{n}'>{n}</a>"
            for n in ("results.json", "results.csv", "results.md", "results.tex")
        )
        + "</p><h2 id=results>Results</h2>",
    ]
    for test_set in results["test_sets"]:
        body.append(f"<h3>{html.escape(title(results, test_set))}</h3>")
        body.append(_mean_table(results, test_set) + _image_tables(results, test_set))
    body += sections
    if bundles:
        body.append(
            "<h2 id=bundles>Pipeline bundles</h2><p>Each restores images with "
            "<code>twostage restore --model FILE INPUT --out DIR</code>.</p><ul>"
        )
        body += [f"<li><a href='{html.escape(b)}'>{html.escape(b)}</a></li>" for b in bundles]
        body.append("</ul>")
    css = (_ASSETS / "page.css").read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>twostage {html.escape(results['recipe'])}</title>"
        f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_page(
    results: dict,
    out_dir: Path,
    *,
    strips: Sequence[Comparison] = (),
    views: Sequence[ViewSet] = (),
    networks: Mapping[str, Path] | None = None,
    reading: str = "",
) -> list[Path]:
    """Write figures/compare-*.png (strips), figures/curves-*.png and index.html; return them.

    `views` come from save_views; `networks` maps a network's name to its run folder (its
    metrics.csv and config.yaml). The page ends with its total size, images included.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    shown = []
    for comp in strips:
        rel = f"figures/compare-{slug(comp.test_set)}-{slug(comp.image)}.png"
        with atomic_path(out_dir / rel) as tmp:
            render_comparison(comp).save(tmp, format="PNG")
        shown.append((comp, rel))
        written.append(out_dir / rel)
    net_parts = ["<h2 id=networks>Networks</h2>"] if networks else []
    for name, folder in (networks or {}).items():
        rel = f"figures/curves-{slug(name)}.png"
        curve = rel if plot_curves(name, Path(folder) / "metrics.csv", out_dir / rel) else None
        written += [out_dir / rel] if curve else []
        net_parts.append(_network_html(name, Path(folder), out_dir, curve))
    heat = GENERALIZATION_PNG if (out_dir / GENERALIZATION_PNG).is_file() else None
    sections = [
        generalization_html(results, figure=heat),
        stages_html(results),
        _viewer_html(views),
        _strips_html(shown),
        "".join(net_parts),
    ]
    bundles = sorted(
        p.relative_to(out_dir).as_posix() for p in (out_dir / "bundles").glob("*.safetensors")
    )
    page = format_page(results, sections=sections, reading=reading, bundles=bundles)
    shows = [*written, *(out_dir / v.src for s in views for v in s.views)]
    shows += [out_dir / heat] if heat else []
    total = (len(page.encode()) + sum(p.stat().st_size for p in shows)) / 1e6
    footer = f"<footer>This page and its images: {total:.2f} MB.</footer>"
    page = page.replace("</body>", footer + "</body>")
    write_text_atomic(out_dir / "index.html", page)
    return [*written, out_dir / "index.html"]
