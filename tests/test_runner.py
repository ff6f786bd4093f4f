"""recipes.py and the runner package: recipes as data, the paper recipes' hyper-parameters, mapping
targets, and an end-to-end run of sr-x4, bicubic-x4 and deblur with the tiny profile (cache
reuse, bundles)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from twostage.config import PROFILES
from twostage.data.made import Source
from twostage.data.specs import SamplesData
from twostage.data.splits import Split, plan_data
from twostage.errors import UserError
from twostage.recipes import (
    Claim,
    bicubic_x4,
    deblur,
    demo_recipe,
    load_recipe,
    recipe_from_dict,
    sr_x4,
)
from twostage.report import describe
from twostage.runner import run_recipe
from twostage.runner.configs import train_config
from twostage.runner.networks import Run

ROOT = Path(__file__).resolve().parents[1]
SR_BRANCHES = [
    "direct-edsr",
    "direct-rcan",
    "map1-offshelf-x2x2",
    "map1-offshelf-x4",
    "map1-specialized-x4",
    "map2-offshelf-x2",
    "map2-specialized-x2",
]


def _names(nets) -> list[str]:
    return [n.name for n in nets]


def test_sr_x4_has_every_branch_of_fig3_and_shares_offshelf_x2():
    recipe = sr_x4()
    assert [b.name for b in recipe.branches] == SR_BRANCHES
    needed = _names(recipe.needed_networks())
    assert sorted(needed) == sorted(
        [
            "direct-edsr",
            "direct-rcan",
            "map1",
            "map2",
            "offshelf-x2",
            "offshelf-x4",
            "specialized-x4",
            "specialized-x2",
        ]
    )
    assert needed.count("offshelf-x2") == 1  # trained once, used by three branches
    # dependencies come first: the specialized ×2 needs map2 (its inputs) and offshelf-x2 (init)
    assert needed.index("map2") < needed.index("specialized-x2")
    assert needed.index("offshelf-x2") < needed.index("specialized-x2")


def test_demo_branches_need_four_networks_and_scratch_drops_the_init():
    demo = demo_recipe()
    assert sorted(_names(demo.needed_networks())) == sorted(
        ["direct-rcan", "map2", "offshelf-x2", "specialized-x2"]
    )
    only = sr_x4().with_branches(["map2-specialized-x2"])
    assert sorted(_names(only.needed_networks())) == ["map2", "offshelf-x2", "specialized-x2"]
    scratch = dataclasses.replace(only, specialized_init="scratch")
    assert sorted(_names(scratch.needed_networks())) == ["map2", "specialized-x2"]


def test_table_recipes():
    assert [b.name for b in bicubic_x4().branches] == [
        "offshelf-x4",
        "offshelf-x2x2",
        "specialized-x2x2",
    ]
    x2x2 = next(b for b in bicubic_x4().branches if b.name == "offshelf-x2x2")
    assert (x2x2.stage1, x2x2.stage2, x2x2.stage2_repeats) == (None, "offshelf-x2", 2)
    d = deblur()
    assert [b.name for b in d.branches] == [
        "deblur-direct",
        "deblur-mapped",
        "deblur-specialized",
        "deblur-reference",
    ]
    assert d.scale == 1 and d.degradations == ("blur7", "blur11")
    assert all(n.scale == 1 for n in d.networks)


@pytest.mark.parametrize("name", ["sr-x4", "bicubic-x4", "deblur"])
def test_paper_recipes_match_design_section_4(name):
    """configs/paper/*.yaml: the paper's networks and training hyper-parameters (docs/design.md)."""
    from twostage.models import preset_spec

    recipe = load_recipe(ROOT / "configs" / "paper" / f"{name}.yaml")
    assert recipe.base == name
    assert [b.name for b in recipe.branches] == [b.name for b in load_recipe(name).branches]
    for net in recipe.needed_networks():
        for profile in ("paper", "cpu"):  # the YAML pins them whatever the profile
            cfg = train_config(
                recipe,
                PROFILES[profile],
                net,
                seed=0,
                device="cpu",
                init=None,
                label=net.name,
                train_data=SamplesData(preset="bicubic"),
            )
            assert cfg.data.batch_size == 8
            assert cfg.data.patch_size == 96
            assert cfg.data.augment is True
            assert cfg.optim.betas == (0.9, 0.99)
            assert cfg.optim.eps == 1e-8
            assert cfg.optim.lr == 1e-4
            assert cfg.optim.lr_step == 50_000 and cfg.optim.lr_gamma == 0.5
            assert cfg.optim.iterations == 150_000
            assert cfg.optim.loss == "l1"
            spec = preset_spec(cfg.model.preset, scale=net.scale)
            assert cfg.model.scale == net.scale
            if net.arch == "rcan":
                assert (spec.n_resgroups, spec.n_resblocks, spec.n_feats) == (10, 8, 64)
            else:
                assert (spec.n_resblocks, spec.n_feats) == (8, 64)


def test_recipe_yaml_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="unknown key"):
        recipe_from_dict({"base": "sr-x4", "branchez": []})
    with pytest.raises(UserError, match="base must be"):
        recipe_from_dict({"base": "x8"})
    with pytest.raises(UserError, match="unknown branch"):
        recipe_from_dict({"base": "sr-x4", "branches": ["map3"]})
    with pytest.raises(UserError, match="domain"):
        recipe_from_dict({"base": "sr-x4", "domain": "blur9"})
    with pytest.raises(UserError, match="unknown recipe"):
        load_recipe("sr-x8")
    bad = tmp_path / "r.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_recipe(bad)


def test_user_recipe_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nbase: sr-x4\ndegradations: [camera]\n"
        "test_degradations: [camera, gaussian-aniso]\n"
        "branches: [map2-specialized-x2, direct-rcan]\n"
        "specialized_init: scratch\ntrain: {optim: {lr: 3.0e-4}}\n"
    )
    recipe = load_recipe(path)
    assert recipe.name == "mine" and recipe.degradations == ("camera",)
    assert [b.name for b in recipe.branches] == ["direct-rcan", "map2-specialized-x2"]
    net = recipe.network("map2")
    cfg = train_config(
        recipe,
        PROFILES["tiny"],
        net,
        seed=3,
        device="cpu",
        init=None,
        label="map2",
        train_data=SamplesData(preset="bicubic"),
    )
    assert cfg.optim.lr == 3e-4 and cfg.run.seed == 3 and cfg.model.preset == "rcan-tiny"


def test_map2_target_is_matlab_bicubic_half_of_hr():
    """For map2 an LR image h×w is paired with MATLAB-bicubic ↓2 of its HR, of size 2h×2w."""
    from twostage.ops.resize import imresize

    rng = np.random.default_rng(0)
    hr = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
    split = Split("test", {"kind": "samples", "scale": 4}, [Source("a", lambda: hr)])
    recipe = sr_x4()
    run = Run(recipe, PROFILES["tiny"], Path("unused"), "cpu", True, split, [], lambda *_: None)
    pairs = run.pairs(recipe.network("map2"), "gaussian-aniso", split, "train")
    pair = pairs[0]
    assert pair.input.shape[:2] == (12, 10)
    assert pair.target.shape[:2] == (24, 20)
    expected = imresize(hr.astype(np.float64) / 255.0, 0.5)
    expected = np.clip(np.floor(expected * 255 + 0.5), 0, 255)
    target = np.asarray(pair.target, dtype=np.float64)
    if pair.target.dtype != np.uint8:
        target = np.floor(target * 255 + 0.5)
    np.testing.assert_array_equal(target, expected)
    # map1's target is ↓4, the size of the input
    m1 = run.pairs(recipe.network("map1"), "gaussian-aniso", split, "train")[0]
    assert m1.target.shape == m1.input.shape


# ----------------------------------------------------------------------------- end to end


def _count_training(monkeypatch) -> list[str]:
    import twostage.train as train_module

    calls: list[str] = []
    real = train_module.train

    def counting(cfg, **kwargs):
        calls.append(cfg.name)
        return real(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", counting)
    return calls


def _check_report(out: Path, results: dict, branches: list[str]) -> None:
    for name in ("results.json", "results.csv", "results.md", "results.tex", "index.html"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    for key in (
        "recipe",
        "profile",
        "seed",
        "in_distribution",
        "test_sets",
        "branches",
        "rows",
        "means",
    ):
        assert key in saved
    assert saved["branches"] == ["interp-bicubic", *branches]
    for test in saved["test_sets"]:
        got = {m["branch"] for m in saved["means"] if m["test_set"] == test}
        assert got == set(saved["branches"]), test
        md = (out / "results.md").read_text()
        assert all(f"`{b}`" in md for b in saved["branches"])
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(saved["rows"]) + len(saved["means"])
    assert all(np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in saved["rows"])
    figures = list((out / "figures").glob("compare-*.png"))
    assert len(figures) == len(saved["test_sets"])
    curves = list((out / "figures").glob("curves-*.png"))
    assert len(curves) == len(list((out / "networks").glob("*/metrics.csv")))
    # the viewer's images: GT, input, interp-bicubic and every branch, for every test image
    for row in saved["rows"]:
        folder = out / "figures" / "views" / row["test_set"] / row["image"]
        assert (folder / f"{row['branch']}.webp").is_file(), (folder, row["branch"])
        assert {"GT.webp", "input.webp"} <= {p.name for p in folder.iterdir()}


