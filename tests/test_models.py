"""RCAN/EDSR networks: sizes against closed forms, MACs against a hook count, the forward pass
against an independent functional reference, presets, specs and inference helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from twostage.errors import UserError
from twostage.models import (
    PRESETS,
    ModelSpec,
    build_model,
    conv_macs,
    count_params,
    preset_spec,
    presets_table,
)
from twostage.models.common import MeanShift
from twostage.models.inference import resolve_device

SCALES = (1, 2, 3, 4)


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return k * k * c_in * c_out + c_out  # weights + biases


def upsampler_params(c: int, scale: int) -> int:
    """×2^n: n convs C→4C; ×3: one conv C→9C; ×1: none."""
    return {
        1: 0,
        2: conv_params(c, 4 * c, 3),
        3: conv_params(c, 9 * c, 3),
        4: 2 * conv_params(c, 4 * c, 3),
    }[scale]


def rcan_params_closed_form(*, groups: int, blocks: int, c: int, r: int, scale: int) -> int:
    """head + G·(B·RCAB + group conv) + body conv + upsampler + tail, where
    RCAB = 2 3×3 convs + channel attention (1×1 C→C/r and C/r→C, with biases)."""
    rcab = 2 * conv_params(c, c, 3) + conv_params(c, c // r, 1) + conv_params(c // r, c, 1)
    body = groups * (blocks * rcab + conv_params(c, c, 3)) + conv_params(c, c, 3)
    return conv_params(3, c, 3) + body + upsampler_params(c, scale) + conv_params(c, 3, 3)


def edsr_params_closed_form(*, blocks: int, c: int, scale: int) -> int:
    body = blocks * 2 * conv_params(c, c, 3) + conv_params(c, c, 3)
    return conv_params(3, c, 3) + body + upsampler_params(c, scale) + conv_params(c, 3, 3)


@pytest.mark.parametrize("scale", SCALES)
def test_paper_parameter_counts_match_closed_form(scale: int) -> None:
    with torch.device("meta"):
        rcan = build_model(preset_spec("rcan-paper", scale=scale))
        edsr = build_model(preset_spec("edsr-paper", scale=scale))
    assert count_params(rcan) == rcan_params_closed_form(
        groups=10, blocks=8, c=64, r=16, scale=scale
    )
    assert count_params(edsr) == edsr_params_closed_form(blocks=8, c=64, scale=scale)


def test_paper_parameter_counts_by_hand() -> None:
    # Worked out on paper for ×4 (the numbers docs/models.md's presets section quotes):
    # RCAN: head 1,792; RCAB 2·36,928 + 260 + 320 = 74,436; group 8·74,436 + 36,928 = 632,416;
    # body 10·632,416 + 36,928 = 6,361,088; upsampler 2·147,712; tail 1,731 → 6,660,035.
    # EDSR: body 8·73,856 + 36,928 = 627,776 → 1,792 + 627,776 + 295,424 + 1,731 = 926,723.
    with torch.device("meta"):
        assert count_params(build_model(preset_spec("rcan-paper", scale=4))) == 6_660_035
        assert count_params(build_model(preset_spec("edsr-paper", scale=4))) == 926_723
        assert count_params(build_model(preset_spec("rcan-paper", scale=1))) == 6_364_611


def hooked_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every conv actually run, from the shapes seen by forward hooks."""
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def shift_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * 3  # a 1×1 conv with 3 input channels

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, MeanShift):
            m.register_forward_hook(shift_hook)
    with torch.no_grad():
        model(x)
    return total


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(
    "spec_args",
    [
        dict(arch="rcan", n_feats=8, n_resblocks=2, n_resgroups=2, reduction=4),
        dict(arch="edsr", n_feats=8, n_resblocks=3, res_scale=0.1),
    ],
)
def test_conv_macs_matches_forward_hooks(scale: int, spec_args: dict) -> None:
    spec = ModelSpec(scale=scale, **spec_args)
    model = build_model(spec)
    x = torch.rand(1, 3, 7, 5)
    assert conv_macs(spec, 7, 5) == hooked_macs(model, x)


@pytest.mark.parametrize("arch", ["rcan", "edsr"])
@pytest.mark.parametrize("scale", SCALES)
def test_forward_shape_dtype_and_no_input_mutation(arch: str, scale: int) -> None:
    model = build_model(preset_spec(f"{arch}-tiny", scale=scale))
    x = torch.rand(2, 3, 9, 7)
    x0 = x.clone()
    y = model(x)
    assert y.shape == (2, 3, 9 * scale, 7 * scale)
    assert y.dtype == torch.float32
    assert torch.equal(x, x0)
    assert model.scale == scale and model.spec.scale == scale


