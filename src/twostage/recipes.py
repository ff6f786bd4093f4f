"""The paper's experiments as data: networks, branches, built-in and YAML recipes.

A **recipe** names the networks it needs (`NetworkDef`: architecture, scale, what it learns to
map from and to) and the **branches** it compares (`BranchDef`: stage 1, stage 2, repeats), plus
the training degradation(s) and the test degradations. Built in (docs/design.md):

- `sr-x4`      Fig. 3 / Table 2: direct-edsr, direct-rcan, map1-offshelf-x2x2, map1-offshelf-x4,
               map1-specialized-x4, map2-offshelf-x2, map2-specialized-x2.
- `sr-x2`      the same comparison at ×2: direct-edsr, direct-rcan, map1-offshelf-x2,
               map1-specialized-x2 (map1: degraded ↓2 → bicubic ↓2 look-alike, same size).
- `bicubic-x4` Table 1: offshelf-x4, offshelf-x2x2, specialized-x2x2.
- `deblur`     Table 3: deblur-direct, deblur-mapped, deblur-specialized, deblur-reference
               (7×7 and 11×11 blur mapped to the 9×9 intermediate domain; scale 1).

Every table also has `interp-bicubic` (MATLAB bicubic of the input; the identity at scale 1).
A recipe YAML (configs/paper/*.yaml, configs/recipes/*.yaml) starts from one of these (`base:`)
and may set its own degradations, intermediate domain (deblur), branch subset, networks, and
training settings (`train:`, a nested mapping of TrainConfig fields). runner.py runs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from twostage.config import ConfigError, apply_mapping, leaves, parse, profile_defaults
from twostage.errors import UserError
from twostage.ops.degrade import DOMAINS, SUITE
from twostage.ops.files import read_yaml


@dataclass(frozen=True)
class Images:
    """Images described from the HR image: the HR itself, its degraded input, an intermediate
    domain image (ops.degrade.intermediate), or a stage-1 network's output on the input."""

    kind: Literal["hr", "degraded", "domain", "mapped"]
    domain: str = ""  # kind "domain": a name from ops.degrade.DOMAINS
    network: str = ""  # kind "mapped": the NetworkDef applied to the degraded input


@dataclass(frozen=True)
class NetworkDef:
    """One network a recipe trains: architecture, scale, and the pairs it learns (input → target).

    A network whose input is the degraded image (or a mapping of it) is trained once per
    training degradation; the others (off-the-shelf) once per recipe.
    """

    name: str
    role: Literal["offshelf", "mapping", "direct", "specialized"]
    arch: Literal["rcan", "edsr"]
    scale: int
    input: Images
    target: Images
    init_from: str | None = None  # a network whose weights initialise this one (specialized)

    @property
    def per_degradation(self) -> bool:
        return self.input.kind in ("degraded", "mapped")


@dataclass(frozen=True)
class BranchDef:
    """One column of a table: stage 1 (optional) then stage 2 applied `stage2_repeats` times."""

    name: str
    stage2: str
    stage1: str | None = None
    stage2_repeats: int = 1
    input: Literal["degraded", "domain"] = "degraded"  # "domain": the reference upper bound
    domain: str = ""  # the intermediate domain of stage 1's output, or of the reference input


@dataclass(frozen=True)
class Claim:
    """What a recipe sets out to show: branch `ours` beats branch `rival`. The report's
    reading (report.describe, generalize.reading) checks it against the numbers."""

    ours: str
    rival: str


