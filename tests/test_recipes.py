"""Recipes as data: what a recipe YAML may say, and which combinations are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twostage.cli import main
from twostage.errors import UserError
from twostage.recipes import builtin_recipe, load_recipe, recipe_from_dict


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
    assert rec.train_overrides == ("data.batch_size=4", "data.augment=false")


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


# ------------------------------------------------------------------ recipe YAML without aliases


def test_recipe_yaml_is_read_without_aliases(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("base: sr-x4\nbranches: &b [direct-rcan]\nname: *b\n")
    with pytest.raises(UserError, match=r"recipe .*r\.yaml line 3: invalid YAML: aliases"):
        load_recipe(path)
