"""Typed training configs: dataclasses, YAML load/save, `--set a.b=c` overrides, profiles.

A config is a tree of frozen dataclasses (`TrainConfig` at the root). YAML files mirror that
tree; `save_config` writes every field, so a run's `config.yaml` reproduces the run on its own.
A YAML file may start from a profile (`profile: cpu`) and override only what differs.
Values are type-checked against the dataclass annotations; a wrong key or type is a
`ConfigError` naming the key, the expected type and the value. Every float field must be
finite (NaN and ±Inf are refused in one place); `check_config` holds the range rules.

The ONE profile table (`PROFILES`: paper, cpu, tiny; docs/experiments.md "Profiles" states
the values)
sizes both `twostage train` (a YAML's `profile: NAME`) and `twostage run --profile NAME`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from twostage.data.specs import DatasetSpec, ImageData, SamplesData
from twostage.errors import UserError, short
from twostage.limits import (
    MAX_BATCH_SIZE,
    MAX_INSTANCES,
    MAX_ITERATIONS,
    MAX_NUM_WORKERS,
    MAX_THREADS,
    SEED_MAX,
)
from twostage.ops.files import parse_yaml, read_yaml, write_text_atomic
from twostage.parse import ConfigError, check_value, field_names, hints, parse, type_name

__all__ = [
    "PROFILES",
    "QUICK",
    "ConfigError",
    "DataConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "Profile",
    "RunConfig",
    "TrainConfig",
    "apply_mapping",
    "apply_overrides",
    "check_config",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "get_profile",
    "leaves",
    "load_config",
    "parse",
    "profile_defaults",
    "save_config",
]


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train: a preset name from `twostage models` at `scale`.

    `preset: null` takes the architecture from `init` (fine-tuning a given RCAN/EDSR
    checkpoint whose size is no preset, e.g. an official EDSR-baseline ×2).
    """

    preset: str | None
    scale: int
    init: str | None = None  # a checkpoint to initialise the weights from (any format)