def test_sr_x4_end_to_end_caches_and_restores(tmp_path, monkeypatch, capsys, tiny_profile):
    from twostage.cli import main
    from twostage.ops.imageio import read_image, write_image

    calls = _count_training(monkeypatch)
    out = tmp_path / "run"
    results = run_recipe("sr-x4", data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    _check_report(out, results, SR_BRANCHES)
    assert results["test_sets"] == ["samples-gaussian-aniso", "samples-camera"]
    assert results["in_distribution"] == "samples-gaussian-aniso"
    assert len(calls) == 8  # every network once: offshelf-x2 is shared by three branches
    for branch in SR_BRANCHES:
        assert (out / "bundles" / f"{branch}.safetensors").is_file()
    mapped = sorted(p.name for p in (out / "mapped").iterdir())
    assert len(mapped) == 2 and all(m.startswith(("map1-", "map2-")) for m in mapped)
    for folder in (out / "mapped").iterdir():
        assert {p.name for p in folder.iterdir()} == {
            "train",
            "samples-gaussian-aniso",
            "samples-camera",
        }
    weights = {p: p.stat().st_mtime_ns for p in (out / "networks").glob("*/model.safetensors")}
    assert len(weights) == 8

    # A second run reuses every network and mapped set: nothing is trained.
    calls.clear()
    again = run_recipe("sr-x4", data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    assert calls == [] and again["networks_trained"] == []
    assert {
        p: p.stat().st_mtime_ns for p in (out / "networks").glob("*/model.safetensors")
    } == weights
    first = {(r["branch"], r["test_set"], r["image"]): r["psnr"] for r in results["rows"]}
    second = {(r["branch"], r["test_set"], r["image"]): r["psnr"] for r in again["rows"]}
    assert first == pytest.approx(second)

    # The bundle restores an image through the CLI, at ×4.
    lr = tmp_path / "in" / "lr.png"
    write_image(lr, np.random.default_rng(0).random((10, 12, 3)).astype(np.float32))
    code = main(
        [
            "restore",
            "--model",
            str(out / "bundles" / "map2-specialized-x2.safetensors"),
            str(lr),
            "--out",
            str(tmp_path / "restored"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    (restored,) = list((tmp_path / "restored").iterdir())
    assert read_image(restored)[0].shape == (40, 48, 3)


def test_bicubic_x4_and_deblur_end_to_end(tmp_path, monkeypatch, tiny_profile):
    calls = _count_training(monkeypatch)
    out = tmp_path / "bic"
    results = run_recipe(
        "bicubic-x4", data={}, profile=tiny_profile, out=out, device="cpu", quiet=True
    )
    _check_report(out, results, ["offshelf-x4", "offshelf-x2x2", "specialized-x2x2"])
    assert results["test_sets"] == ["samples-bicubic"]
    assert len(calls) == 3
    assert (out / "bundles" / "specialized-x2x2.safetensors").is_file()

    calls.clear()
    out = tmp_path / "deblur"
    results = run_recipe("deblur", data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    branches = ["deblur-direct", "deblur-mapped", "deblur-specialized", "deblur-reference"]
    _check_report(out, results, branches)
    assert results["test_sets"] == ["samples-blur7", "samples-blur11"]
    assert len(calls) == 5  # the 9×9 deblurrer once; a mapping and a specialized per kernel
    bundles = sorted(p.name for p in (out / "bundles").iterdir())
    assert bundles == sorted(
        [
            "deblur-direct.safetensors",
            "deblur-reference.safetensors",
            "deblur-mapped-blur7.safetensors",
            "deblur-mapped-blur11.safetensors",
            "deblur-specialized-blur7.safetensors",
            "deblur-specialized-blur11.safetensors",
        ]
    )
    # deblur-reference sees the 9×9 input: the same numbers on both test sets
    ref = {r["test_set"]: r["psnr"] for r in results["rows"] if r["branch"] == "deblur-reference"}
    assert ref["samples-blur7"] == pytest.approx(ref["samples-blur11"])
    # mapped blur sets are 16-bit PNGs (40 dB BSNR noise is finer than an 8-bit step)
    png = next((out / "mapped").glob("map-blur7-*/train/*.png")).read_bytes()
    assert png[12:16] == b"IHDR" and png[24] == 16  # the IHDR bit depth


def test_interrupted_network_resumes(tmp_path, monkeypatch, tiny_profile):
    """A network folder with a checkpoint but no model.safetensors is resumed, not restarted."""
    import twostage.train as train_module

    out = tmp_path / "run"
    recipe = sr_x4().with_branches(["direct-rcan"])
    profile = dataclasses.replace(tiny_profile, iterations=4)
    run_recipe(recipe, data={}, profile=profile, out=out, device="cpu", quiet=True)
    (folder,) = list((out / "networks").iterdir())
    assert train_module.latest_checkpoint(folder) is not None
    (folder / "model.safetensors").unlink()
    seen: list[bool] = []
    real = train_module.train

    def spy(cfg, **kwargs):
        seen.append(kwargs["resume"])
        return real(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", spy)
    run_recipe(recipe, data={}, profile=profile, out=out, device="cpu", quiet=True)
    assert seen == [True]
    assert (folder / "model.safetensors").is_file()


def test_unknown_data_name_is_an_error(tmp_path, tiny_profile):
    with pytest.raises(UserError, match="unknown data name"):
        run_recipe(
            "sr-x4",
            data={"imagenet": Path("x")},
            profile=tiny_profile,
            out=tmp_path,
            device="cpu",
            quiet=True,
        )


def test_given_offshelf_checkpoint_is_used_not_trained(tmp_path, monkeypatch, tiny_profile):
    """`--offshelf offshelf-x2=FILE`: an official-layout EDSR ×2 (not the profile's RCAN) is
    loaded instead of trained; the specialized ×2 fine-tunes that very architecture from it."""
    import torch

    from twostage.models import ModelSpec, build_model
    from twostage.models.checkpoints import load_model, save_official
    from twostage.pipeline import load_pipeline

    torch.manual_seed(3)
    spec = ModelSpec(arch="edsr", scale=2, n_feats=8, n_resblocks=1)
    given = build_model(spec)
    path = tmp_path / "EDSR_x2.pt"
    save_official(path, given)

    calls = _count_training(monkeypatch)
    out = tmp_path / "run"
    run_recipe(
        "bicubic-x4",
        data={},
        profile=tiny_profile,
        out=out,
        device="cpu",
        quiet=True,
        branches=["offshelf-x2x2", "specialized-x2x2"],
        offshelf={"offshelf-x2": path},
    )
    assert calls == ["specialized-x2x2-bicubic"]  # offshelf-x2 was given, not trained
    x2x2 = load_pipeline(out / "bundles" / "offshelf-x2x2.safetensors")
    for key, value in given.state_dict().items():
        assert torch.equal(x2x2.stage2.state_dict()[key], value), key
    specialized = load_model(
        next((out / "networks").glob("specialized-x2x2-*")) / "model.safetensors"
    )
    assert specialized.spec == spec  # the given network's architecture, fine-tuned

    with pytest.raises(UserError, match="no off-the-shelf network 'map2'"):
        run_recipe(
            "bicubic-x4",
            data={},
            profile=tiny_profile,
            out=out,
            device="cpu",
            quiet=True,
            offshelf={"map2": path},
        )
    with pytest.raises(UserError, match=r"checkpoint is ×2, offshelf-x4 must be ×4"):
        run_recipe(
            "bicubic-x4",
            data={},
            profile=tiny_profile,
            out=tmp_path / "bad",
            device="cpu",
            quiet=True,
            branches=["offshelf-x4"],
            offshelf={"offshelf-x4": path},
        )


def test_train_crop_applies_to_the_training_images_only(tiny_profile):
    """Profile.train_crop: training photos centre-cropped to it, test photos to hr_crop."""
    from twostage.data.samples import load_samples

    profile = dataclasses.replace(
        tiny_profile, hr_crop=32, train_crop=60, train_images=3, test_images=2
    )
    train, tests = plan_data(sr_x4(), [], profile, sr=True)
    raw_train = dict(load_samples("train"))
    raw_test = dict(load_samples("test") + load_samples("detail"))
    for name, img in zip(train.names, train.hr):
        h, w = raw_train[name].shape[:2]
        assert img.shape[:2] == (min(h, 60) // 4 * 4, min(w, 60) // 4 * 4), name
        top, left = (h - min(h, 60)) // 2, (w - min(w, 60)) // 2
        assert np.array_equal(
            img, raw_train[name][top : top + img.shape[0], left : left + img.shape[1]]
        )
    for test in tests:
        for name, img in zip(test.split.names, test.split.hr):
            h, w = raw_test[name].shape[:2]
            assert img.shape[:2] == (32, 32), name
            top, left = (h - 32) // 2, (w - 32) // 2
            assert np.array_equal(img, raw_test[name][top : top + 32, left : left + 32])


def test_detail_sets_test_on_the_detail_images_never_trained_on(tmp_path, tiny_profile):
    """`detail_sets: true`: every test degradation also on the fine-detail images
    (`detail-*`), after the other test sets, whatever the data; off by default."""
    from twostage.data.samples import load_samples
    from twostage.ops.imageio import write_image

    profile = dataclasses.replace(tiny_profile, train_images=None, test_images=None)
    recipe = recipe_from_dict({"base": "sr-x4", "detail_sets": True})
    assert recipe.detail_sets and not sr_x4().detail_sets
    train, tests = plan_data(recipe, {}, profile, sr=True)
    assert [t.name for t in tests] == [
        "samples-gaussian-aniso",
        "samples-camera",
        "detail-gaussian-aniso",
        "detail-camera",
    ]
    detail = [n for n, _ in load_samples("detail")]
    assert tests[2].split.names == detail and tests[2].degradation == "gaussian-aniso"
    assert not set(train.names) & set(detail)
    assert [t.name for t in plan_data(sr_x4(), {}, profile, sr=True)[1]] == [
        "samples-gaussian-aniso",
        "samples-camera",
    ]
    photos = tmp_path / "photos"
    for i in range(2):
        write_image(photos / f"p{i}.png", np.full((40, 40, 3), i / 2, dtype=np.float32))
    _, tests = plan_data(recipe, [("photos", photos)], profile, sr=True)
    assert [t.name for t in tests][-2:] == ["detail-gaussian-aniso", "detail-camera"]


def test_the_demo_reading_says_who_won_and_by_how_much():
    """describe(): the plain-language paragraph follows the numbers, whichever way they go."""

    def means(test, **psnr):
        return [
            {"branch": b.replace("_", "-"), "test_set": test, "psnr": v, "ssim": 0.5}
            for b, v in psnr.items()
        ]

    results = {
        "test_sets": ["in", "out"],
        "in_distribution": "in",
        "branches": ["interp-bicubic", "direct-rcan", "map2-specialized-x2"],
        "means": means("in", interp_bicubic=25.0, direct_rcan=25.3, map2_specialized_x2=25.9)
        + means("out", interp_bicubic=24.0, direct_rcan=23.0, map2_specialized_x2=23.5),
    }
    text = describe(results, Claim(ours="map2-specialized-x2", rival="direct-rcan"))
    assert (
        "On in (the training degradation) the best branch is map2-specialized-x2 at "
        "25.90 dB, 0.90 dB above bicubic interpolation" in text
    )
    assert "direct-rcan is less than 0.5 dB above it" in text
    assert "0.50 dB below bicubic interpolation; no learned branch beats bicubic here" in text
    assert "+0.60 dB on in, +0.50 dB on out, so the claim holds on every test set" in text


@pytest.mark.parametrize("degradation", ["gaussian-aniso", "realistic"])
def test_a_network_retrains_bit_exactly_from_its_own_config_yaml(
    tmp_path, degradation, tiny_profile
):
    """networks/<name>/config.yaml names the real data (kind samples: the embedded photos, the
    crop, the degradation or the mapped set it reads), so `twostage train` repeats the run;
    for a per-patch family (realistic) that includes the patches degraded afresh each batch
    and the specialized stage's K fixed draws per image."""
    from safetensors.torch import load_file

    from twostage.cli import main
    from twostage.config import load_config
    from twostage.runner import FAMILY_INSTANCES

    out = tmp_path / "run"
    recipe = sr_x4(degradation=degradation).with_branches(["map2-specialized-x2"])
    run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    folders = {p.name.rsplit("-", 1)[0]: p for p in (out / "networks").iterdir()}
    assert sorted(folders) == [
        f"map2-{degradation}",
        "offshelf-x2",
        f"specialized-x2-{degradation}",
    ]
    family = degradation == "realistic"
    assert (
        load_config(folders[f"map2-{degradation}"] / "config.yaml").data.train.per_patch is family
    )
    k = load_config(folders[f"specialized-x2-{degradation}"] / "config.yaml").data.train.instances
    assert k == (FAMILY_INSTANCES if family else 1)
    for name, folder in folders.items():
        cfg = load_config(folder / "config.yaml")
        assert cfg.data.train.kind == "samples" and cfg.data.train.crop == tiny_profile.hr_crop
        again = tmp_path / "again" / name
        assert main(["train", str(folder / "config.yaml"), "--out", str(again), "--quiet"]) == 0
        want = load_file(str(folder / "model.safetensors"))
        got = load_file(str(again / "model.safetensors"))
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), name
    special = load_config(folders[f"specialized-x2-{degradation}"] / "config.yaml")
    assert Path(special.data.train.input_dir).parent.parent == out / "mapped"


def test_second_run_into_a_locked_out_is_refused_naming_the_holder(tmp_path, capsys):
    """Two `twostage run`s into one --out would train the same network folders at once: the
    second is refused (exit 2, one line) naming the holder the lock file records, and told
    what `run` offers (run again), not a flag it lacks (--resume)."""
    import fcntl

    from twostage.cli import main

    out = tmp_path / "run"
    out.mkdir()
    with open(out / "twostage.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("twostage pid 4242 on otherhost since 2025-01-01 10:00:00 UTC\n")
        held.flush()
        args = ["run", "sr-x4", "--profile", "tiny", "--branches", "direct-rcan"]
        code = main([*args, "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "pid 4242 on otherhost since 2025-01-01" in err and "run again" in err
    assert "--resume" not in err
    assert sorted(p.name for p in out.iterdir()) == ["twostage.lock"]


def test_a_corrupted_mapped_set_marker_is_recomputed_not_a_traceback(tmp_path, tiny_profile):
    out = tmp_path / "run"
    recipe = sr_x4().with_branches(["map2-offshelf-x2"])
    first = run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    markers = sorted(out.glob("mapped/*/*/complete.json"))
    assert len(markers) == 2
    images = {p: p.read_bytes() for p in out.glob("mapped/*/*/*.png")}
    for marker, junk in zip(markers, [b"\xff\xfe{not json", b"[1, 2]"]):
        marker.write_bytes(junk)
    again = run_recipe(recipe, data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    assert again["networks_trained"] == []
    assert [r["psnr"] for r in again["rows"]] == pytest.approx([r["psnr"] for r in first["rows"]])
    assert all(json.loads(m.read_text())["images"] for m in markers)
    assert {p: p.read_bytes() for p in out.glob("mapped/*/*/*.png")} == images


# --------------------------------------- off-the-shelf files are checked before anything trains


def test_offshelf_files_are_all_checked_before_anything_trains(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    import pickle

    bad = tmp_path / "offshelf-x4.pt"
    bad.write_bytes(pickle.dumps(Payload()))
    out = tmp_path / "run"
    with pytest.raises(UserError, match=str(bad.name)):
        run_recipe(
            "sr-x4",
            data={},
            profile="tiny",
            out=out,
            device="cpu",
            quiet=True,
            branches=["map1-offshelf-x4"],
            offshelf={"offshelf-x4": bad},
        )
    assert not marker.exists()
    assert list(out.glob("networks/*/model.safetensors")) == []  # map1 was not trained


def test_a_seed_count_past_the_limit_is_refused_before_anything_is_written(
    tmp_path: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    """`--seeds 99999999999` would train every network that many times: refused at once."""
    out = tmp_path / "run"
    code, err = run_cli(
        "run", "sr-x4", "--profile", "tiny", "--seeds", "99999999999", "--out", str(out)
    )
    assert code == 2 and len(err.splitlines()) == 1 and "--seeds must be from 1 to 100" in err
    assert not out.exists()


def test_run_refuses_an_out_folder_it_did_not_write(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A user's folder holding results.json, index.html or bundles/ is not written over."""
    out = tmp_path / "mine"
    (out / "bundles").mkdir(parents=True)
    for name in ("results.json", "index.html", "bundles/direct-edsr.safetensors"):
        (out / name).write_text("user")
    code, err = run_cli(
        "run", "sr-x4", "--profile", "tiny", "--branches", "direct-edsr", "--out", str(out)
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert "holds files twostage run did not write" in err and str(out) in err
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        ["bundles", "direct-edsr.safetensors", "index.html", "results.json"]
    )
    assert all(p.read_text() == "user" for p in out.rglob("*") if p.is_file())


def test_run_never_writes_through_a_symbolic_link_in_out(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "run"
    (out / "networks").mkdir(parents=True)  # a run's folder (from before the mark)
    (out / "figures").symlink_to(elsewhere)
    code, err = run_cli(
        "run", "sr-x4", "--profile", "tiny", "--branches", "direct-edsr", "--out", str(out)
    )
    assert code == 2 and "figures is a symbolic link" in err and len(err.splitlines()) == 1
    assert list(elsewhere.iterdir()) == []


def test_sr_x2_end_to_end_maps_at_the_input_size_and_restores_at_x2(tmp_path, tiny_profile):
    from twostage.ops.imageio import read_image
    from twostage.pipeline import load_pipeline

    out = tmp_path / "x2"
    results = run_recipe("sr-x2", data={}, profile=tiny_profile, out=out, device="cpu", quiet=True)
    branches = ["direct-edsr", "direct-rcan", "map1-offshelf-x2", "map1-specialized-x2"]
    _check_report(out, results, branches)
    assert results["test_sets"] == ["samples-gaussian-aniso", "samples-camera"]
    # map1's outputs have the degraded input's size (the bicubic ↓2 domain of a ×2 task)
    hr_side = tiny_profile.hr_crop
    (mapped,) = (out / "mapped").iterdir()
    assert mapped.name.startswith("map1-")
    for png in (mapped / "samples-camera").glob("*.png"):
        assert read_image(png)[0].shape[:2] == (hr_side // 2, hr_side // 2)
    pipe = load_pipeline(out / "bundles" / "map1-specialized-x2.safetensors", device="cpu")
    assert pipe.scale == 2 and pipe.stage1_scale == 1
    # the stage-by-stage diagnostics compare map1 with the true bicubic ↓2 of the HR image
    assert results["stages"]["branches"] == ["map1-offshelf-x2", "map1-specialized-x2"]
