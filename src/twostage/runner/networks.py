"""One seed of a recipe's run: trains (or reuses) the networks it needs and their mapped sets.

Each network is trained once into `out/networks/<label>-<key>/` (configs.py names the key) and
reused by any later run; an interrupted one resumes from its checkpoints. A stage-1 network's
outputs (its **mapped sets**, train and test) are written once to
`out/mapped/<network>-<key>/<set>/` and read back afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import twostage.train as training
from twostage.config import Profile, TrainConfig
from twostage.data.pairs import Lazy, Pair, PairSet
from twostage.data.specs import SPEC_OF, ImageData
from twostage.data.splits import Split, TestSet, short_name
from twostage.errors import UserError
from twostage.models.checkpoints import load_model
from twostage.models.inference import resolve_amp, resolve_device
from twostage.ops.degrade import get_preset, preset_to_dict
from twostage.ops.files import read_text_bounded, write_text_atomic
from twostage.ops.imageio import quantize, read_image, write_image
from twostage.ops.progress import on_terminal
from twostage.pipeline import Pipeline
from twostage.recipes import BranchDef, Images, NetworkDef, Recipe
from twostage.runner.configs import (
    FAMILY_INSTANCES,
    TrainedNetwork,
    bit_depth,
    config_hash,
    train_config,
    what_it_learns,
)


@dataclass
class Run:
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
    ) -> Sequence[np.ndarray]:
        if spec.kind == "hr":
            return Lazy(len(split.items), lambda i: split.hr[i].astype(np.float32) / 255.0)
        if spec.kind == "domain":
            return split.domain(spec.domain)
        if spec.kind == "degraded":
            return split.inputs(degradation, scale=self.recipe.scale)
        net = self.instance(self.recipe.network(spec.network), degradation)
        return self.mapped(net, split, degradation, set_name=set_name)

    def pairs(self, net: NetworkDef, degradation: str, split: Split, set_name: str) -> PairSet:
        """`net`'s (input, target) pairs of a split, made on use."""
        xs = self.images(split, net.input, degradation, set_name=set_name)
        ys = self.images(split, net.target, degradation, set_name=set_name)
        return PairSet.lazy(
            split.names,
            lambda i: Pair(split.names[i], xs[i], ys[i]),
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
        parent_name = self.recipe.init_of(net)
        if parent_name:
            parent = self.instance(self.recipe.network(parent_name), degradation)
            upstream["init"] = parent.key
            init, init_given = parent.weights, parent.given is not None
        label = f"{net.name}-{short_name(deg)}" if deg else net.name
        cfg = train_config(
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
        digest = config_hash(
            {
                "version": 1,
                "config": what_it_learns(cfg),
                "input": dataclasses.asdict(net.input),
                "target": dataclasses.asdict(net.target),
                "degradation": self._describe_deg(deg),
                "data": self.train.description,
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
        return degradation != self.train.track and get_preset(degradation).family is not None

    @functools.cached_property
    def train_instances(self) -> Split:
        return self.train.instances(FAMILY_INSTANCES)

    def _data_spec(self, net: NetworkDef, degradation: str) -> ImageData:
        """The pairs `net` learns, as its config.yaml names them: the training split's files
        (kind, roots, split), how its inputs are made, and its target. A per-patch family
        trains on (target, HR) pairs degraded afresh for every patch; a stage on mapped inputs
        on FAMILY_INSTANCES fixed draws per image, mapped once."""
        if net.target.kind not in ("hr", "domain"):
            raise UserError(f"network {net.name}: a {net.target.kind} target cannot be trained")
        fields = dict(self.train.fields, seed=self.train.data_seed)
        fields["target_domain"] = net.target.domain or None
        off_track = {"track": None} if "track" in fields else {}
        family = net.input.kind != "domain" and self.per_patch(degradation)
        if net.input.kind == "degraded" and degradation == self.train.track:
            inputs: dict = {}
        elif net.input.kind == "degraded":
            inputs = {"preset": degradation, "per_patch": family, **off_track}
        elif net.input.kind == "domain":
            inputs = {"input_domain": net.input.domain, **off_track}
        elif net.input.kind == "mapped":
            mapper = self.instance(self.recipe.network(net.input.network), degradation)
            folder = self._mapped_folder(mapper, degradation, "train")
            k = FAMILY_INSTANCES if family else 1
            inputs = {"input_dir": folder, "instances": k, **off_track}
        else:
            raise UserError(f"network {net.name}: a {net.input.kind} input cannot be trained")
        return SPEC_OF[fields["kind"]](**{**fields, **inputs})

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
        if not deg or deg == self.train.track:
            return deg
        return preset_to_dict(get_preset(deg))

    def _val_set(self, inst: TrainedNetwork) -> PairSet | None:
        """The first val_images pairs of the network's test set: PSNR in its log only (the
        model file is the last iteration's, never picked by it)."""
        if not (self.profile.val_images and self.test_sets):
            return None
        owner = inst.degradation or self.recipe.degradations[0]
        test = next((t for t in self.test_sets if t.networks_of == owner), self.test_sets[0])
        pairs = self.pairs(inst.definition, test.degradation, test.split, test.name)
        return PairSet(pairs[: self.profile.val_images], scale=pairs.scale, name=pairs.name)

    def _train(self, inst: TrainedNetwork, cfg: TrainConfig) -> None:
        net = inst.definition
        if net.input.kind == "mapped":  # the mapped training set the config names, written
            degradation = inst.degradation or self.recipe.degradations[0]
            split = self.train_instances if self.per_patch(degradation) else self.train
            mapper = self.instance(self.recipe.network(net.input.network), degradation)
            self.mapped(mapper, split, degradation, set_name="train")
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
            val_set=val_set,
            quiet=self.quiet or not on_terminal(),  # in a log, Progress's line says it
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
    ) -> Lazy[np.ndarray]:
        """Stage-1 outputs of `inst` on `split`'s inputs, written to mapped/ once (one image in
        memory at a time) and read back on use."""
        folder = self._mapped_folder(inst, degradation, set_name)
        marker = folder / "complete.json"
        bits = bit_depth(inst.definition.target)
        if marker_images(marker) != split.names:
            pipe = Pipeline(None, self.model(inst))
            for name, x in zip(split.names, split.inputs(degradation, scale=self.recipe.scale)):
                # The intermediate rounding of Pipeline: what stage 2 reads back from the PNG.
                y = pipe.restore(x, device=self.device)
                y = quantize(torch.from_numpy(y), bit_depth=bits).numpy()
                write_image(folder / f"{name}.png", y, bit_depth=bits)
            about = {
                "network": inst.label,
                "key": inst.key,
                "images": split.names,
                "bit_depth": bits,
            }
            write_text_atomic(marker, json.dumps(about) + "\n")
        names = split.names
        return Lazy(len(names), lambda i: read_image(folder / f"{names[i]}.png")[0])


def marker_images(marker: Path) -> object:
    """The image names a mapped set's `complete.json` lists; None when it is missing or
    unreadable (a crash or a hand edit): the set is then computed again, into its own folder."""
    if not marker.is_file():
        return None
    try:
        about = json.loads(read_text_bounded(marker))
    except (OSError, ValueError):  # ValueError: bad JSON or UTF-8
        return None
    return about.get("images") if isinstance(about, dict) else None


def branch_instances(
    run: Run, branch: BranchDef, degradation: str
) -> tuple[TrainedNetwork | None, TrainedNetwork]:
    """A branch's stage-1 network (None when it has none) and stage-2 network."""
    s1 = run.instance(run.recipe.network(branch.stage1), degradation) if branch.stage1 else None
    s2 = run.instance(run.recipe.network(branch.stage2), degradation)
    return s1, s2


def branch_pipeline(run: Run, branch: BranchDef, degradation: str) -> Pipeline:
    """A branch's networks as one Pipeline, trained for (or given for) `degradation`."""
    s1, s2 = branch_instances(run, branch, degradation)
    return Pipeline(
        run.model(s1) if s1 else None,
        run.model(s2),
        stage2_repeats=branch.stage2_repeats,
        name=branch.name,
        intermediate_bit_depth=bit_depth(branch.domain),
    )