def reference_edsr(
    model: nn.Module, x: torch.Tensor, *, res_scale: float, n_blocks: int, scale: int
) -> torch.Tensor:
    """EDSR written out functionally from the paper: [0, 1] → [0, 255] minus DIV2K mean,
    head, residual blocks with scaled residuals, conv, long skip, pixel shuffle, tail, plus
    the mean, back to [0, 1]. Uses the model's conv weights only."""
    p = dict(model.named_parameters())
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1) * 255

    def conv(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.conv2d(t, p[f"{name}.weight"], p[f"{name}.bias"], padding=1)

    h = conv(x * 255 - mean, "head.0")
    r = h
    for i in range(n_blocks):
        r = r + res_scale * conv(F.relu(conv(r, f"body.{i}.body.0")), f"body.{i}.body.2")
    r = conv(r, f"body.{n_blocks}") + h
    steps = {1: [], 2: [2], 3: [3], 4: [2, 2]}[scale]
    for j, s in enumerate(steps):
        r = F.pixel_shuffle(conv(r, f"tail.0.{2 * j}"), s)
    return (conv(r, "tail.1") + mean) / 255


@pytest.mark.parametrize("scale", SCALES)
def test_edsr_matches_functional_reference(scale: int) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(arch="edsr", scale=scale, n_feats=8, n_resblocks=2, res_scale=0.5)
    model = build_model(spec)
    x = torch.rand(1, 3, 8, 6)
    with torch.no_grad():
        ours = model(x)
        ref = reference_edsr(model, x, res_scale=0.5, n_blocks=2, scale=scale)
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["rcan", "edsr"])
def test_training_step_reaches_every_parameter(arch: str) -> None:
    model = build_model(preset_spec(f"{arch}-tiny", scale=2))
    x, y = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    F.l1_loss(model(x), y).backward()  # in-place residual adds must not break autograd
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert not any("mean" in n for n in grads)  # the mean shifts are fixed buffers
    assert {"sub_mean.weight", "add_mean.bias"} <= set(model.state_dict())


def test_model_spec_round_trip_and_validation() -> None:
    spec = preset_spec("rcan-paper", scale=2)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec == ModelSpec(
        arch="rcan", scale=2, n_feats=64, n_resblocks=8, n_resgroups=10, reduction=16
    )
    bad = [
        dict(arch="srcnn", scale=2, n_feats=8, n_resblocks=1),
        dict(arch="edsr", scale=5, n_feats=8, n_resblocks=1),
        dict(arch="rcan", scale=2, n_feats=10, n_resblocks=1, n_resgroups=1, reduction=4),
        dict(arch="rcan", scale=2, n_feats=8, n_resblocks=1, n_resgroups=0, reduction=4),
        dict(
            arch="rcan",
            scale=2,
            n_feats=8,
            n_resblocks=1,
            n_resgroups=1,
            reduction=4,
            res_scale=0.1,
        ),
        dict(arch="edsr", scale=2, n_feats=0, n_resblocks=1),
    ]
    for args in bad:
        with pytest.raises(UserError, match="model spec"):
            ModelSpec(**args)
    with pytest.raises(UserError, match="unknown field"):
        ModelSpec.from_dict({**spec.to_dict(), "depth": 3})
    with pytest.raises(UserError, match="missing field"):
        ModelSpec.from_dict({"arch": "edsr", "scale": 2})


def test_presets_and_table() -> None:
    assert {
        "rcan-paper",
        "edsr-paper",
        "rcan-official",
        "edsr-baseline",
        "rcan-cpu",
        "edsr-cpu",
        "rcan-tiny",
        "edsr-tiny",
    } <= set(PRESETS)
    assert preset_spec("rcan-official", scale=4).n_resblocks == 20
    assert preset_spec("edsr-baseline", scale=4).n_resblocks == 16
    with pytest.raises(UserError, match="rcan-paper"):
        preset_spec("rcan-huge", scale=2)
    table = presets_table()
    for name in PRESETS:
        assert name in table
    rcan_row = next(line for line in table.splitlines() if line.startswith("rcan-paper"))
    expected = [rcan_params_closed_form(groups=10, blocks=8, c=64, r=16, scale=s) for s in SCALES]
    assert [f"{n:,}" for n in expected] == rcan_row.split()[-8:-4]
    gmacs = [float(v) for v in rcan_row.split()[-4:]]
    assert gmacs == [
        round(conv_macs(preset_spec("rcan-paper", scale=s), 96, 96) / 1e9, 2) for s in SCALES
    ]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_output_stage_is_fp32_under_bf16_autocast() -> None:
    # The last conv and mean shift work on [0, 255]: bf16 there would cost up to half an
    # 8-bit level, so they run in fp32 whatever the autocast state.
    model = build_model(preset_spec("edsr-tiny", scale=2)).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        assert model.body[0].body[0](model.head(x)).dtype == torch.bfloat16  # autocast is on
    assert y.dtype == torch.float32
