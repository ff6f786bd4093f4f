"""Runs a recipe: trains each network once, writes mapped sets, evaluates, writes bundles.

**Run order** (`run_recipe`): work out the networks the chosen branches need; train each once
into `out/networks/<name>-<hash>/` (hash of its TrainConfig, its data and its upstream
networks: a finished network, one with `model.safetensors`, is reused by any later run, and an
interrupted one resumes from its checkpoints); write every stage-1 network's outputs (the
**mapped sets**, train and test) to `out/mapped/<network>/<set>/` once; train the specialized
stage 2 on them — initialised from the off-the-shelf weights (`specialized_init: offshelf`, the
default: the paper's "intermediate training" fine-tunes the network that already knows the
domain) or from scratch (`specialized_init: scratch`); evaluate every branch on every test set;
write `bundles/<branch>.safetensors` and the report (report.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import twostage.train as training
from twostage import generalize
from twostage.config import (
    ModelConfig,
    Profile,
    TrainConfig,
    apply_mapping,
    config_to_dict,
    get_profile,
    profile_defaults,
)
from twostage.data.datasets import DatasetSpec, Pair, PairSet, per_patch_pair
from twostage.data.splits import Split, TestSet, plan_data, short_name
from twostage.errors import UserError
from twostage.evaluate import evaluate_arrays
from twostage.models.checkpoints import load_model
from twostage.models.inference import PRECISIONS, resolve_amp, resolve_device
from twostage.ops.degrade import DOMAINS, SUITE, get_preset, preset_to_dict
from twostage.ops.files import folder_lock, read_text_bounded, write_text_atomic
from twostage.ops.imageio import read_image, write_image
from twostage.ops.metrics import Lpips
from twostage.ops.progress import bar, on_terminal, stage_line
from twostage.ops.resize import imresize
from twostage.pipeline import Pipeline, quantize
from twostage.recipes import (
    BranchDef,
    Images,
    NetworkDef,
    Recipe,
    div2k_track,
    load_recipe,
    retarget,
)
from twostage.report import Comparison, Panel, compute_means, describe, write_report
from twostage.report_html import ViewSet, save_views, write_page

# ============================================================================ networks

# A specialized stage 2 behind a per-patch family trains on M(x) for K fixed draws x of the family
# per training image, mapped once like any mapped set. K = 4: the cpu profile's 600 fine-tuning
# steps of 8 patches see each image's 4 draws ~90 times each (13 images, 512 px), enough variety
# of stage 1's residual errors, while mapping stays ~4 × 13 images; more draws cost mapping time.
FAMILY_INSTANCES = 4


@dataclass(frozen=True)
class TrainedNetwork:
    """A network instance: its definition, training degradation, cache folder and hash."""

    definition: NetworkDef
    degradation: str  # "" for networks that do not depend on the degradation
    folder: Path
    key: str  # config hash (for a given checkpoint: hash of its bytes)
    given: Path | None = None  # a checkpoint loaded instead of trained

    @property
    def label(self) -> str:
        d = self.definition.name
        return f"{d}-{short_name(self.degradation)}" if self.degradation else d

    @property
    def weights(self) -> Path:
        return self.given or self.folder / "model.safetensors"


def _hash(obj: object) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def bit_depth(images: Images | str) -> int:
    """The bits an image of this kind (or of this intermediate domain name) is stored with."""
    domain = images if isinstance(images, str) else images.domain
    if isinstance(images, Images) and images.kind != "domain":
        return 8
    return DOMAINS[domain].bit_depth if domain else 8


def _train_config(
    recipe: Recipe,
    profile: Profile,
    net: NetworkDef,
    *,
    seed: int,
    device: str,
    init: Path | None,
    label: str,
    init_given: bool = False,
    train_data: DatasetSpec | None = None,
) -> TrainConfig:
    """The TrainConfig of one network: the profile's, with this network's model and sizes.

    `init_given`: `init` is a given off-the-shelf checkpoint, whose architecture this network
    takes (so a specialized stage fine-tunes exactly the network the user supplied).
    `train_data`: the spec of the pairs it learns from (kind split; None: a placeholder, for
    real data, whose pairs the runner passes in memory).
    """
    base = profile_defaults(profile)
    preset = (recipe.rcan or profile.rcan) if net.arch == "rcan" else (recipe.edsr or profile.edsr)
    optim = dataclasses.replace(base.optim, iterations=profile.iterations_for(net.role))
    train = train_data or DatasetSpec(kind="synthetic", scale=net.scale)
    data = dataclasses.replace(base.data, train=train, val=None)
    log = dataclasses.replace(
        base.log,
        checkpoint_every=min(base.log.checkpoint_every, max(1, optim.iterations // 4)),
        val_every=min(base.log.val_every, max(1, optim.iterations // 4)),
        log_every=min(base.log.log_every, max(1, optim.iterations // 20)),
    )
    run = dataclasses.replace(base.run, seed=seed, device=device)  # type: ignore[arg-type]
    model = ModelConfig(
        preset=None if init_given else preset, scale=net.scale, init=str(init) if init else None
    )
    cfg = dataclasses.replace(
        base, model=model, data=data, optim=optim, log=log, run=run, name=label
    )
    return apply_mapping(cfg, recipe.train)


def _what_it_learns(cfg: TrainConfig) -> dict:
    """The TrainConfig without where it runs, its logging, its init file and its name."""
    description = config_to_dict(cfg)
    for key in ("device", "threads", "compile", "cuda_graph"):
        description["run"].pop(key, None)
    description.pop("log", None)
    description["model"]["init"] = None  # identified by the upstream network's key instead
    description["data"]["train"]["input_dir"] = None  # likewise (and where `out` is)
    description["name"] = None
    return description


def _subset(pairs: PairSet, n: int) -> PairSet:
    return PairSet(
        [pairs[i] for i in range(min(n, len(pairs)))], scale=pairs.scale, name=pairs.name
    )


# ============================================================================ the run


@dataclass
class _Run:
    """State of one run_recipe call (one seed at a time)."""

    recipe: Recipe
    profile: Profile
    out: Path
    device: str
    quiet: bool
    train: Split
    test_sets: list[TestSet]
    progress: Callable[[float, str], None]
    seed: int = 0
    precision: str = "fp32"  # the evaluated branches' (models.inference.PRECISIONS)
    trained: dict[tuple[str, str], TrainedNetwork] = field(default_factory=dict)
    models: dict[Path, torch.nn.Module] = field(default_factory=dict)
    trained_now: list[str] = field(default_factory=list)
    training_amp: set[str] = field(default_factory=set)  # run.amp as resolved, every network

    # ---------------------------------------------------------------- images of a split
    def images(
        self, split: Split, spec: Images, degradation: str, *, set_name: str
    ) -> list[np.ndarray]:
        if spec.kind == "hr":
            return [img.astype(np.float32) / 255.0 for img in split.hr]
        if spec.kind == "domain":
            return split.domain(spec.domain)
        if spec.kind == "degraded":
            return split.inputs(degradation, scale=self.recipe.scale)
        net = self.instance(self.recipe.network(spec.network), degradation)
        return self.mapped(net, split, degradation, set_name=set_name)

    def pairs(self, net: NetworkDef, degradation: str, split: Split, set_name: str) -> PairSet:
        xs = self.images(split, net.input, degradation, set_name=set_name)
        ys = self.images(split, net.target, degradation, set_name=set_name)
        return PairSet(
            [Pair(name, x, y) for name, x, y in zip(split.names, xs, ys)],
            scale=net.scale,
            name=f"{split.source}:{net.name}",
        )

    # ---------------------------------------------------------------- networks
    def instance(self, net: NetworkDef, degradation: str) -> TrainedNetwork:
        """Train `net` for `degradation` (or reuse it from the cache) and return it."""
        deg = degradation if net.per_degradation else ""
        if (net.name, deg) not in self.trained:
            given = dict(self.recipe.given).get(net.name)
            inst = (
                self._given(net, Path(given))
                if given is not None
                else self._trained(net, deg, degradation)
            )
            self.trained[(net.name, deg)] = inst
        return self.trained[(net.name, deg)]

    def _trained(self, net: NetworkDef, deg: str, degradation: str) -> TrainedNetwork:
        """The network trained for `deg` ("" when it does not depend on it): cached by hash."""
        upstream: dict[str, str] = {}
        init, init_given = None, False
        if net.input.kind == "mapped":
            mapper = self.instance(self.recipe.network(net.input.network), degradation)
            upstream["mapped_by"] = mapper.key
        if net.init_from and self.recipe.specialized_init == "offshelf":
            parent = self.instance(self.recipe.network(net.init_from), degradation)
            upstream["init"] = parent.key
            init, init_given = parent.weights, parent.given is not None
        label = f"{net.name}-{short_name(deg)}" if deg else net.name
        cfg = _train_config(
            self.recipe,
            self.profile,
            net,
            seed=self.seed,
            device=self.device,
            init=init,
            label=label,
            init_given=init_given,
            train_data=self._data_spec(net, degradation),
        )
        # run.amp=auto resolved here, so the key names the precision it trains in on this device
        amp = resolve_amp(cfg.run.amp, resolve_device(self.device))
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, amp=amp))
        self.training_amp.add(amp)
        digest = _hash(
            {
                "version": 1,
                "config": _what_it_learns(cfg),
                "input": dataclasses.asdict(net.input),
                "target": dataclasses.asdict(net.target),
                "degradation": self._describe_deg(deg),
                "data": self.train.describe(),
                "upstream": upstream,
            }
        )
        inst = TrainedNetwork(net, deg, self.out / "networks" / f"{label}-{digest}", digest)
        if not inst.weights.is_file():
            self._train(inst, cfg)
        self.progress(float(cfg.optim.iterations), f"{label} ready")
        return inst

    def per_patch(self, degradation: str) -> bool:
        """Whether `degradation` is a per-patch family (realistic): drawn afresh per patch."""
        return degradation not in self.train.given and get_preset(degradation).family is not None

    def train_pairs(self, net: NetworkDef, degradation: str) -> PairSet:
        """What `net` trains on. A per-patch family: (target, HR) pairs that training degrades
        afresh for every patch; a stage on mapped inputs: FAMILY_INSTANCES fixed draws per image."""
        if not self.per_patch(degradation) or net.input.kind not in ("degraded", "mapped"):
            return self.pairs(net, degradation, self.train, "train")
        if net.input.kind == "mapped":
            return self.pairs(net, degradation, self.train_instances, "train")
        targets = self.images(self.train, net.target, degradation, set_name="train")
        hrs = self.images(self.train, Images("hr"), degradation, set_name="train")
        pairs = [per_patch_pair(*item) for item in zip(self.train.names, hrs, targets)]
        return PairSet(pairs, scale=self.recipe.scale // net.scale, name="train:per-patch")

    @functools.cached_property
    def train_instances(self) -> Split:
        return self.train.instances(FAMILY_INSTANCES)

    def _data_spec(self, net: NetworkDef, degradation: str) -> DatasetSpec | None:
        """The pairs `net` learns, as a config names them (the embedded photos only)."""
        if self.train.source != "samples" or net.target.kind not in ("hr", "domain"):
            return None
        prof = self.profile
        spec = DatasetSpec(
            kind="split",
            split="train",
            scale=self.recipe.scale,
            seed=self.train.data_seed,
            limit=prof.train_images,
            crop=prof.train_crop or prof.hr_crop,
            target_domain=net.target.domain or None,
        )
        family = net.input.kind != "domain" and self.per_patch(degradation)
        if net.input.kind == "degraded":
            return dataclasses.replace(spec, preset=degradation, per_patch=family)
        if net.input.kind == "domain":
            return dataclasses.replace(spec, input_domain=net.input.domain)
        if net.input.kind == "mapped":
            mapper = self.instance(self.recipe.network(net.input.network), degradation)
            folder = self._mapped_folder(mapper, degradation, "train")
            k = FAMILY_INSTANCES if family else 1
            return dataclasses.replace(spec, input_dir=folder, instances=k)
        return None

    def _given(self, net: NetworkDef, path: Path) -> TrainedNetwork:
        """An off-the-shelf network supplied as a checkpoint: checked, never trained."""
        model = self.model(TrainedNetwork(net, "", path.parent, "", given=path))
        scale = getattr(model, "scale", None)
        if scale != net.scale:
            raise UserError(
                f"--offshelf {net.name}={path}: the checkpoint is ×{scale}, "
                f"{net.name} must be ×{net.scale}"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
        cost = float(self.profile.iterations_for(net.role))
        self.progress(cost, f"{net.name} given ({path.name})")
        return TrainedNetwork(net, "", path.parent, digest, given=path)

    def _describe_deg(self, deg: str) -> object:
        if not deg or deg in self.train.given:
            return deg
        return preset_to_dict(get_preset(deg))

    def _val_set(self, inst: TrainedNetwork) -> PairSet | None:
        if not (self.profile.val_images and self.test_sets):
            return None
        owner = inst.degradation or self.recipe.degradations[0]
        test = next((t for t in self.test_sets if t.networks_of == owner), self.test_sets[0])
        pairs = self.pairs(inst.definition, test.degradation, test.split, test.name)
        return _subset(pairs, self.profile.val_images)

    def _train(self, inst: TrainedNetwork, cfg: TrainConfig) -> None:
        degradation = inst.degradation or self.recipe.degradations[0]
        train_set = self.train_pairs(inst.definition, degradation)
        val_set = self._val_set(inst)
        resume = training.has_checkpoint(inst.folder)  # interrupted: continue
        about = {
            "network": dataclasses.asdict(inst.definition),
            "degradation": inst.degradation,
            "recipe": self.recipe.name,
            "key": inst.key,
        }
        write_text_atomic(inst.folder / "network.json", json.dumps(about, indent=2) + "\n")
        training.train(
            cfg,
            out=inst.folder,
            resume=resume,
            overwrite=not resume,  # the folder is ours (keyed by the config's hash)
            train_set=train_set,
            val_set=val_set,
            quiet=self.quiet or not on_terminal(),  # in a log, _Progress's line says it
        )
        if not inst.weights.is_file():
            raise UserError(f"training {inst.label} finished without {inst.weights}")
        self.trained_now.append(inst.label)

    def model(self, inst: TrainedNetwork) -> torch.nn.Module:
        if inst.weights not in self.models:
            device = resolve_device(self.device)
            self.models[inst.weights] = load_model(inst.weights, device=device).eval()
        return self.models[inst.weights]

    # ---------------------------------------------------------------- mapped sets
    def _mapped_folder(self, inst: TrainedNetwork, degradation: str, set_name: str) -> Path:
        label = inst.label if inst.degradation else f"{inst.label}-{short_name(degradation)}"
        return self.out / "mapped" / f"{label}-{inst.key}" / set_name

    def mapped(
        self, inst: TrainedNetwork, split: Split, degradation: str, *, set_name: str
    ) -> list[np.ndarray]:
        """Stage-1 outputs of `inst` on `split`'s inputs, written to mapped/ once and reused."""
        folder = self._mapped_folder(inst, degradation, set_name)
        marker = folder / "complete.json"
        bits = bit_depth(inst.definition.target)
        if _marker_images(marker) == split.names:
            return [read_image(folder / f"{n}.png")[0] for n in split.names]
        pipe = Pipeline(None, self.model(inst))
        outputs = []
        for name, x in zip(split.names, split.inputs(degradation, scale=self.recipe.scale)):
            # The intermediate rounding of Pipeline: what stage 2 reads back from the PNG.
            y = pipe.restore(x, device=self.device)
            y = quantize(torch.from_numpy(y), bit_depth=bits).numpy()
            write_image(folder / f"{name}.png", y, bit_depth=bits)
            outputs.append(y)
        about = {"network": inst.label, "key": inst.key, "images": split.names, "bit_depth": bits}
        write_text_atomic(marker, json.dumps(about) + "\n")
        return outputs