@dataclass(frozen=True)
class Recipe:
    """An experiment: the networks, the branches, and the degradations to train and test on."""

    name: str
    base: str
    scale: int
    degradations: tuple[str, ...]  # training degradations (preset names or preset YAML files)
    test_degradations: tuple[str, ...]  # evaluated with the networks of degradations[0] if new
    networks: tuple[NetworkDef, ...]
    branches: tuple[BranchDef, ...]
    specialized_init: Literal["offshelf", "scratch"] = "offshelf"
    # offshelf: a mapping network starts from the off-the-shelf network of its scale (map2 from
    # offshelf-x2), when the recipe has one; scratch: from random weights (the paper's)
    mapping_init: Literal["offshelf", "scratch"] = "scratch"
    rcan: str | None = None  # model presets overriding the profile's
    edsr: str | None = None
    # TrainConfig fields over the profile's, as a nested mapping (`{optim: {lr: 2.0e-4}}`)
    train: dict[str, Any] = field(default_factory=dict)
    # Off-the-shelf networks loaded instead of trained: (network name, checkpoint path), any
    # file `twostage restore --model` accepts (official EDSR/RCAN, BasicSR, spandrel, native).
    given: tuple[tuple[str, str], ...] = ()
    claim: Claim | None = None  # what the recipe sets out to show (report.describe reads it)
    # also test on the embedded fine-detail images (print, man-made structure) as detail-*
    detail_sets: bool = False

    def with_given(self, checkpoints: dict[str, Path]) -> Recipe:
        """The recipe with off-the-shelf networks given as checkpoints; others → UserError."""
        offshelf = [n.name for n in self.networks if n.role == "offshelf"]
        for name, path in checkpoints.items():
            if name not in offshelf:
                raise UserError(
                    f"--offshelf {name}=...: {self.name} has no off-the-shelf "
                    f"network {name!r}; choose from {', '.join(offshelf)}"
                )
            if not Path(path).is_file():
                raise UserError(f"--offshelf {name}={path}: no such file")
        merged = dict(self.given) | {k: str(v) for k, v in checkpoints.items()}
        return dataclasses.replace(self, given=tuple(sorted(merged.items())))

    def with_suite(self) -> Recipe:
        """The recipe also tested on every held-out SUITE degradation (`--test-suite`).

        The suite is of ×4 super-resolution degradations: a ×1 recipe (deblur) is refused
        rather than tested on a suite degraded at ×1, where bicubic is the identity."""
        _check_suite_scale(self, "--test-suite")
        tests = tuple(dict.fromkeys((*self.test_degradations, *SUITE)))
        return dataclasses.replace(self, test_degradations=tests)

    def network(self, name: str) -> NetworkDef:
        for net in self.networks:
            if net.name == name:
                return net
        raise UserError(f"recipe {self.name}: no network named {name!r}")

    def with_branches(self, names: Sequence[str]) -> Recipe:
        """The same recipe restricted to `names` (in the recipe's order); unknown → UserError."""
        known = [b.name for b in self.branches]
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise UserError(
                f"recipe {self.name}: unknown branch(es) {', '.join(bad) or '(none)'}"
                f"; choose from {', '.join(known)}"
            )
        return dataclasses.replace(
            self, branches=tuple(b for b in self.branches if b.name in names)
        )

    def init_of(self, net: NetworkDef) -> str | None:
        """The network whose weights initialise `net` (None: random weights): a specialized
        stage's off-the-shelf network (specialized_init), a mapping network's off-the-shelf
        network of the same scale and architecture (mapping_init)."""
        if net.role == "specialized" and self.specialized_init == "offshelf":
            return net.init_from
        if net.role == "mapping" and self.mapping_init == "offshelf":
            same = (n for n in self.networks if n.role == "offshelf" and n.scale == net.scale)
            return next((n.name for n in same if n.arch == net.arch), None)
        return None

    def needed_networks(self) -> list[NetworkDef]:
        """The networks the branches need (with everything they depend on), in training order."""
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            net = self.network(name)
            deps = [net.input.network] if net.input.kind == "mapped" else []
            parent = self.init_of(net)
            if parent:
                deps.append(parent)
            for dep in deps:
                visit(dep)
            order.append(name)

        for branch in self.branches:
            for name in (branch.stage1, branch.stage2):
                if name:
                    visit(name)
        return [self.network(n) for n in order]


def _check_suite_scale(recipe: Recipe, option: str) -> None:
    if recipe.scale == 1:
        raise UserError(
            f"{option}: the held-out suite is of ×4 super-resolution degradations; recipe "
            f"{recipe.name} is ×1 ({recipe.base}), so the suite does not apply to it"
        )


def _rcan(
    name: str, role: str, scale: int, inp: Images, tgt: Images, init_from: str | None = None
) -> NetworkDef:
    return NetworkDef(name, role, "rcan", scale, inp, tgt, init_from)  # type: ignore[arg-type]


_HR = Images("hr")
_DEG = Images("degraded")