@dataclass(frozen=True)
class DataConfig:
    """Training pairs (input domain → target domain) and how patches are drawn from them."""

    train: DatasetSpec
    val: DatasetSpec | None = None  # whole images, for PSNR/SSIM during training
    patch_size: int = 96  # of the input (LR) patch; the target patch is scale × larger
    batch_size: int = 8  # per process; with DDP the effective batch is batch_size × world size
    augment: bool = True  # random flips and 90° rotations
    # processes drawing batches ahead of the step (torch DataLoader); 0 = in the training
    # process. Batch i is the same whatever the count (it is drawn from its own seed).
    num_workers: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """Adam, a step schedule (lr × gamma every lr_step iterations) and the pixel loss."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    iterations: int = 150_000
    lr_step: int = 50_000
    lr_gamma: float = 0.5
    loss: Literal["l1", "l2"] = "l1"
    grad_clip: float = 0.0  # max global gradient norm; 0 = no clipping
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off


@dataclass(frozen=True)
class LogConfig:
    """How often to log, validate and checkpoint (in iterations), and what to keep."""

    checkpoint_every: int = 5000
    val_every: int = 5000
    log_every: int = 100  # loss/lr to metrics.csv, TensorBoard and the progress bar
    keep_last: int = 3  # checkpoints kept besides `latest` and `best`
    tensorboard: bool = True
    n_val_images: int = 3  # validation outputs written to TensorBoard as images


@dataclass(frozen=True)
class RunConfig:
    """Where and how to run: device, seed, precision and speed switches."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    # autocast: bf16 on CUDA and on CPUs (AMX/AVX512-BF16); fp16 (CUDA) adds a GradScaler;
    # auto: bf16 where the device runs it natively, none elsewhere (never emulated bf16)
    amp: Literal["none", "auto", "bf16", "fp16"] = "none"
    channels_last: bool = False  # NHWC activations (faster on CUDA and on oneDNN CPUs)
    compile: bool = False  # torch.compile the network
    # CUDA: capture the whole step (forward, backward, Adam) once and replay it; ignored on the
    # CPU, and off (with a note) under fp16, DDP or compile. Off by default until a GPU run of
    # benchmarks/gpu.sh shows graph and eager losses equal (BENCHMARKS.md)
    cuda_graph: bool = False
    deterministic: bool = True  # CUDA: deterministic kernels, no cudnn.benchmark
    threads: int = 0  # torch CPU threads; 0 = torch's default


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run."""

    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)
    name: str = ""  # a label for logs; the default run folder is runs/<name>


# ---------------------------------------------------------------------------------------------
# profiles: the ONE table of sizes, used by `twostage train` (`profile: NAME`) and `twostage run`


@dataclass(frozen=True)
class Profile:
    """How big and how long: the networks, the training schedule, how much of the data."""

    name: Literal["paper", "cpu", "tiny", "ship"]
    rcan: str  # model presets (`twostage models`)
    edsr: str
    iterations: int
    batch_size: int
    patch_size: int  # LR (input) patch, as in the paper
    lr: float
    lr_step: int  # the lr halves every lr_step iterations
    log: LogConfig
    specialized_iterations: int | None = None  # stage 2 fine-tuned from off-the-shelf weights
    mapping_iterations: int | None = None
    hr_crop: int | None = None  # centre-crop every embedded image to at most this side
    train_crop: int | None = None  # training images only: this crop instead of hr_crop
    train_images: int | None = None  # use only the first N images of each split
    test_images: int | None = None
    val_images: int = 0  # in-distribution test images used for validation curves
    threads: int = 0  # torch CPU threads; 0 = torch's default
    run: RunConfig = field(default_factory=RunConfig)  # device and speed switches

    def iterations_for(self, role: str) -> int:
        if role == "specialized" and self.specialized_iterations is not None:
            return self.specialized_iterations
        if role == "mapping" and self.mapping_iterations is not None:
            return self.mapping_iterations
        return self.iterations


PROFILES: dict[str, Profile] = {
    # docs/design.md: rcan-paper, batch 8 of 96×96, lr 1e-4 halved every 50k, 150k iterations.
    "paper": Profile(
        "paper",
        rcan="rcan-paper",
        edsr="edsr-paper",
        iterations=150_000,
        batch_size=8,
        patch_size=96,
        lr=1e-4,
        lr_step=50_000,
        log=LogConfig(checkpoint_every=5000, val_every=5000, log_every=100),
        val_images=5,
        run=RunConfig(deterministic=False),
    ),
    # Tuned for `twostage demo`: ≤ 10 min on 2 cores, every learned branch ≥ 0.5 dB over bicubic.
    # 1500 iterations = the paper's three lr phases (halved every 500); the specialized ×2
    # fine-tunes the off-the-shelf weights for 600. Training uses up to 512 px of each image
    # (more data); the test photos are used whole (300–600 px: a 64-px LR crop of three photos
    # is too little to separate branches across the held-out suite).
    "cpu": Profile(
        "cpu",
        rcan="rcan-cpu",
        edsr="edsr-cpu",
        iterations=1500,
        specialized_iterations=600,
        mapping_iterations=1500,
        batch_size=8,
        patch_size=32,
        lr=1e-3,
        lr_step=500,
        log=LogConfig(checkpoint_every=500, val_every=500, log_every=50),
        hr_crop=None,
        train_crop=512,
        threads=2,
        # channels_last 1.2–1.4× faster; bf16 where native 1.3× (BENCHMARKS.md)
        run=RunConfig(device="cpu", channels_last=True, amp="auto"),
    ),
    # For tests: a few iterations of tiny networks on small crops, one thread.
    "tiny": Profile(
        "tiny",
        rcan="rcan-tiny",
        edsr="edsr-tiny",
        iterations=3,
        batch_size=2,
        patch_size=8,
        lr=1e-3,
        lr_step=10,
        log=LogConfig(
            checkpoint_every=10,
            val_every=10,
            log_every=5,
            keep_last=2,
            tensorboard=False,
            n_val_images=1,
        ),
        hr_crop=48,
        train_images=2,
        test_images=2,
        threads=1,
        run=RunConfig(device="cpu"),
    ),
}
# The shipped model's training (configs/recipes/default-model.yaml, docs/models.md): the cpu
# profile's data and settings with wider, deeper RCANs, 6× the mapping iterations and 2× (5×
# for the specialized) the others: under an hour on the 2-core CPU. The lr halves every 2000.
PROFILES["ship"] = dataclasses.replace(
    PROFILES["cpu"],
    name="ship",
    rcan="rcan-small",
    iterations=3000,
    specialized_iterations=3000,
    mapping_iterations=9000,
    lr_step=2000,
    log=LogConfig(checkpoint_every=1500, val_every=1500, log_every=100),
    run=dataclasses.replace(PROFILES["cpu"].run, amp="none"),  # it was trained in fp32
)
# `twostage demo --quick`: the cpu profile, much shorter (≤ 2 minutes, used by CI).
QUICK = dataclasses.replace(
    PROFILES["cpu"],
    iterations=150,
    specialized_iterations=80,
    mapping_iterations=150,
    hr_crop=128,
    train_crop=None,
    train_images=6,
    test_images=3,
    lr_step=100,
)


def get_profile(profile: str | Profile) -> Profile:
    """A profile by name (or a Profile, returned as is); unknown names → ConfigError."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {short(profile)} (choose from {', '.join(PROFILES)})")
    return PROFILES[profile]