def _marker_images(marker: Path) -> object:
    """The image names a mapped set's `complete.json` lists; None when it is missing or
    unreadable (a crash or a hand edit): the set is then computed again, into its own folder."""
    if not marker.is_file():
        return None
    try:
        about = json.loads(read_text_bounded(marker))
    except (OSError, ValueError):  # ValueError: bad JSON or UTF-8
        return None
    return about.get("images") if isinstance(about, dict) else None


# ============================================================================ evaluation


def _lpips_models(device: str) -> dict[str, Lpips]:
    """LPIPS-Alex/VGG when the optional `lpips` + `torchvision` are installed, else none."""
    try:
        return {f"lpips_{net}": Lpips(net, device=device) for net in ("alex", "vgg")}
    except (UserError, ImportError, OSError, RuntimeError):
        return {}


def bicubic_up(img: np.ndarray, scale: int) -> np.ndarray:
    """interp-bicubic: MATLAB bicubic ×scale (the identity at scale 1)."""
    if scale == 1:
        return img
    return np.clip(imresize(img, float(scale)), 0.0, 1.0)


def _branch_instances(
    run: _Run, branch: BranchDef, degradation: str
) -> tuple[TrainedNetwork | None, TrainedNetwork]:
    s1 = run.instance(run.recipe.network(branch.stage1), degradation) if branch.stage1 else None
    s2 = run.instance(run.recipe.network(branch.stage2), degradation)
    return s1, s2


