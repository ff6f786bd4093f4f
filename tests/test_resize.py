"""MATLAB-bicubic imresize: hand-derived values, a plain-loop reference, MATLAB facts, shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twostage.errors import UserError
from twostage.ops.resize import cubic, imresize


def _keys(t: float) -> float:
    """Keys' cubic, a = -0.5, written out from the formula."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _mirror(j: int, n: int) -> int:
    """1-based index reflected about the borders, edge sample repeated (…2 1 | 1 2 … n | n n-1…)."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def _resize_line(values: list[float], out_len: int, scale: float) -> list[float]:
    """One line, by the definition: kernel stretched by 1/scale when shrinking, weights summed
    over every integer position in the support, normalised, mirrored at the borders."""
    n = len(values)
    stretch = min(scale, 1.0)
    half_width = 2.0 / stretch
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        total = weight_sum = 0.0
        for j in range(math.floor(u - half_width) - 1, math.ceil(u + half_width) + 2):
            w = stretch * _keys(stretch * (u - j))
            total += w * values[_mirror(j, n) - 1]
            weight_sum += w
        out.append(total / weight_sum)
    return out


def _round_half_away(v: float) -> float:
    return min(max(math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1), 0), 255)


def _reference(
    img: np.ndarray, out_h: int, out_w: int, *, integer: bool, scale: float | None = None
) -> np.ndarray:
    """2-D reference: resize the dimension with the smaller scale first, as MATLAB does, and for
    integer images round after each pass (MATLAB's mex keeps the input class). A given scale is
    used as is; with a size, each dimension's scale is out/in."""
    rows = [[float(v) for v in row] for row in img]
    h, w = len(rows), len(rows[0])
    sh, sw = (out_h / h, out_w / w) if scale is None else (scale, scale)
    for dim in [0, 1] if sh <= sw else [1, 0]:
        if dim == 0:
            cols = [[rows[i][j] for i in range(len(rows))] for j in range(len(rows[0]))]
            cols = [_resize_line(c, out_h, sh) for c in cols]
            rows = [[cols[j][i] for j in range(len(cols))] for i in range(out_h)]
        else:
            rows = [_resize_line(r, out_w, sw) for r in rows]
        if integer:
            rows = [[_round_half_away(v) for v in r] for r in rows]
    return np.array(rows)


def test_cubic_kernel_values():
    # Keys (a = -0.5) at a few points, by hand: 1.5/8 - 2.5/4 + 1 and -27/16 + 45/8 - 6 + 2.
    got = cubic(np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5]))
    np.testing.assert_array_equal(got, [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625])


def test_hand_derived_half_downscale():
    # Row [1, 2, 3, 4] at scale 1/2. Output 1 samples u = 2 + 0.5·(1 - 2) = 1.5 with the kernel
    # stretched to width 8: taps j = -2..5 at distances 3.5..-3.5, halved for the kernel:
    # cubic(1.75, 1.25, 0.75, 0.25) = -0.0234375, -0.0703125, 0.2265625, 0.8671875 (symmetric),
    # weights sum to 2. Mirrored taps -2..5 → samples 3, 2, 1, 1, 2, 3, 4, 4:
    # (-0.0234375·3 - 0.0703125·2 + 0.2265625·1 + 0.8671875·1 + 0.8671875·2 + 0.2265625·3
    #  - 0.0703125·4 - 0.0234375·4) / 2 = 2.921875 / 2 = 1.4609375; output 2 by symmetry is
    # 5 - 1.4609375 = 3.5390625.
    img = np.tile(np.array([1.0, 2.0, 3.0, 4.0]), (4, 1))
    out = imresize(img, 0.5)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[1.4609375, 3.5390625]] * 2, rtol=0, atol=1e-12)


def test_matlab_published_upscale():
    # MATLAB: imresize([0 0 1 1 0], [1 10]) printed (4 decimals) on Stack Overflow q. 17380407:
    # 0 -0.0234 -0.0703 0.2031 0.7969 1.0938 1.0938 0.7969 0.2031 ... The 10th value depends on
    # the border rule: that 2013 MATLAB clamped (-0.0703); current MATLAB mirrors (symmetric
    # padding, "aux = [1:n, n:-1:1]"), which gives -0.0703125 - 0.0234375 = -0.09375.
    out = imresize(np.array([[0.0, 0.0, 1.0, 1.0, 0.0]]), size=(1, 10))[0]
    matlab = [0, -0.0234, -0.0703, 0.2031, 0.7969, 1.0938, 1.0938, 0.7969, 0.2031]
    np.testing.assert_allclose(out[:9], matlab, atol=5e-5)
    assert out[9] == pytest.approx(-0.09375, abs=1e-12)


