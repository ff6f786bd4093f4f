"""The embedded offline data: fixed disjoint split, sizes, determinism, no network, CLI."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from twostage.cli import main
from twostage.data import samples
from twostage.data.samples import SAMPLES, dead_leaves, load_samples, samples_table
from twostage.errors import UserError
from twostage.ops.imageio import read_image


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[tuple[str, np.ndarray]]]:
    return {split: load_samples(split) for split in ("train", "test", "detail")}


def test_split_is_fixed_and_disjoint(loaded) -> None:
    train = [n for n, _ in loaded["train"]]
    test = [n for n, _ in loaded["test"]]
    detail = [n for n, _ in loaded["detail"]]
    assert test == ["astronaut", "chelsea", "coffee"]
    assert detail == ["page", "text", "camera", "brick", "coins"]
    assert not set(train) & set(test) and not set(train) & set(detail)
    assert not set(test) & set(detail)
    assert set(train) | set(test) | set(detail) == {s.name for s in SAMPLES}
    assert sum(n.startswith("deadleaves_") for n in train) == 8
    assert {"rocket", "motorcycle_left", "retina"} <= set(train)


def test_images_match_the_table(loaded) -> None:
    table = {s.name: s for s in SAMPLES}
    for split, items in loaded.items():
        for name, img in items:
            info = table[name]
            assert info.split == split
            assert img.dtype == np.uint8 and img.shape == (info.height, info.width, 3)
            assert not img.flags.writeable  # shared cache: callers must copy to modify


def test_detail_images_are_gray_crops_of_the_wheel_images_as_rgb(loaded) -> None:
    import skimage.data

    for name, img in loaded["detail"]:
        assert max(img.shape[:2]) <= samples.DETAIL_SIDE
        assert (img == img[..., :1]).all(), f"{name}: the three channels differ"
        gray = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        top, left = (gray.shape[0] - h) // 2, (gray.shape[1] - w) // 2
        np.testing.assert_array_equal(img[..., 0], gray[top : top + h, left : left + w])


def test_photos_are_colour(loaded) -> None:
    for name, img in loaded["test"] + loaded["train"]:
        spread = np.abs(img[..., 0].astype(int) - img[..., 1]).mean()
        assert spread > 2, f"{name} looks gray"


def test_dead_leaves_is_deterministic_and_piecewise_constant() -> None:
    a = dead_leaves(64, seed=1)
    np.testing.assert_array_equal(a, dead_leaves(64, seed=1))
    assert not np.array_equal(a, dead_leaves(64, seed=2))
    flat = (a[:, 1:] == a[:, :-1]).all(axis=2).mean()
    assert flat > 0.4  # mostly flat disks ...
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50  # ... of many colours
    assert (a.astype(int).sum(axis=2) > 0).all()  # fully covered: no black canvas shows


def test_loading_needs_no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    samples._load.cache_clear()
    try:
        for split in ("train", "test", "detail"):
            assert load_samples(split)
    finally:
        samples._load.cache_clear()


def test_unknown_split() -> None:
    with pytest.raises(UserError, match="train, test"):
        load_samples("valid")


def test_table_and_cli_listing(capsys) -> None:
    table = samples_table()
    assert main(["data", "samples", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == table.strip()
    for s in SAMPLES:
        line = next(row for row in out.splitlines() if row.startswith(s.name + " "))
        assert s.split in line and f"{s.height}×{s.width}" in line
    assert "astronaut" in out and "512×512" in out and "1411×1411" in out
    assert "detail: 5 gray photos of print and man-made structure" in out


def test_cli_writes_the_images(tmp_path, capsys) -> None:
    assert main(["data", "samples", "--out", str(tmp_path)]) == 0
    assert f"wrote {len(SAMPLES)} image(s)" in capsys.readouterr().out
    img, info = read_image(tmp_path / "test" / "coffee.png")
    ref = dict(load_samples("test"))["coffee"]
    assert info.bit_depth == 8
    np.testing.assert_array_equal(np.round(img * 255).astype(np.uint8), ref)
    assert (tmp_path / "train" / "deadleaves_07.png").is_file()
    assert (tmp_path / "detail" / "page.png").is_file()


def test_cli_never_writes_over_existing_images_or_through_a_linked_folder(tmp_path, capsys) -> None:
    """A user's test/coffee.png stays unless --overwrite; a test/ linked elsewhere is refused
    even with --overwrite; nothing is written when a check fails."""
    out = tmp_path / "out"
    (out / "test").mkdir(parents=True)
    (out / "test" / "coffee.png").write_bytes(b"mine")
    assert main(["data", "samples", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "coffee.png: exists (--overwrite" in err[0]
    assert (out / "test" / "coffee.png").read_bytes() == b"mine"
    assert not (out / "train").exists()
    assert main(["data", "samples", "--out", str(out), "--overwrite"]) == 0
    assert read_image(out / "test" / "coffee.png")[0].shape[2] == 3

    elsewhere, linked = tmp_path / "elsewhere", tmp_path / "linked"
    elsewhere.mkdir()
    linked.mkdir()
    (linked / "test").symlink_to(elsewhere)
    capsys.readouterr()
    assert main(["data", "samples", "--out", str(linked), "--overwrite"]) == 2
    assert "outside it" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