def _pipeline(run: _Run, branch: BranchDef, degradation: str) -> Pipeline:
    s1, s2 = _branch_instances(run, branch, degradation)
    return Pipeline(
        run.model(s1) if s1 else None,
        run.model(s2),
        stage2_repeats=branch.stage2_repeats,
        name=branch.name,
        intermediate_bit_depth=bit_depth(branch.domain),
    )


def _outputs(run: _Run, test: TestSet) -> dict[str, list[np.ndarray]]:
    """Every branch's (and interp-bicubic's) restored images of one test set."""
    scale = run.recipe.scale
    inputs = test.split.inputs(test.degradation, scale=scale)
    outputs = {"interp-bicubic": [bicubic_up(x, scale) for x in inputs]}
    for branch in run.recipe.branches:
        pipe = _pipeline(run, branch, test.networks_of)
        xs = test.split.domain(branch.domain) if branch.input == "domain" else inputs
        outputs[branch.name] = [
            pipe.restore(x, device=run.device, precision=run.precision) for x in xs
        ]
        run.progress(len(xs), f"evaluated {branch.name} on {test.name}")
    return outputs


def _shown_input(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The input at the ground truth's size, its own pixels enlarged (nearest), for the page."""
    up = np.repeat(np.repeat(x, -(-shape[0] // x.shape[0]), 0), -(-shape[1] // x.shape[1]), 1)
    return up[: shape[0], : shape[1]]


def _comparisons(
    test: TestSet, outputs: dict[str, list[np.ndarray]], rows: list[dict], scale: int
) -> Iterator[Comparison]:
    """One Comparison per test image (GT, the input, interp-bicubic, every branch), made one
    at a time: an enlarged input is as big as an output."""
    psnr = {(r["branch"], r["image"]): r["psnr"] for r in rows if r["test_set"] == test.name}
    inputs = test.split.inputs(test.degradation, scale=scale)
    for i, (image, hr, x) in enumerate(zip(test.split.names, test.split.hr, inputs)):
        panels = [Panel("GT", hr, None), Panel("input", _shown_input(x, hr.shape), None)]
        panels += [Panel(name, preds[i], psnr[(name, image)]) for name, preds in outputs.items()]
        yield Comparison(test.name, image, tuple(panels))


def _evaluate(
    run: _Run, *, seed: int, keep_first: bool, lpips: dict[str, Lpips]
) -> tuple[list[dict], list[Comparison], list[ViewSet]]:
    """Rows for every branch (and interp-bicubic) × test set × image; with `keep_first`, the
    crop strip of each test set's first image and the viewer's images of every test image."""
    rows: list[dict] = []
    strips, views = [], []
    for test in run.test_sets:
        outputs = _outputs(run, test)
        hrs = test.split.hr
        for name, preds in outputs.items():
            for image, pred, hr in zip(test.split.names, preds, hrs):
                scores = evaluate_arrays(
                    pred, hr, crop_border=run.recipe.scale, y_channel=False, lpips_models=lpips
                )
                rows.append(
                    {"branch": name, "test_set": test.name, "image": image, **scores, "seed": seed}
                )
        if keep_first:
            for i, comparison in enumerate(_comparisons(test, outputs, rows, run.recipe.scale)):
                strips += [comparison] if i == 0 else []
                views.append(save_views(comparison, run.out))
    return rows, strips, views


def _write_bundles(run: _Run) -> list[Path]:
    """bundles/<branch>.safetensors (one per training degradation when there are several)."""
    written = []
    degradations = run.recipe.degradations
    for branch in run.recipe.branches:
        for deg in degradations:
            s1, s2 = _branch_instances(run, branch, deg)
            specific = any(n is not None and n.degradation for n in (s1, s2))
            if not specific and deg != degradations[0]:
                continue
            name = branch.name
            if specific and len(degradations) > 1:
                name = f"{branch.name}-{short_name(deg)}"
            pipeline = _pipeline(run, branch, deg)
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


# ============================================================================ progress


class _Progress:
    """One overall bar whose units are training iterations (+ one per evaluated image); in a
    log (stderr not a terminal), one line per finished stage with its time instead."""

    def __init__(self, total: float, *, quiet: bool, desc: str) -> None:
        self.lines = not (quiet or on_terminal())
        self.desc, self.total, self.last = desc, max(1.0, total), time.perf_counter()
        self.bar = bar(
            total=self.total,
            desc=desc,
            unit="it",
            quiet=quiet,
            position=0,
            leave=True,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining} overall]{postfix}",
        )
        self.done = 0.0

    def __call__(self, amount: float, what: str) -> None:
        amount = min(amount, self.total - self.done)
        self.done += amount
        self.bar.update(amount)
        self.bar.set_postfix_str(what, refresh=True)
        if self.lines:
            now = time.perf_counter()
            stage_line(f"{self.desc} {100 * self.done / self.total:3.0f}%: {what}", now - self.last)
            self.last = now

    def close(self) -> None:
        self.bar.close()


def _estimate(recipe: Recipe, profile: Profile, tests: list[TestSet], seeds: int) -> float:
    per_seed = 0.0
    for net in recipe.needed_networks():
        iters = profile.iterations_for(net.role)
        per_seed += iters * (len(recipe.degradations) if net.per_degradation else 1)
    per_seed += sum(len(t.split.names) for t in tests) * len(recipe.branches)
    return per_seed * seeds


# ============================================================================ entry point


def _one_seed(
    run: _Run, lpips: dict[str, Lpips]
) -> tuple[list[dict], list[Comparison], list[ViewSet]]:
    """Train what the branches need, map the test sets, evaluate; bundles for seed 0."""
    rec = run.recipe
    for name, _ in rec.given:  # every given checkpoint is loaded and checked before training
        run.instance(rec.network(name), rec.degradations[0])
    for net in rec.needed_networks():
        for deg in rec.degradations if net.per_degradation else rec.degradations[:1]:
            run.instance(net, deg)
    # Mapped sets of every stage 1 on the test sets (train sets were written as needed).
    for branch in rec.branches:
        for test in run.test_sets:
            if branch.stage1:
                s1 = run.instance(rec.network(branch.stage1), test.networks_of)
                run.mapped(s1, test.split, test.degradation, set_name=test.name)
    rows, strips, views = _evaluate(run, seed=run.seed, keep_first=run.seed == 0, lpips=lpips)
    if run.seed == 0:
        _write_bundles(run)
    return rows, strips, views


def run_recipe(
    recipe: str | Path | Recipe,
    *,
    data: dict[str, Path] | None = None,
    profile: str | Profile = "cpu",
    out: Path,
    seeds: int = 1,
    device: str = "auto",
    quiet: bool = False,
    branches: Sequence[str] | None = None,
    offshelf: dict[str, Path] | None = None,
    test_suite: bool = False,
    precision: str = "fp32",
) -> dict:
    """Run a recipe end to end in `out` (see the module docstring) and return results.json's dict.

    `seeds`: repeat with seeds 0..N-1 (networks are cached per seed); the report gives mean ±
    std over seeds; bundles and figures come from seed 0. `offshelf`: network name → checkpoint
    for off-the-shelf networks to load instead of train (e.g. {"offshelf-x2": EDSR_x2.pt}).
    `test_suite`: also test on every held-out SUITE degradation. `precision`: of the evaluated
    branches (fp32 by default, so that tables reproduce across machines; auto, bf32 or bf16
    run faster where the hardware has bf16, and are recorded in results.json); training and
    the mapped sets stay as the training config says.
    """
    data = dict(data or {})
    rec = _chosen(recipe, branches, offshelf, data)
    rec = rec.with_suite() if test_suite else rec
    prof = get_profile(profile)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if prof.threads:
        torch.set_num_threads(prof.threads)
    out = Path(out)
    then = "then run again: it reuses the finished networks and resumes the others"
    with folder_lock(out, "--out", then=then):  # two runs in one folder would race
        sr = rec.base != "deblur"
        train, tests = plan_data(rec, data, prof, sr=sr, track=div2k_track(rec))
        progress = _Progress(
            _estimate(rec, prof, tests, seeds), quiet=quiet, desc=f"{rec.name} ({prof.name})"
        )
        lpips = _lpips_models(device if device != "auto" else "cpu")
        rows: list[dict] = []
        strips: list[Comparison] = []
        views: list[ViewSet] = []
        trained_now: list[str] = []
        training_amp: set[str] = set()
        networks: dict[str, Path] = {}
        start = time.perf_counter()
        try:
            for seed in range(seeds):
                run = _Run(
                    rec, prof, out, device, quiet, train, tests, progress, seed, precision=precision
                )
                seed_rows, seed_strips, seed_views = _one_seed(run, lpips)
                rows += seed_rows
                trained_now += run.trained_now
                training_amp |= run.training_amp
                if seed == 0:
                    strips, views = seed_strips, seed_views
                    networks = {i.label: i.folder for i in run.trained.values() if i.given is None}
        finally:
            progress.close()
        seconds = round(time.perf_counter() - start, 1)
        results = _results(
            rec, prof, tests, rows, seeds=seeds, trained=trained_now, seconds=seconds
        )
        results["lpips"] = sorted(lpips)
        results["precision"] = precision
        results["training_amp"] = sorted(training_amp)  # what run.amp resolved to on this machine
        write_report(results, out)
        reading = describe(results, rec.claim)
        write_page(results, out, strips=strips, views=views, networks=networks, reading=reading)
        return results


def _chosen(
    recipe: str | Path | Recipe,
    branches: Sequence[str] | None,
    offshelf: dict[str, Path] | None,
    data: dict[str, Path],
) -> Recipe:
    """The recipe with the chosen branches, the given networks and the data's degradation."""
    rec = load_recipe(recipe)
    if branches:
        rec = rec.with_branches(list(branches))
    if offshelf:
        rec = rec.with_given(dict(offshelf))
    return retarget(rec, data)


def _results(
    rec: Recipe,
    prof: Profile,
    tests: list[TestSet],
    rows: list[dict],
    *,
    seeds: int,
    trained: list[str],
    seconds: float,
) -> dict:
    """results.json's dict (docs/design.md, "Contracts")."""
    results = {
        "recipe": rec.name,
        "profile": prof.name,
        "seed": 0,
        "in_distribution": tests[0].name if tests else None,
        "test_sets": [t.name for t in tests],
        "branches": ["interp-bicubic", *(b.name for b in rec.branches)],
        "rows": rows,
        "means": compute_means(rows),
    }
    suite = [t.name for t in tests if t.degradation in SUITE]
    if suite:
        results["generalization"] = generalize.matrix(results, suite=suite)
    if seeds > 1:
        results["seeds"] = list(range(seeds))
    results["networks_trained"] = trained
    results["seconds"] = seconds
    return results
