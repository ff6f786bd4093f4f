"""What a run would do, trains nothing (`twostage run --dry-run`): networks, data, iterations,
and a time estimate from one measured training step of each network on this device."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

import twostage.train as training
from twostage.config import Profile, TrainConfig
from twostage.data.specs import SamplesData
from twostage.data.splits import Split, TestSet, short_name
from twostage.models import build_model, preset_spec
from twostage.models.inference import resolve_amp, resolve_device
from twostage.recipes import NetworkDef, Recipe
from twostage.runner.configs import train_config

STAND_IN = SamplesData(preset="bicubic")  # the step's cost does not depend on the data


def _step_seconds(cfg: TrainConfig, device: torch.device) -> float | None:
    """Seconds of one training step of `cfg`'s network on random data (the median of three);
    None for a given checkpoint's architecture (model.preset null)."""
    if cfg.model.preset is None:
        return None
    net = build_model(preset_spec(cfg.model.preset, scale=cfg.model.scale)).to(device)
    step = training.make_step(cfg, net.train(), device)
    b, p, s = cfg.data.batch_size, cfg.data.patch_size, cfg.model.scale
    x = torch.rand(b, 3, p, p, device=device)
    y = torch.rand(b, 3, p * s, p * s, device=device)
    times = []
    for it in range(1, 6):  # two warm-up steps (kernel choice, allocation), then the median
        start = time.perf_counter()
        step(it, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def _networks(recipe: Recipe, profile: Profile, device: str) -> list[tuple[str, TrainConfig]]:
    """(label, TrainConfig) of every network the run trains (given ones left out)."""
    out = []
    given = dict(recipe.given)
    for net in recipe.needed_networks():
        if net.name in given:
            continue
        degs = recipe.degradations if net.per_degradation else recipe.degradations[:1]
        for deg in degs:
            label = f"{net.name}-{short_name(deg)}" if net.per_degradation else net.name
            cfg = _config(recipe, profile, net, device, label)
            out.append((label, cfg))
    return out


def _config(
    recipe: Recipe, profile: Profile, net: NetworkDef, device: str, label: str
) -> TrainConfig:
    cfg = train_config(
        recipe, profile, net, seed=0, device=device, init=None, label=label, train_data=STAND_IN
    )
    amp = resolve_amp(cfg.run.amp, resolve_device(device))  # as the run resolves it
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, amp=amp))


def dry_run(
    recipe: Recipe,
    profile: Profile,
    train: Split,
    tests: list[TestSet],
    *,
    seeds: int,
    device: str,
    say: Callable[[str], None] = print,
) -> float:
    """Print the plan of a run and return its estimated training seconds (all seeds)."""
    dev = resolve_device(device)
    say(f"recipe {recipe.name}, profile {profile.name}, {seeds} seed(s), device {dev}")
    say(f"training data: {train.source}, {len(train.items)} images ({_where(train)})")
    for t in tests:
        say(f"test set {t.name}: {len(t.split.items)} images, {t.degradation}")
    total = 0.0
    cache: dict[tuple, float | None] = {}
    for label, cfg in _networks(recipe, profile, device):
        key = (cfg.model.preset, cfg.model.scale, cfg.data.batch_size, cfg.data.patch_size)
        if key not in cache:
            cache[key] = _step_seconds(cfg, dev)
        per_step = cache[key]
        iters = cfg.optim.iterations
        cost = "step not measured" if per_step is None else f"{per_step:.3f} s/step"
        say(
            f"network {label}: {cfg.model.preset or 'given'} ×{cfg.model.scale}, {iters} "
            f"iterations of {cfg.data.batch_size}×{cfg.data.patch_size}², {cost}"
        )
        total += iters * (per_step or 0.0)
    total *= seeds
    say(f"estimated training time: {_hours(total)} on this {dev.type} (evaluation not included)")
    return total


def _where(split: Split) -> str:
    f = split.fields
    roots = f.get("roots") or [f.get("root") or "embedded"]
    return f"kind {f['kind']}, {', '.join(map(str, roots))}, split {f.get('split')}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