@pytest.mark.parametrize(
    ("shape", "scale", "size"),
    [
        ((9, 11), 0.5, None),
        ((13, 10), 0.25, None),
        ((10, 12), 1 / 3, None),
        ((7, 9), 0.37, None),
        ((5, 6), 2.0, None),
        ((4, 5), 3.0, None),
        ((6, 7), 1.7, None),
        ((10, 7), None, (5, 20)),  # rows shrink, columns grow: rows first
        ((8, 12), None, (11, 5)),  # columns shrink more: columns first
        ((3, 3), None, (1, 1)),
    ],
)
def test_matches_loop_reference_float(shape, scale, size):
    img = np.random.default_rng(1).random(shape)
    out = imresize(img, scale, size=size)
    out_h, out_w = out.shape
    if scale is not None:
        assert (out_h, out_w) == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
    ref = _reference(img, out_h, out_w, integer=False, scale=scale)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(5, 20), (11, 5), (4, 3)])
def test_uint8_rounds_after_each_pass_in_matlab_order(size):
    img = np.random.default_rng(2).integers(0, 256, (10, 9), dtype=np.uint8)
    out = imresize(img, size=size)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _reference(img, *size, integer=True))


def test_uint8_pass_order_matters():
    # The wrong order (columns first when rows shrink more) differs somewhere on random data,
    # so the order test above can fail.
    img = np.random.default_rng(3).integers(0, 256, (16, 16), dtype=np.uint8)
    out = imresize(img, size=(4, 12)).astype(np.float64)
    cols_first = np.array(
        [
            [_round_half_away(v) for v in _resize_line([float(x) for x in r], 12, 12 / 16)]
            for r in img
        ]
    )
    wrong = np.array(
        [
            [_round_half_away(v) for v in _resize_line(list(cols_first[:, j]), 4, 4 / 16)]
            for j in range(12)
        ]
    ).T
    assert not np.array_equal(out, wrong)


def test_identity_at_scale_one():
    rng = np.random.default_rng(4)
    img = rng.random((7, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(imresize(img, 1.0), img)
    u8 = rng.integers(0, 256, (7, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(u8, size=(7, 8)), u8)
    t = torch.from_numpy(img).permute(2, 0, 1)
    assert torch.equal(imresize(t, 1.0), t)


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((7, 9), 0.5, (4, 5)),
        ((10, 10), 1 / 3, (4, 4)),
        ((17, 33), 0.25, (5, 9)),
        ((5, 3), 4, (20, 12)),
        ((6, 6), 0.5, (3, 3)),
    ],
)
def test_output_size_is_ceil(shape, scale, expected):
    assert imresize(np.zeros(shape), scale).shape == expected
    assert tuple(imresize(torch.zeros(2, *shape), scale).shape) == (2, *expected)


def test_x2_down_shape_and_dtypes():
    img = np.random.default_rng(5).random((32, 24, 3)).astype(np.float32)
    out = imresize(img, 0.5)
    assert out.shape == (16, 12, 3) and out.dtype == np.float32
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    tout = imresize(t, 0.5)
    assert tout.shape == (1, 3, 16, 12) and tout.dtype == torch.float32
    assert tout.device == t.device


def test_constant_image_stays_constant():
    for scale in (0.25, 0.37, 1 / 3, 2.0, 3.5):
        out = imresize(np.full((9, 11, 3), 0.3), scale)
        np.testing.assert_allclose(out, 0.3, rtol=0, atol=1e-14)
        out8 = imresize(np.full((9, 11), 77, dtype=np.uint8), scale)
        assert (out8 == 77).all()


def test_batch_equals_loop():
    rng = np.random.default_rng(6)
    t = torch.from_numpy(rng.random((2, 3, 10, 13)))
    batched = imresize(t, 0.5)
    for n in range(2):
        for c in range(3):
            single = imresize(t[n, c], 0.5)
            torch.testing.assert_close(batched[n, c], single, rtol=0, atol=0)
    arr = rng.random((10, 13, 3))
    per_channel = np.stack([imresize(arr[..., c], 0.25) for c in range(3)], axis=-1)
    np.testing.assert_array_equal(imresize(arr, 0.25), per_channel)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2.0, 4.0])
def test_numpy_and_torch_agree(scale):
    img = np.random.default_rng(7).random((17, 12, 3))
    ref = imresize(img, scale)
    t64 = imresize(torch.from_numpy(img).permute(2, 0, 1), scale).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(t64, ref, rtol=0, atol=1e-12)
    t32 = imresize(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1), scale)
    np.testing.assert_allclose(t32.permute(1, 2, 0).numpy(), ref, rtol=0, atol=1e-5)


def test_torch_uint8_matches_numpy_uint8():
    img = np.random.default_rng(8).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    ref = imresize(img, 0.5)
    got = imresize(torch.from_numpy(img).permute(2, 0, 1), 0.5).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, ref)


def test_torch_is_differentiable():
    t = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    imresize(t, 0.5).sum().backward()
    assert t.grad is not None
    # Every weight row sums to one, so d(sum of outputs)/d(input) sums to the output count.
    assert t.grad.sum().item() == pytest.approx(16.0, abs=1e-9)


def test_bad_arguments():
    img = np.zeros((4, 4))
    with pytest.raises(UserError, match="exactly one"):
        imresize(img)
    with pytest.raises(UserError, match="exactly one"):
        imresize(img, 0.5, size=(2, 2))
    with pytest.raises(UserError, match="positive"):
        imresize(img, 0.0)
    with pytest.raises(UserError, match="positive"):
        imresize(img, size=(0, 2))