def profile_defaults(name: str | Profile) -> TrainConfig:
    """The profile's TrainConfig: an RCAN ×2 mapping network (the paper's best stage 1) trained
    on the embedded samples: gaussian-aniso ↓4 input → bicubic ↓2 target, a pair scale of 2.
    Recipes replace `model` and `data`."""
    p = get_profile(name)
    train = SamplesData(split="train", preset="gaussian-aniso", scale=4, target_domain="bicubic-x2")
    val = SamplesData(split="test", preset="gaussian-aniso", scale=4, target_domain="bicubic-x2")
    if p.train_images is not None:
        train = dataclasses.replace(train, limit=p.train_images)
    if p.test_images is not None:
        val = dataclasses.replace(val, limit=p.test_images)
    return TrainConfig(
        model=ModelConfig(preset=p.rcan, scale=2),
        data=DataConfig(train=train, val=val, patch_size=p.patch_size, batch_size=p.batch_size),
        optim=OptimConfig(lr=p.lr, iterations=p.iterations, lr_step=p.lr_step),
        log=p.log,
        run=dataclasses.replace(p.run, threads=p.threads),
        name=p.name,
    )


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def config_to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON data: dicts, lists, str, numbers, bool, None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"kind": out.pop("kind"), **out} if "kind" in out else out  # the tag first
    if isinstance(obj, tuple | list):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _is_config_class(tp: Any) -> bool:
    """Our own config dataclasses merge key by key; a dataset spec (a union of one class per
    kind) is replaced whole, so a YAML `data.train` never inherits stray fields from a profile."""
    return dataclasses.is_dataclass(tp) and tp.__module__ == __name__


