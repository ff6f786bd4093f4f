"""Datasets: fake DIV2K/RealSR trees with the real names, pairing, errors, and random_batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from twostage.config import ConfigError, config_from_dict
from twostage.data.datasets import (
    Div2kData,
    Pair,
    PairSet,
    PhotosData,
    SyntheticData,
    div2k,
    open_dataset,
    paired_folders,
    random_batch,
    realsr,
    retarget,
    strip_suffixes,
    synthetic,
)
from twostage.errors import UserError
from twostage.ops.degrade import derive_seed, intermediate
from twostage.ops.imageio import read_image, write_image


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, img: np.ndarray, bit_depth: int = 8) -> None:
    write_image(
        path, img if img.dtype != np.uint8 else img.astype(np.float32) / 255, bit_depth=bit_depth
    )


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("0001x4", "0001"),
        ("Canon_001_LR4", "Canon_001"),
        ("Canon_001_HR", "Canon_001"),
        ("photo_SR", "photo"),
        ("0001x4_SR", "0001"),
        ("img_x2", "img"),
        ("babyx4", "baby"),
        ("x4", "x4"),
        ("_HR", "_HR"),
        ("Nikon_050_LR2", "Nikon_050"),
    ],
)
def test_strip_suffixes(stem: str, expected: str) -> None:
    assert strip_suffixes(stem) == expected


def _fake_div2k(
    root: Path, *, split: str, ids: list[int], track: str = "unknown", scale: int = 4
) -> dict[str, np.ndarray]:
    hrs = {}
    for i in ids:
        hr = _img(8 * scale, 6 * scale, i)
        lr = _img(8, 6, 1000 + i)
        _save(root / f"DIV2K_{split}_HR" / f"{i:04d}.png", hr)
        _save(root / f"DIV2K_{split}_LR_{track}" / f"X{scale}" / f"{i:04d}x{scale}.png", lr)
        hrs[f"{i:04d}"] = (lr, hr)
    return hrs


def test_div2k_pairs_by_id(tmp_path: Path) -> None:
    truth = _fake_div2k(tmp_path, split="train", ids=[1, 2, 800])
    _fake_div2k(tmp_path, split="valid", ids=[801, 900], track="bicubic")
    ds = div2k(tmp_path, split="train", track="unknown", scale=4)
    assert ds.names == ["0001", "0002", "0800"] and ds.scale == 4
    for p in ds:
        lr, hr = truth[p.name]
        assert p.input.dtype == np.uint8
        np.testing.assert_array_equal(p.input, lr)
        np.testing.assert_array_equal(p.target, hr)
    valid = div2k(tmp_path, split="test", track="bicubic", scale=4)  # "test" = valid
    assert valid.names == ["0801", "0900"]
    assert len(div2k(tmp_path, split="train", track="unknown", scale=4, limit=2)) == 2


def test_div2k_missing_partner_names_the_file(tmp_path: Path) -> None:
    _fake_div2k(tmp_path, split="train", ids=[1, 2])
    (tmp_path / "DIV2K_train_LR_unknown" / "X4" / "0002x4.png").unlink()
    with pytest.raises(UserError, match=r"DIV2K_train_HR/0002\.png"):
        div2k(tmp_path, split="train", track="unknown", scale=4)


def test_div2k_wrong_size_names_both_files(tmp_path: Path) -> None:
    _fake_div2k(tmp_path, split="train", ids=[3])
    _save(tmp_path / "DIV2K_train_HR" / "0003.png", _img(30, 24, 0))
    with pytest.raises(UserError) as info:
        div2k(tmp_path, split="train", track="unknown", scale=4)
    msg = str(info.value)
    assert "0003.png" in msg and "0003x4.png" in msg and "32×24" in msg


def test_div2k_rejects_ids_outside_the_split_and_missing_folders(tmp_path: Path) -> None:
    _fake_div2k(tmp_path, split="train", ids=[1])
    _save(tmp_path / "DIV2K_train_HR" / "0850.png", _img(32, 24, 0))
    with pytest.raises(UserError, match=r"0850\.png"):
        div2k(tmp_path, split="train", track="unknown", scale=4)
    with pytest.raises(UserError, match="DIV2K_train_LR_bicubic"):
        div2k(tmp_path, split="train", track="bicubic", scale=4)
    with pytest.raises(UserError, match="track"):
        div2k(tmp_path, split="train", track="mild", scale=4)


def _fake_realsr(root: Path, *, scale: int = 4, n: int = 2, same_size: bool = False) -> None:
    for cam in ("Canon", "Nikon"):
        for split in ("Train", "Test"):
            d = root / cam / split / str(scale)
            for i in range(1, n + 1):
                hr = _img(8 * scale, 5 * scale, i)
                lr = hr if same_size else _img(8, 5, i + 50)
                _save(d / f"{cam}_{i:03d}_HR.png", hr)
                _save(d / f"{cam}_{i:03d}_LR{scale}.png", lr)


def test_realsr_layout(tmp_path: Path) -> None:
    _fake_realsr(tmp_path, n=3)
    both = realsr(tmp_path, camera="both", split="test", scale=4)
    assert sorted(both.names) == [f"{c}_{i:03d}" for c in ("Canon", "Nikon") for i in (1, 2, 3)]
    canon = realsr(tmp_path, camera="Canon", split="train", scale=4)
    assert canon.names == ["Canon_001", "Canon_002", "Canon_003"]
    hr, _ = read_image(tmp_path / "Canon" / "Train" / "4" / "Canon_002_HR.png")
    np.testing.assert_array_equal(canon[1].target, np.round(hr * 255).astype(np.uint8))
    limited = realsr(tmp_path, camera="both", split="train", scale=4, limit=2)
    assert sorted(limited.names) == ["Canon_001", "Nikon_001"]  # a limit takes both cameras
    with pytest.raises(UserError, match="Test/2"):
        realsr(tmp_path, camera="Canon", split="test", scale=2)


def test_realsr_v1_v2_same_size_is_refused(tmp_path: Path) -> None:
    _fake_realsr(tmp_path, n=1, same_size=True)
    with pytest.raises(UserError, match="V3") as info:
        realsr(tmp_path, camera="Nikon", split="train", scale=4)
    assert "Nikon_001_LR4.png" in str(info.value)


def test_realsr_hr_not_multiple_of_scale_is_mod_cropped(tmp_path: Path) -> None:
    d = tmp_path / "Canon" / "Test" / "3"
    hr = _img(26, 17, 1)  # 8×5 LR at ×3 needs 24×15; 2 extra rows and columns
    _save(d / "Canon_001_HR.png", hr)
    _save(d / "Canon_001_LR3.png", _img(8, 5, 2))
    ds = realsr(tmp_path, camera="Canon", split="test", scale=3)
    np.testing.assert_array_equal(ds[0].target, hr[:24, :15])


def test_paired_folders_pairs_by_stem(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _save(tmp_path / "lr" / f"{name}x2.png", _img(4, 6, ord(name)))
        _save(tmp_path / "hr" / f"{name}_HR.png", _img(8, 12, ord(name) + 1))
    ds = paired_folders(tmp_path / "lr", tmp_path / "hr", scale=2)
    assert ds.names == ["a", "b"]
    np.testing.assert_array_equal(ds[1].input, _img(4, 6, ord("b")))
    _save(tmp_path / "lr" / "cx2.png", _img(4, 6, 0))
    with pytest.raises(UserError, match=r"cx2\.png"):
        paired_folders(tmp_path / "lr", tmp_path / "hr", scale=2)
    _save(tmp_path / "hr" / "c.png", _img(10, 12, 0))
    with pytest.raises(UserError, match=r"pair c: .*c\.png is 10×12 .*cx2\.png is 4×6"):
        paired_folders(tmp_path / "lr", tmp_path / "hr", scale=2)


def test_sixteen_bit_images_stay_float(tmp_path: Path) -> None:
    ramp = (np.arange(4 * 6 * 3).reshape(4, 6, 3) / 71.3).astype(np.float32)
    _save(tmp_path / "lr" / "a.png", ramp, bit_depth=16)
    _save(tmp_path / "hr" / "a.png", _img(4, 6, 0))
    ds = paired_folders(tmp_path / "lr", tmp_path / "hr", scale=1)
    assert ds[0].input.dtype == np.float32 and ds[0].target.dtype == np.uint8
    np.testing.assert_allclose(ds[0].input, ramp, atol=1 / 65535)


def test_pairset_validates_scale() -> None:
    with pytest.raises(UserError, match="pair bad"):
        PairSet([Pair("bad", _img(4, 4, 0), _img(9, 8, 0))], scale=2, name="t")
    with pytest.raises(UserError, match="no images"):
        PairSet([], scale=2, name="t")


def test_synthetic_pairs_and_cache(tmp_path: Path) -> None:
    hrs = [("one", _img(34, 42, 1)), ("two", _img(40, 40, 2))]
    ds = synthetic(
        hrs,
        preset="gaussian-aniso",
        scale=4,
        seed=5,
        target_domain="bicubic-x2",
        cache_dir=tmp_path / "cache",
    )
    assert ds.scale == 2
    first = ds[0]
    assert first.input.shape == (8, 10, 3) and first.target.shape == (16, 20, 3)
    assert first.input.dtype == np.uint8 and first.target.dtype == np.uint8
    expected = intermediate("bicubic-x2", hrs[0][1][:32, :40], seed=derive_seed(5, "one/target"))
    np.testing.assert_array_equal(first.target, np.round(expected * 255).astype(np.uint8))
    cached = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert len(cached) == 4
    again = synthetic(
        hrs,
        preset="gaussian-aniso",
        scale=4,
        seed=5,
        target_domain="bicubic-x2",
        cache_dir=tmp_path / "cache",
    )
    for a, b in zip(ds, again):
        np.testing.assert_array_equal(a.input, b.input)
        np.testing.assert_array_equal(a.target, b.target)
    other = synthetic(hrs, preset="gaussian-aniso", scale=4, seed=6, target_domain="bicubic-x2")
    assert not np.array_equal(other[0].input, first.input)


def test_synthetic_blur_keeps_float_and_caches_16_bit(tmp_path: Path) -> None:
    hrs = [("x", _img(24, 24, 3))]
    ds = synthetic(hrs, preset="blur7", seed=0, target_domain="blur9", cache_dir=tmp_path)
    assert ds.scale == 1 and ds[0].input.dtype == np.float32 and ds[0].target.dtype == np.float32
    again = synthetic(hrs, preset="blur7", seed=0, target_domain="blur9", cache_dir=tmp_path)
    np.testing.assert_allclose(again[0].input, ds[0].input, atol=0.5 / 65535 + 1e-7)
    with pytest.raises(UserError, match="bicubic-x4"):
        synthetic(hrs, preset="blur7", seed=0, target_domain="bicubic-x4")


def test_open_dataset_kinds(tmp_path: Path) -> None:
    _fake_div2k(tmp_path, split="train", ids=[1, 2])
    spec = Div2kData(
        root=tmp_path, split="train", track="unknown", scale=4, target_domain="bicubic-x4"
    )
    ds = open_dataset(spec)
    assert ds.scale == 1 and ds[0].target.shape == ds[0].input.shape
    folder = tmp_path / "DIV2K_train_HR"
    syn = open_dataset(SyntheticData(root=folder, preset="bicubic", scale=2))
    assert syn.scale == 2 and syn.names == ["0001", "0002"]


def test_a_dataset_kind_refuses_a_field_it_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"unknown key data.train.crop .*valid keys"):
        config_from_dict(
            {"data": {"train": {"kind": "synthetic", "root": "x", "preset": "bicubic", "crop": 9}}}
            | _MODEL
        )
    with pytest.raises(ConfigError, match=r"data.train.kind: expected one of samples, photos"):
        config_from_dict({"data": {"train": {"kind": "imagenet"}}} | _MODEL)
    with pytest.raises(ConfigError, match=r"missing key data.train.root"):
        config_from_dict({"data": {"train": {"kind": "realsr", "track": "real"}}} | _MODEL)
    with pytest.raises(ConfigError, match="exactly one input"):
        config_from_dict({"data": {"train": {"kind": "samples"}}} | _MODEL)


_MODEL = {"model": {"preset": "rcan-tiny", "scale": 2}}


def test_retarget_rejects_impossible_domain(tmp_path: Path) -> None:
    ds = PairSet([Pair("a", _img(4, 4, 0), _img(8, 8, 1))], scale=2, name="t")
    with pytest.raises(UserError, match="bicubic-x4"):
        retarget(ds, "bicubic-x4")


# --------------------------------------------------------------------------------------------
# random_batch


def _decimated_set(scale: int = 3) -> PairSet:
    """LR = exact decimation of a known HR: LR[i, j] = HR[s·i, s·j] (alignment is checkable)."""
    pairs = []
    for k, (h, w) in enumerate([(20, 24), (17, 30)]):
        hr = _img(h * scale, w * scale, k)
        pairs.append(Pair(f"im{k}", np.ascontiguousarray(hr[::scale, ::scale]), hr))
    return PairSet(pairs, scale=scale, name="decimated")


@pytest.mark.parametrize("augment", [False, True])
def test_random_batch_patches_are_aligned(augment: bool) -> None:
    ds = _decimated_set(3)
    lr, hr = random_batch(
        ds, batch_size=16, patch_size=8, rng=np.random.default_rng(0), augment=augment
    )
    assert lr.shape == (16, 3, 8, 8) and hr.shape == (16, 3, 24, 24)
    assert lr.dtype == torch.float32 and float(lr.min()) >= 0 and float(lr.max()) <= 1
    # LR = HR[::3, ::3] before augmentation; a flip moves the sampled phase from 0 to s-1 = 2
    for b in range(16):
        target = hr[b]
        ok = any(torch.equal(lr[b], target[:, py::3, px::3]) for py in (0, 2) for px in (0, 2))
        assert ok, f"patch {b} is not aligned"
    if not augment:
        assert torch.equal(lr, hr[:, :, ::3, ::3])


def test_random_batch_finds_the_patch_in_the_image() -> None:
    ds = _decimated_set(2)
    lr, hr = random_batch(
        ds, batch_size=6, patch_size=5, rng=np.random.default_rng(1), augment=False
    )
    for b in range(6):
        found = False
        for p in ds:
            full = torch.from_numpy(p.input).permute(2, 0, 1).float() / 255
            windows = full.unfold(1, 5, 1).unfold(2, 5, 1)  # 3×(H-4)×(W-4)×5×5
            match = (windows == lr[b][:, None, None]).all(dim=(0, 3, 4)).nonzero()
            for y, x in match.tolist():
                hr_full = torch.from_numpy(p.target).permute(2, 0, 1).float() / 255
                found |= torch.equal(hr[b], hr_full[:, 2 * y : 2 * y + 10, 2 * x : 2 * x + 10])
        assert found


def test_random_batch_augments_input_and_target_together() -> None:
    hr = _img(32, 32, 7)
    ds = PairSet([Pair("one", hr, hr)], scale=1, name="same")
    lr, tg = random_batch(ds, batch_size=32, patch_size=32, rng=np.random.default_rng(3))
    assert torch.equal(lr, tg)
    base = torch.from_numpy(hr).permute(2, 0, 1).float() / 255
    variants = {(f, t) for f in range(4) for t in (False, True)}
    seen = set()
    for b in range(32):
        for k in range(4):
            for t in (False, True):
                v = torch.rot90(base, k, dims=(1, 2))
                v = v.transpose(1, 2) if t else v
                if torch.equal(lr[b], v):
                    seen.add((k, t))
    assert len(seen) >= 6 and seen <= variants  # the dihedral group, most of it in 32 draws


def test_random_batch_is_deterministic_per_seed() -> None:
    ds = _decimated_set(2)
    a = random_batch(ds, batch_size=4, patch_size=6, rng=np.random.default_rng(9))
    b = random_batch(ds, batch_size=4, patch_size=6, rng=np.random.default_rng(9))
    c = random_batch(ds, batch_size=4, patch_size=6, rng=np.random.default_rng(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_random_batch_small_image_is_a_clear_error() -> None:
    ds = _decimated_set(2)
    with pytest.raises(UserError, match=r"im\d .*smaller than the 40×40"):
        random_batch(ds, batch_size=2, patch_size=40, rng=np.random.default_rng(0))


def test_random_batch_mixed_float_and_uint8() -> None:
    f = np.full((8, 8, 3), 0.25, dtype=np.float32)
    u = np.full((16, 16, 3), 255, dtype=np.uint8)
    ds = PairSet([Pair("f", f, u)], scale=2, name="mixed")
    lr, hr = random_batch(ds, batch_size=2, patch_size=4, rng=np.random.default_rng(0))
    assert torch.allclose(lr, torch.tensor(0.25)) and torch.allclose(hr, torch.tensor(1.0))


@pytest.mark.parametrize("scale", [0, -1, 10**6])
def test_a_dataset_scale_out_of_range_is_one_line_naming_the_field(
    scale: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from twostage.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        "profile: tiny\nmodel: {preset: rcan-tiny, scale: 2}\n"
        f"data:\n  train: {{kind: samples, split: train, preset: gaussian-aniso, scale: {scale}}}\n"
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "data.train" in err[0] and "scale must be an integer" in err[0]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# photos: a folder of the user's own images


def _photo_tree(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / ("sub" if i % 2 else "") / f"im{i}{'.jpg' if i % 3 else '.png'}"
        write_image(path, _img(24, 20, i))
        paths.append(path)
    return paths


def test_photos_are_listed_recursively_in_path_order_with_every_tenth_for_validation(
    tmp_path: Path,
) -> None:
    _photo_tree(tmp_path, 12)
    spec = PhotosData(roots=(tmp_path,), preset="bicubic", scale=2)
    every = sorted(
        p.relative_to(tmp_path).with_suffix("").as_posix() for p in tmp_path.rglob("*.*")
    )
    names = [n.replace("/", "_") for n in every]
    train, valid = open_dataset(spec), open_dataset(dataclasses.replace(spec, split="valid"))
    assert valid.names == [names[9]]
    assert train.names == names[:9] + names[10:]
    explicit = dataclasses.replace(spec, valid_roots=(tmp_path / "sub",))
    assert open_dataset(explicit).names == names  # with valid_roots, all of roots trains
    assert open_dataset(dataclasses.replace(explicit, split="valid")).names == [
        n[len("sub_") :] for n in names if n.startswith("sub_")
    ]


def test_an_unreadable_photo_stops_the_listing_or_is_named_and_skipped(
    tmp_path: Path, capsys
) -> None:
    _photo_tree(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    spec = PhotosData(roots=(tmp_path,), preset="bicubic", scale=2)
    with pytest.raises(UserError, match=r"broken.png.*skip_unreadable"):
        open_dataset(spec)
    kept = open_dataset(dataclasses.replace(spec, skip_unreadable=True))
    assert "broken" not in kept.names
    assert "skipped: cannot read image" in capsys.readouterr().err
    (tmp_path / "broken.png").unlink()
    with pytest.raises(UserError, match=r"im0.png: 20×24 is over 0.0001 MP"):
        open_dataset(dataclasses.replace(spec, max_pixels=100))


def test_two_photos_with_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", _img(8, 8, 0))
    write_image(tmp_path / "a.jpg", _img(8, 8, 1))
    write_image(tmp_path / "b.png", _img(8, 8, 2))
    with pytest.raises(UserError, match=r"a.jpg and .*a.png both name image 'a'"):
        open_dataset(PhotosData(roots=(tmp_path,), preset="bicubic", scale=2, split="valid"))


def test_lazy_pairs_keep_a_bounded_cache_and_make_the_same_pairs_again(tmp_path: Path) -> None:
    _photo_tree(tmp_path, 6)
    spec = PhotosData(roots=(tmp_path,), preset="bicubic", scale=2, valid_roots=(tmp_path,))
    pairs = open_dataset(spec)
    first = pairs[0].input.copy()
    pairs._pairs._max = 1  # keep one pair only: every access remakes the others
    for i in range(len(pairs)):
        pairs[i]
    assert len(pairs._pairs._cache) == 1
    np.testing.assert_array_equal(pairs[0].input, first)
