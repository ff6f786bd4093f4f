"""Recipes as data: what a recipe YAML may say, and which combinations are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from twostage.cli import main
from twostage.config import PROFILES, QUICK, config_to_dict
from twostage.data.specs import SamplesData
from twostage.data.splits import FILE_TRACKS, short_name
from twostage.errors import UserError
from twostage.ops.degrade import get_preset, preset_to_dict
from twostage.recipes import (
    Claim,
    Recipe,
    builtin_recipe,
    demo_recipe,
    load_recipe,
    recipe_from_dict,
)
from twostage.runner import configs as runner_configs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "train,key",
    [
        ({"data": {"train": {"kind": "samples", "preset": "blur7"}}}, "train.data.train"),
        ({"data": {"train": {"kind": "folders"}, "batch_size": 4}}, "train.data.train"),
        ({"data": {"val": None}}, "train.data.val"),
        ({"data": None}, "train.data sets data.train"),
        ({"model": {"preset": "rcan-paper"}}, "train.model"),
        ({"run": {"seed": 3}}, "train.run.seed"),
        ({"name": "x"}, "train.name"),
    ],
)
def test_recipe_train_keys_run_sets_per_network_are_refused_naming_the_key(
    train: dict, key: str
) -> None:
    with pytest.raises(UserError, match=rf"recipe: {re.escape(key)}") as err:
        recipe_from_dict({"base": "deblur", "train": train})
    assert "\n" not in str(err.value)


def test_recipe_train_patch_and_batch_sizes_are_still_accepted() -> None:
    rec = recipe_from_dict(
        {"base": "sr-x4", "train": {"data": {"batch_size": 4, "augment": False}}}
    )
    assert rec.train == {"data": {"batch_size": 4, "augment": False}}


def test_shipped_recipe_files_still_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted([*root.glob("paper/*.yaml"), *root.glob("recipes/*.yaml")]):
        load_recipe(path)


def test_suite_is_refused_for_a_scale_1_recipe() -> None:
    with pytest.raises(UserError, match=r"--test-suite: .*recipe deblur is ×1"):
        builtin_recipe("deblur").with_suite()
    with pytest.raises(UserError, match=r"test_degradations: suite: .*×1"):
        recipe_from_dict({"base": "deblur", "test_degradations": ["blur7", "suite"]})
    assert len(builtin_recipe("bicubic-x4").with_suite().test_degradations) == 9


def test_run_deblur_with_test_suite_exits_2_before_writing(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    code = main(["run", "deblur", "--test-suite", "--profile", "tiny", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--test-suite" in err and "deblur" in err
    assert not out.exists()


# Recipes whose `train:` sets many kinds of field (strings read as floats, lists as tuples,
# booleans, literals), beside the built-in and shipped ones.
CRAFTED = {
    "crafted-sr": {
        "base": "sr-x4",
        "train": {
            "optim": {
                "lr": "2e-4",
                "betas": [0.8, 0.95],
                "loss": "l2",
                "grad_clip": 1,
                "ema": 0.99,
            },
            "log": {"tensorboard": False, "keep_last": 5, "checkpoint_every": 7},
            "run": {"amp": "bf16", "channels_last": True, "threads": 2, "deterministic": False},
            "data": {"patch_size": 24, "batch_size": 3, "augment": False},
        },
    },
    "crafted-deblur": {
        "base": "deblur",
        "specialized_init": "scratch",
        "train": {"optim": {"iterations": 7, "lr_gamma": 1}, "data": {}},
    },
    "crafted-bicubic": {
        "base": "bicubic-x4",
        "models": {"rcan": "rcan-tiny"},
        "train": {"optim": {"eps": 1.0e-6, "lr_step": 3}, "run": {"compile": True}},
    },
}


def _recipes() -> dict[str, Recipe]:
    out = {name: load_recipe(name) for name in ("sr-x4", "bicubic-x4", "deblur")}
    out["demo"] = demo_recipe()
    for path in sorted([*ROOT.glob("configs/recipes/*.yaml"), *ROOT.glob("configs/paper/*.yaml")]):
        out[str(path.relative_to(ROOT))] = load_recipe(path)
    for name, data in CRAFTED.items():
        out[name] = recipe_from_dict(data)
    return out


DATA = SamplesData(preset="bicubic")  # a stand-in: the runner names each network's own data


def _pins(recipe: Recipe, profile) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """{network label: [sha of its whole TrainConfig, its cache key]}, built as runner._trained
    builds them (upstream keys chained; the data's description left out)."""
    keys: dict[str, list[str]] = {}

    def key(net, degradation):  # type: ignore[no-untyped-def]
        deg = degradation if net.per_degradation else ""
        label = f"{net.name}-{short_name(deg)}" if deg else net.name
        if label in keys:
            return keys[label][1]
        upstream, init = {}, None
        if net.input.kind == "mapped":
            upstream["mapped_by"] = key(recipe.network(net.input.network), degradation)
        parent = recipe.init_of(net)
        if parent:
            upstream["init"] = key(recipe.network(parent), degradation)
            init = Path("networks") / parent / "model.safetensors"
        cfg = runner_configs.train_config(
            recipe, profile, net, seed=0, device="cpu", init=init, label=label, train_data=DATA
        )
        whole_dict = config_to_dict(cfg)
        learned = runner_configs.what_it_learns(cfg)
        for d in (whole_dict, learned):  # the data's spec is the runner's (test_runner pins it)
            d["data"]["train"] = None
            d["data"].pop("num_workers", None)  # added later: the same batches with any count
        whole = json.dumps(whole_dict, sort_keys=True)
        digest = runner_configs.config_hash(
            {
                "version": 1,
                "config": learned,
                "input": dataclasses.asdict(net.input),
                "target": dataclasses.asdict(net.target),
                "degradation": (
                    preset_to_dict(get_preset(deg)) if deg and deg not in FILE_TRACKS else deg
                ),
                "upstream": upstream,
            }
        )
        keys[label] = [hashlib.sha256(whole.encode()).hexdigest()[:16], digest]
        return digest

    for net in recipe.needed_networks():
        for degradation in recipe.degradations:
            key(net, degradation)
    return keys


def test_every_recipe_gives_the_train_configs_and_cache_keys_it_gave_before_the_dict_merge() -> (
    None
):
    """tests/data/recipe_train_configs.json was written by this code run on the commit before
    `train:` was merged as a mapping (it went through k=v strings and apply_overrides then), and
    again, with `data.train` left out of both, before the dataset specs became one class per
    kind: every TrainConfig and cache key of every recipe under every profile is unchanged."""
    expected = json.loads((ROOT / "tests/data/recipe_train_configs.json").read_text())
    profiles = {**PROFILES, "quick": QUICK}
    got = {
        f"{name} @ {p}": _pins(recipe, prof)
        for name, recipe in _recipes().items()
        for p, prof in profiles.items()
    }
    assert got == expected


@pytest.mark.parametrize(
    "train,needle",
    [
        ({"optim": {"lr": "abc"}}, "train: optim.lr: expected float, got 'abc'"),
        ({"optim": {"lr": -1}}, "train: optim.lr must be > 0"),
        ({"optim": {"nope": 1}}, "train: unknown key optim.nope"),
        ({"run": {"amp": "fp8"}}, "train: run.amp: expected one of"),
    ],
)
def test_a_bad_train_value_is_refused_when_the_recipe_loads_naming_file_and_key(
    train: dict, needle: str
) -> None:
    with pytest.raises(UserError, match=rf"^recipe r\.yaml: {re.escape(needle)}"):
        recipe_from_dict({"base": "sr-x4", "train": train}, source="recipe r.yaml")


def test_a_recipe_states_its_claim_as_data_and_a_wrong_branch_is_refused() -> None:
    assert builtin_recipe("sr-x4").claim == Claim(ours="map2-specialized-x2", rival="direct-rcan")
    assert all(builtin_recipe(name).claim is not None for name in ("bicubic-x4", "deblur"))
    for path in ROOT.glob("configs/recipes/*.yaml"):
        assert "claim:" in path.read_text(), path
    mine = recipe_from_dict(
        {"base": "sr-x4", "claim": {"ours": "map2-offshelf-x2", "rival": "direct-edsr"}}
    )
    assert mine.claim == Claim(ours="map2-offshelf-x2", rival="direct-edsr")
    # the claim names branches of the base, even when `branches:` runs only some of them
    kept = recipe_from_dict({"base": "sr-x4", "branches": ["map2-specialized-x2"]})
    assert kept.claim == Claim(ours="map2-specialized-x2", rival="direct-rcan")
    with pytest.raises(UserError, match=r"recipe: claim\.rival: 'map9' is not a branch of sr-x4"):
        recipe_from_dict({"base": "sr-x4", "claim": {"ours": "direct-rcan", "rival": "map9"}})
    with pytest.raises(UserError, match=r"recipe: missing key claim\.rival"):
        recipe_from_dict({"base": "sr-x4", "claim": {"ours": "direct-rcan"}})


# ------------------------------------------------------------------ recipe YAML without aliases


def test_recipe_yaml_is_read_without_aliases(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("base: sr-x4\nbranches: &b [direct-rcan]\nname: *b\n")
    with pytest.raises(UserError, match=r"recipe .*r\.yaml line 3: invalid YAML: aliases"):
        load_recipe(path)


def test_mapping_init_offshelf_starts_map2_from_the_offshelf_x2_and_map1_from_scratch() -> None:
    recipe = recipe_from_dict({"base": "sr-x4", "mapping_init": "offshelf"})
    assert recipe.init_of(recipe.network("map2")) == "offshelf-x2"
    assert recipe.init_of(recipe.network("map1")) is None  # no ×1 off-the-shelf network
    assert recipe.init_of(recipe.network("specialized-x2")) == "offshelf-x2"
    order = [n.name for n in recipe.with_branches(["map2-offshelf-x2"]).needed_networks()]
    assert order == ["offshelf-x2", "map2"]
    assert recipe_from_dict({"base": "sr-x4"}).init_of(recipe.network("map2")) is None
