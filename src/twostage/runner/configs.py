"""What each network of a recipe trains with: its TrainConfig, its cache key, its instance.

A network's folder `out/networks/<label>-<key>/` is named by `config_hash` of what it learns
(`what_it_learns` of its TrainConfig, its input, target, degradation, data and upstream keys),
so that any later run with the same key reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from twostage.config import (
    ModelConfig,
    Profile,
    TrainConfig,
    apply_mapping,
    config_to_dict,
    profile_defaults,
)
from twostage.data.specs import ImageData
from twostage.data.splits import short_name
from twostage.ops.degrade import DOMAINS
from twostage.recipes import Images, NetworkDef, Recipe

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


def config_hash(obj: object) -> str:
    """A cache key: the first 10 hex digits of the SHA-256 of `obj` as sorted JSON."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def bit_depth(images: Images | str) -> int:
    """The bits an image of this kind (or of this intermediate domain name) is stored with."""
    domain = images if isinstance(images, str) else images.domain
    if isinstance(images, Images) and images.kind != "domain":
        return 8
    return DOMAINS[domain].bit_depth if domain else 8


def train_config(
    recipe: Recipe,
    profile: Profile,
    net: NetworkDef,
    *,
    seed: int,
    device: str,
    init: Path | None,
    label: str,
    init_given: bool = False,
    train_data: ImageData,
) -> TrainConfig:
    """The TrainConfig of one network: the profile's, with this network's model and sizes.

    `init_given`: `init` is a given off-the-shelf checkpoint, whose architecture this network
    takes (so a specialized stage fine-tunes exactly the network the user supplied).
    `train_data`: the spec of the pairs it learns from (the training split's files).
    """
    base = profile_defaults(profile)
    preset = (recipe.rcan or profile.rcan) if net.arch == "rcan" else (recipe.edsr or profile.edsr)
    optim = dataclasses.replace(base.optim, iterations=profile.iterations_for(net.role))
    data = dataclasses.replace(base.data, train=train_data, val=None)
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


def what_it_learns(cfg: TrainConfig) -> dict:
    """The TrainConfig without where it runs, its logging, its init file and its name."""
    description = config_to_dict(cfg)
    for key in ("device", "threads", "compile", "cuda_graph"):
        description["run"].pop(key, None)
    description.pop("log", None)
    description["data"].pop("num_workers", None)  # the same batches with any worker count
    description["model"]["init"] = None  # identified by the upstream network's key instead
    description["data"]["train"]["input_dir"] = None  # likewise (and where `out` is)
    description["name"] = None
    return description