def sr_x4(
    *,
    degradation: str = "gaussian-aniso",
    test_degradations: Sequence[str] = ("gaussian-aniso", "camera"),
) -> Recipe:
    """Fig. 3 / Table 2: every ×4 branch, trained on one degradation."""
    b4, b2 = Images("domain", "bicubic-x4"), Images("domain", "bicubic-x2")
    networks = (
        _rcan("offshelf-x2", "offshelf", 2, b2, _HR),
        _rcan("offshelf-x4", "offshelf", 4, b4, _HR),
        _rcan("map1", "mapping", 1, _DEG, b4),
        _rcan("map2", "mapping", 2, _DEG, b2),
        NetworkDef("direct-edsr", "direct", "edsr", 4, _DEG, _HR),
        _rcan("direct-rcan", "direct", 4, _DEG, _HR),
        _rcan(
            "specialized-x4", "specialized", 4, Images("mapped", network="map1"), _HR, "offshelf-x4"
        ),
        _rcan(
            "specialized-x2", "specialized", 2, Images("mapped", network="map2"), _HR, "offshelf-x2"
        ),
    )
    branches = (
        BranchDef("direct-edsr", "direct-edsr"),
        BranchDef("direct-rcan", "direct-rcan"),
        BranchDef("map1-offshelf-x2x2", "offshelf-x2", "map1", 2, domain="bicubic-x4"),
        BranchDef("map1-offshelf-x4", "offshelf-x4", "map1", domain="bicubic-x4"),
        BranchDef("map1-specialized-x4", "specialized-x4", "map1", domain="bicubic-x4"),
        BranchDef("map2-offshelf-x2", "offshelf-x2", "map2", domain="bicubic-x2"),
        BranchDef("map2-specialized-x2", "specialized-x2", "map2", domain="bicubic-x2"),
    )
    return Recipe(
        "sr-x4",
        "sr-x4",
        4,
        (degradation,),
        tuple(test_degradations),
        networks,
        branches,
        claim=Claim(ours="map2-specialized-x2", rival="direct-rcan"),
    )


def sr_x2(
    *,
    degradation: str = "gaussian-aniso",
    test_degradations: Sequence[str] = ("gaussian-aniso", "camera"),
) -> Recipe:
    """Fig. 3's comparison at ×2: map1 takes the degraded ↓2 input to a bicubic ↓2 look-alike
    of the same size, then an off-the-shelf or specialized ×2; against direct ×2 networks."""
    b2 = Images("domain", "bicubic-x2")
    networks = (
        _rcan("offshelf-x2", "offshelf", 2, b2, _HR),
        _rcan("map1", "mapping", 1, _DEG, b2),
        NetworkDef("direct-edsr", "direct", "edsr", 2, _DEG, _HR),
        _rcan("direct-rcan", "direct", 2, _DEG, _HR),
        _rcan(
            "specialized-x2", "specialized", 2, Images("mapped", network="map1"), _HR, "offshelf-x2"
        ),
    )
    branches = (
        BranchDef("direct-edsr", "direct-edsr"),
        BranchDef("direct-rcan", "direct-rcan"),
        BranchDef("map1-offshelf-x2", "offshelf-x2", "map1", domain="bicubic-x2"),
        BranchDef("map1-specialized-x2", "specialized-x2", "map1", domain="bicubic-x2"),
    )
    return Recipe(
        "sr-x2",
        "sr-x2",
        2,
        (degradation,),
        tuple(test_degradations),
        networks,
        branches,
        claim=Claim(ours="map1-specialized-x2", rival="direct-rcan"),
    )


def bicubic_x4() -> Recipe:
    """Table 1 on bicubic ↓4 input: off-the-shelf ×4, ×2 twice, and the specialized second ×2."""
    b4, b2 = Images("domain", "bicubic-x4"), Images("domain", "bicubic-x2")
    networks = (
        _rcan("offshelf-x2", "offshelf", 2, b2, _HR),
        _rcan("offshelf-x4", "offshelf", 4, b4, _HR),
        _rcan(
            "specialized-x2x2",
            "specialized",
            2,
            Images("mapped", network="offshelf-x2"),
            _HR,
            "offshelf-x2",
        ),
    )
    branches = (
        BranchDef("offshelf-x4", "offshelf-x4"),
        BranchDef("offshelf-x2x2", "offshelf-x2", stage2_repeats=2),
        BranchDef("specialized-x2x2", "specialized-x2x2", "offshelf-x2", domain="bicubic-x2"),
    )
    return Recipe(
        "bicubic-x4",
        "bicubic-x4",
        4,
        ("bicubic",),
        ("bicubic",),
        networks,
        branches,
        claim=Claim(ours="specialized-x2x2", rival="offshelf-x2x2"),
    )


def deblur(*, degradations: Sequence[str] = ("blur7", "blur11"), domain: str = "blur9") -> Recipe:
    """Table 3: k×k blur mapped to the 9×9 domain, against the 9×9 deblurrer applied directly."""
    dom = Images("domain", domain)
    networks = (
        _rcan("deblur", "offshelf", 1, dom, _HR),
        _rcan("map", "mapping", 1, _DEG, dom),
        _rcan(
            "deblur-specialized", "specialized", 1, Images("mapped", network="map"), _HR, "deblur"
        ),
    )
    branches = (
        BranchDef("deblur-direct", "deblur"),
        BranchDef("deblur-mapped", "deblur", "map", domain=domain),
        BranchDef("deblur-specialized", "deblur-specialized", "map", domain=domain),
        BranchDef("deblur-reference", "deblur", input="domain", domain=domain),
    )
    return Recipe(
        "deblur",
        "deblur",
        1,
        tuple(degradations),
        tuple(degradations),
        networks,
        branches,
        claim=Claim(ours="deblur-mapped", rival="deblur-direct"),
    )