def _merge(cls: type, base: dict[str, Any], update: dict[str, Any], prefix: str) -> dict:
    types_ = hints(cls)
    merged = dict(base)
    for name, value in update.items():
        tp = types_.get(name)
        if (
            tp is not None
            and _is_config_class(tp)
            and isinstance(value, dict)
            and isinstance(merged.get(name), dict)
        ):
            merged[name] = _merge(tp, merged[name], value, f"{prefix}{name}.")
        else:
            merged[name] = value
    return merged


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """A `TrainConfig` from plain data (as YAML gives), optionally starting from
    `profile: NAME`. Errors name `source` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {short(data)}")
    data = dict(data)
    try:
        profile = data.pop("profile", None)
        if profile is not None:
            if not isinstance(profile, str):
                raise ConfigError(
                    f"profile: expected one of {', '.join(PROFILES)}, got {short(profile)}"
                )
            base = config_to_dict(profile_defaults(profile))
            data = _merge(TrainConfig, base, data, "")
        cfg = parse(TrainConfig, data)
        check_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def _one_path_component(name: str) -> bool:
    """Whether `name` names a folder inside runs/ (the default run folder): "" (unset, the
    file's stem is used) or one path component, never a path that leaves runs/."""
    return name == "" or not (
        any(c in name for c in "/\\\0") or name in (".", "..") or Path(name).is_absolute()
    )


def check_config(cfg: TrainConfig) -> None:
    """Range checks that types cannot express; each error names the option."""
    checks = [
        ("model.scale", cfg.model.scale >= 1, "must be >= 1"),
        ("data.patch_size", cfg.data.patch_size >= 1, "must be >= 1"),
        (
            "data.batch_size",
            1 <= cfg.data.batch_size <= MAX_BATCH_SIZE,
            f"must be from 1 to {MAX_BATCH_SIZE}",
        ),
        (
            "data.num_workers",
            0 <= cfg.data.num_workers <= MAX_NUM_WORKERS,
            f"must be from 0 to {MAX_NUM_WORKERS}",
        ),
        *(
            (
                f"data.{split}.instances",
                1 <= spec.instances <= MAX_INSTANCES,
                f"must be from 1 to {MAX_INSTANCES}",
            )
            for split, spec in (("train", cfg.data.train), ("val", cfg.data.val))
            if isinstance(spec, ImageData)
        ),
        ("optim.lr", cfg.optim.lr > 0, "must be > 0"),
        ("optim.betas", all(0 <= b < 1 for b in cfg.optim.betas), "must be in [0, 1)"),
        ("optim.eps", cfg.optim.eps > 0, "must be > 0"),
        (
            "optim.iterations",
            1 <= cfg.optim.iterations <= MAX_ITERATIONS,
            f"must be from 1 to {MAX_ITERATIONS}",
        ),
        ("optim.lr_step", cfg.optim.lr_step >= 1, "must be >= 1"),
        ("optim.lr_gamma", 0 < cfg.optim.lr_gamma <= 1, "must be in (0, 1]"),
        ("optim.grad_clip", cfg.optim.grad_clip >= 0, "must be >= 0"),
        ("optim.ema", 0 <= cfg.optim.ema < 1, "must be in [0, 1)"),
        ("log.checkpoint_every", cfg.log.checkpoint_every >= 1, "must be >= 1"),
        ("log.val_every", cfg.log.val_every >= 1, "must be >= 1"),
        ("log.log_every", cfg.log.log_every >= 1, "must be >= 1"),
        ("log.keep_last", cfg.log.keep_last >= 1, "must be >= 1"),
        ("log.n_val_images", cfg.log.n_val_images >= 0, "must be >= 0"),
        ("run.threads", 0 <= cfg.run.threads <= MAX_THREADS, f"must be in [0, {MAX_THREADS}]"),
        ("run.seed", 0 <= cfg.run.seed <= SEED_MAX, f"must be in [0, {SEED_MAX}] (numpy's range)"),
        (
            "name",
            _one_path_component(cfg.name),
            f"must be one folder name (no /, \\, '.' or '..'), got {short(cfg.name)}",
        ),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{key} {rule}")


# ---------------------------------------------------------------------------------------------
# files and overrides


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config (see configs/); errors name the file and the key."""
    try:
        data = read_yaml(path, "config")
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    return config_from_dict(data if data is not None else {}, source=f"config {path}")


def config_to_yaml(cfg: TrainConfig) -> str:
    """Every field of `cfg` as YAML (what `save_config` writes)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write `cfg` as YAML (atomically); `load_config` reads it back to an equal object."""
    write_text_atomic(path, config_to_yaml(cfg))


def _replace_at(obj: Any, parts: list[str], raw: str, value: Any, done: list[str]) -> Any:
    """A copy of dataclass `obj` with the field at `parts` set to `value` (type-checked)."""
    name, rest = parts[0], parts[1:]
    key = ".".join([*done, name])
    names = field_names(type(obj))
    if name not in names:
        owner = ".".join(done)
        raise ConfigError(
            f"unknown key {key} (valid keys{' of ' + owner if owner else ''}: {', '.join(names)})"
        )
    tp = hints(type(obj))[name]
    if not rest:
        new = check_value(value, tp, key)
    else:
        current = getattr(obj, name)
        if not dataclasses.is_dataclass(current):
            if current is None:
                raise ConfigError(f"{key} is null: set it whole first, e.g. --set {key}={{...}}")
            raise ConfigError(f"unknown key {key}.{rest[0]} ({key} is {type_name(tp)})")
        new = _replace_at(current, rest, raw, value, [*done, name])
    try:
        return dataclasses.replace(obj, **{name: new})
    except (UserError, TypeError, ValueError) as exc:
        raise ConfigError(f"{key}={raw}: {exc}") from None


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """`cfg` with `["optim.lr=2e-4", "data.val=null", ...]` applied in order. Values are YAML
    (`[0.9, 0.999]`, `null`, `{kind: samples}`), checked against the field types."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {short(item)}: expected KEY=VALUE, e.g. optim.lr=2e-4")
        try:
            value = parse_yaml(raw, f"--set {key}") if raw.strip() else ""
        except UserError as exc:
            raise ConfigError(str(exc)) from None
        try:
            cfg = _replace_at(cfg, key.split("."), raw, value, [])
            check_config(cfg)
        except ConfigError as exc:
            raise ConfigError(f"--set {short(item, quote=False)}: {exc}") from None
    return cfg


def leaves(mapping: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    """The (key path, value) of every non-mapping value in a nested mapping, in order."""
    out: list[tuple[list[str], Any]] = []
    for name, value in mapping.items():
        here = (*path, str(name))
        out += leaves(value, here) if isinstance(value, dict) else [(list(here), value)]
    return out


def apply_mapping(cfg: TrainConfig, mapping: dict[str, Any]) -> TrainConfig:
    """`cfg` with a nested mapping of its fields merged in, key by key (a recipe's `train:`,
    e.g. `{optim: {lr: 2.0e-4}}`): each value replaces that one field, type-checked as a YAML
    config's are; nested mappings merge into the sections, the rest is kept."""
    for parts, value in leaves(mapping):
        cfg = _replace_at(cfg, parts, short(value, quote=False), value, [])
    check_config(cfg)
    return cfg