# The built-in recipes (the bases a recipe YAML starts from), by name.
BUILTIN: dict[str, Callable[[], Recipe]] = {
    "sr-x4": sr_x4,
    "sr-x2": sr_x2,
    "bicubic-x4": bicubic_x4,
    "deblur": deblur,
}
BASES = tuple(BUILTIN)


def builtin_recipe(name: str) -> Recipe:
    if name not in BUILTIN:
        raise UserError(
            f"unknown recipe {name!r}; choose one of {', '.join(BASES)} or a recipe .yaml file"
        )
    return BUILTIN[name]()


@dataclass(frozen=True)
class RecipeModels:
    """A recipe's `models:`: model presets (`twostage models`) overriding the profile's."""

    rcan: str | None = None
    edsr: str | None = None


@dataclass(frozen=True)
class RecipeFile:
    """A recipe YAML as written (filled by `config.parse`): `base` plus what it changes."""

    base: str
    name: str | None = None
    degradations: tuple[str, ...] | str | None = None
    test_degradations: tuple[str, ...] | str | None = None  # `suite`: the held-out SUITE
    domain: str | None = None  # deblur only
    branches: tuple[str, ...] | str | None = None
    specialized_init: Literal["offshelf", "scratch"] = "offshelf"
    mapping_init: Literal["offshelf", "scratch"] = "scratch"
    models: RecipeModels | None = None
    train: dict[str, Any] | None = None  # nested TrainConfig fields, over the profile's
    offshelf: dict[str, str] | None = None  # network name → checkpoint file
    claim: Claim | None = None  # None: the base's
    detail_sets: bool = False  # also test on the embedded fine-detail images (detail-*)

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise UserError(f"base must be one of {', '.join(BASES)}, got {self.base!r}")
        for key in ("degradations", "test_degradations", "branches"):
            value = getattr(self, key)
            if isinstance(value, str):
                object.__setattr__(self, key, (value,))
            elif value is not None and not value:
                raise UserError(f"{key} must be a non-empty list of names, got {list(value)!r}")


# TrainConfig keys a recipe's `train:` may not set: `twostage run` sets them for each network
# (its pairs, its architecture and scale, its seed, its folder name), so a value here would be
# recorded in config.yaml and either ignored or applied to every network and every seed alike.
_SET_BY_RUN = {
    "data.train": "`twostage run` takes its data from --data and the recipe's degradations",
    "data.val": "`twostage run` validates on its test data (from --data and the recipe)",
    "model": "the recipe's `models:` picks the presets; scale and init are each network's own",
    "run.seed": "`twostage run --seeds N` runs seeds 0..N-1",
    "name": "`twostage run` names each network's folder",
}


def _check_train(train: dict[str, Any], source: str) -> None:
    """Refuse the keys `twostage run` sets itself, then type- and range-check the rest as
    they would be merged into a TrainConfig (errors name the key)."""
    for parts, _value in leaves(train):
        key = ".".join(parts)
        for owned, why in _SET_BY_RUN.items():
            if key == owned or key.startswith(owned + "."):
                raise UserError(f"{source}: train.{owned} is not used: {why}; remove it")
            if owned.startswith(key + "."):  # the whole mapping above it, e.g. `data: null`
                raise UserError(f"{source}: train.{key} sets {owned}, which is not used: {why}")
    try:
        apply_mapping(profile_defaults("tiny"), train)
    except ConfigError as exc:
        raise ConfigError(f"{source}: train: {exc}") from None


def _expand_suite(names: Sequence[str]) -> tuple[str, ...]:
    """`suite` in test_degradations stands for the nine held-out SUITE presets, in order."""
    out = [n for name in names for n in (SUITE if name == "suite" else (name,))]
    return tuple(dict.fromkeys(out))


def _from_base(spec: RecipeFile, source: str) -> Recipe:
    """The base recipe with the file's degradations, test degradations and domain."""
    degs = spec.degradations
    tests = _expand_suite(spec.test_degradations) if spec.test_degradations else None
    if spec.domain is not None and spec.base != "deblur":
        raise UserError(
            f"{source}: domain is fixed by the branches of {spec.base} "
            "(sr-x4's map1: bicubic-x4, map2 and sr-x2's map1: bicubic-x2); it is an option "
            "of deblur only"
        )
    if spec.base in ("sr-x4", "sr-x2"):
        if degs is not None and len(degs) != 1:
            raise UserError(f"{source}: {spec.base} trains on one degradation, got {list(degs)}")
        make = sr_x4 if spec.base == "sr-x4" else sr_x2
        return make(
            degradation=degs[0] if degs else "gaussian-aniso",
            test_degradations=tests or ((degs[0],) if degs else ("gaussian-aniso", "camera")),
        )
    if spec.base == "bicubic-x4":
        recipe = bicubic_x4()
        if degs is None and tests is None:
            return recipe
        return dataclasses.replace(
            recipe, degradations=degs or recipe.degradations, test_degradations=tests or degs or ()
        )
    if spec.domain is not None and spec.domain not in DOMAINS:
        raise UserError(f"{source}: domain must be one of {', '.join(DOMAINS)}")
    recipe = deblur(degradations=degs or ("blur7", "blur11"), domain=spec.domain or "blur9")
    if "suite" in (spec.test_degradations or ()):
        _check_suite_scale(recipe, f"{source}: test_degradations: suite")
    return dataclasses.replace(recipe, test_degradations=tests) if tests else recipe


def _check_claim(recipe: Recipe, claim: Claim, source: str) -> None:
    known = [b.name for b in recipe.branches]
    for key in ("ours", "rival"):
        if getattr(claim, key) not in known:
            raise UserError(
                f"{source}: claim.{key}: {getattr(claim, key)!r} is not a branch of "
                f"{recipe.base}; choose from {', '.join(known)}"
            )
    if claim.ours == claim.rival:
        raise UserError(f"{source}: claim: ours and rival are the same branch {claim.ours!r}")


def recipe_from_dict(data: object, *, source: str = "recipe") -> Recipe:
    """A Recipe from YAML data (`RecipeFile`'s keys): `base` (sr-x4 | sr-x2 | bicubic-x4 | deblur)
    plus optional name, degradations, test_degradations (`suite` stands for the held-out
    SUITE), domain (deblur), branches, specialized_init, mapping_init, models ({rcan: PRESET,
    edsr: PRESET}), train (nested TrainConfig fields), offshelf, claim ({ours, rival}) and
    detail_sets (also test on the embedded fine-detail images)."""
    spec: RecipeFile = parse(RecipeFile, data, source)
    recipe = _from_base(spec, source)
    models = spec.models or RecipeModels()
    train = spec.train or {}
    _check_train(train, source)
    if spec.claim is not None:
        _check_claim(recipe, spec.claim, source)
    recipe = dataclasses.replace(
        recipe,
        name=spec.name or recipe.name,
        specialized_init=spec.specialized_init,
        mapping_init=spec.mapping_init,
        rcan=models.rcan,
        edsr=models.edsr,
        train=train,
        claim=spec.claim or recipe.claim,
        detail_sets=spec.detail_sets,
    )
    offshelf = spec.offshelf or {}
    recipe = recipe.with_given({k: Path(v) for k, v in offshelf.items()})
    return recipe.with_branches(spec.branches) if spec.branches else recipe


def load_recipe(recipe: str | Path | Recipe) -> Recipe:
    """A built-in recipe name, a recipe YAML file, or a Recipe (returned as is)."""
    if isinstance(recipe, Recipe):
        return recipe
    text = str(recipe)
    if text in BASES:
        return builtin_recipe(text)
    path = Path(text)
    if path.suffix not in (".yaml", ".yml") and not path.is_file():
        builtin_recipe(text)  # raises the "unknown recipe" error
    data = read_yaml(path, "recipe")  # no aliases, bounded size
    return recipe_from_dict(data, source=f"recipe {path}")


def demo_recipe() -> Recipe:
    """The blind demo: sr-x4 trained on `realistic-mix` (drawn afresh per patch), tested on it,
    on the paper's gaussian-aniso and on the held-out suite: direct ×4 RCAN against map2 +
    off-the-shelf/specialized ×2, map2 starting from the off-the-shelf ×2's weights
    (configs/recipes/demo.yaml says the same)."""
    recipe = sr_x4(
        degradation="realistic-mix", test_degradations=("realistic-mix", "gaussian-aniso")
    )
    recipe = dataclasses.replace(recipe, mapping_init="offshelf")
    return recipe.with_suite().with_branches(
        ["direct-rcan", "map2-offshelf-x2", "map2-specialized-x2"]
    )
