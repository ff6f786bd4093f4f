"""Checkpoint formats: equivalence with spandrel's RCAN, exact round trips between the native,
official and BasicSR layouts, detection, strict key checks, safe unpickling, spandrel fallback."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import twostage.models.checkpoints as checkpoints_mod
from twostage.errors import UserError
from twostage.models import ModelSpec, build_model
from twostage.models.checkpoints import (
    CheckpointError,
    SpandrelModel,
    detect_spec,
    from_basicsr,
    from_official,
    load_model,
    load_weights,
    read_state,
    save_basicsr,
    save_model,
    save_official,
    to_basicsr,
    to_official,
)

SCALES = (1, 2, 3, 4)


def rcan_spec(scale: int) -> ModelSpec:
    return ModelSpec(arch="rcan", scale=scale, n_feats=8, n_resblocks=2, n_resgroups=2, reduction=2)


def edsr_spec(scale: int) -> ModelSpec:
    return ModelSpec(arch="edsr", scale=scale, n_feats=8, n_resblocks=3)


def random_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------- spandrel equivalence


@pytest.fixture
def spandrel_rcan_arch(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """spandrel's own RCAN architecture (detection + vendored module), imported without
    spandrel's package __init__, whose registry needs torchvision."""
    found = importlib.util.find_spec("spandrel")
    if found is None or not found.submodule_search_locations:
        pytest.fail(  # a test dependency (make setup installs it): missing is a failure
            "spandrel is not installed (test dependency: pip install --no-deps spandrel==0.4.2)"
        )
    before = set(sys.modules)
    stub = types.ModuleType("spandrel")
    stub.__path__ = list(found.submodule_search_locations)
    monkeypatch.setitem(sys.modules, "spandrel", stub)
    arch = importlib.import_module("spandrel.architectures.RCAN").RCANArch()
    yield arch
    for name in set(sys.modules) - before:
        if name.startswith("spandrel."):
            del sys.modules[name]


@pytest.mark.parametrize("scale", SCALES)
def test_official_rcan_loads_in_spandrel_with_same_output(
    spandrel_rcan_arch: object, scale: int, tmp_path: Path
) -> None:
    spec = ModelSpec(
        arch="rcan", scale=scale, n_feats=64, n_resblocks=1, n_resgroups=1, reduction=16
    )
    ours = random_model(spec, seed=scale).eval()
    save_official(tmp_path / "rcan.pt", ours)
    state = torch.load(tmp_path / "rcan.pt", weights_only=True)
    descriptor = spandrel_rcan_arch.load(state)  # type: ignore[attr-defined]
    theirs = descriptor.model.eval()
    assert descriptor.scale == scale
    assert theirs.hyperparameters["n_resgroups"] == 1 and theirs.hyperparameters["n_feats"] == 64
    torch.manual_seed(10)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y_ours = ours(x)
        y_theirs = theirs(x.clone())  # spandrel's RCAN scales its input in place
    assert y_ours.shape == (1, 3, 16 * scale, 16 * scale)
    assert y_ours.std().item() > 1e-3  # a real signal, not a constant
    assert (y_ours - y_theirs).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------- layouts and round trips


def expected_basicsr_keys(spec: ModelSpec) -> set[str]:
    """BasicSR's EDSR/RCAN parameter names, written out from basicsr/archs/*_arch.py."""
    names = ["conv_first", "conv_after_body", "conv_last"]
    n_up = {1: 0, 2: 1, 3: 1, 4: 2}[spec.scale]
    names += [f"upsample.{2 * i}" for i in range(n_up)]
    if spec.arch == "rcan":
        for g in range(spec.n_resgroups):
            names.append(f"body.{g}.conv")
            for b in range(spec.n_resblocks):
                rcab = f"body.{g}.residual_group.{b}.rcab"
                names += [
                    f"{rcab}.0",
                    f"{rcab}.2",
                    f"{rcab}.3.attention.1",
                    f"{rcab}.3.attention.3",
                ]
    else:
        for i in range(spec.n_resblocks):
            names += [f"body.{i}.conv1", f"body.{i}.conv2"]
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def expected_official_keys(spec: ModelSpec) -> set[str]:
    """Official EDSR-PyTorch / RCAN parameter names."""
    names = ["sub_mean", "add_mean", "head.0", "tail.1"]
    n_up = {1: 0, 2: 1, 3: 1, 4: 2}[spec.scale]
    names += [f"tail.0.{2 * i}" for i in range(n_up)]
    if spec.arch == "rcan":
        names.append(f"body.{spec.n_resgroups}")
        for g in range(spec.n_resgroups):
            names.append(f"body.{g}.body.{spec.n_resblocks}")
            for b in range(spec.n_resblocks):
                blk = f"body.{g}.body.{b}.body"
                names += [f"{blk}.0", f"{blk}.2", f"{blk}.3.conv_du.0", f"{blk}.3.conv_du.2"]
    else:
        names.append(f"body.{spec.n_resblocks}")
        for i in range(spec.n_resblocks):
            names += [f"body.{i}.body.0", f"body.{i}.body.2"]
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("make_spec", [rcan_spec, edsr_spec])
def test_round_trips_are_exact(make_spec, scale: int, tmp_path: Path) -> None:
    spec = make_spec(scale)
    model = random_model(spec)

    official = to_official(model)
    assert set(official) == expected_official_keys(spec)
    basicsr = to_basicsr(model)
    assert set(basicsr) == {"params"}
    assert set(basicsr["params"]) == expected_basicsr_keys(spec)

    # native → official → BasicSR → native, through files
    save_model(tmp_path / "a.safetensors", model)
    native = load_model(tmp_path / "a.safetensors")
    assert native.spec == spec
    save_official(tmp_path / "b.pt", native)
    from_off = load_model(tmp_path / "b.pt")
    save_basicsr(tmp_path / "c.pth", from_off, key="params_ema")
    from_bsr = load_model(tmp_path / "c.pth")
    save_model(tmp_path / "d.safetensors", from_bsr)
    back = load_model(tmp_path / "d.safetensors")
    for m in (native, from_off, from_bsr, back):
        assert m.spec == spec
        assert_same_weights(model, m)

    # in memory, both directions
    assert_same_weights(model, from_official(official))
    assert_same_weights(model, from_basicsr(basicsr))
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), from_basicsr(basicsr).eval()(x))


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(arch="rcan", scale=3, n_feats=16, n_resblocks=3, n_resgroups=2, reduction=4),
        ModelSpec(arch="rcan", scale=1, n_feats=12, n_resblocks=1, n_resgroups=3, reduction=3),
        ModelSpec(arch="edsr", scale=4, n_feats=6, n_resblocks=5),
        ModelSpec(arch="edsr", scale=1, n_feats=4, n_resblocks=2),
        ModelSpec(arch="edsr", scale=8, n_feats=4, n_resblocks=1, res_scale=1.0),
    ],
)
def test_detection_from_official_and_basicsr_keys(spec: ModelSpec) -> None:
    with torch.device("meta"):
        model = build_model(spec)
    assert detect_spec(model.state_dict()) == spec
    basicsr = to_basicsr(build_model(spec))["params"]
    assert detect_spec(basicsr) == spec
    assert detect_spec({f"module.{k}": v for k, v in basicsr.items()}) == spec


def test_module_prefix_and_params_ema_preferred(tmp_path: Path) -> None:
    spec = rcan_spec(2)
    plain, ema = random_model(spec, seed=1), random_model(spec, seed=2)
    ckpt = {
        "params": to_basicsr(plain)["params"],
        "params_ema": {f"module.{k}": v for k, v in to_basicsr(ema)["params"].items()},
    }
    torch.save(ckpt, tmp_path / "net_g.pth")
    assert_same_weights(ema, load_model(tmp_path / "net_g.pth"))
    torch.save({"module." + k: v for k, v in to_official(plain).items()}, tmp_path / "ddp.pt")
    assert_same_weights(plain, load_model(tmp_path / "ddp.pt"))


def test_native_file_metadata(tmp_path: Path) -> None:
    model = random_model(edsr_spec(2))
    save_model(tmp_path / "m.safetensors", model, metadata={"domain": "bicubic-x2"})
    state, meta = read_state(tmp_path / "m.safetensors")
    assert meta["format"] == "twostage" and meta["domain"] == "bicubic-x2"
    assert json.loads(meta["spec"]) == edsr_spec(2).to_dict()
    assert "version" in meta
    assert set(state) == expected_official_keys(edsr_spec(2))
    # res_scale cannot be read from weights: the native metadata carries it
    scaled = random_model(ModelSpec(arch="edsr", scale=2, n_feats=8, n_resblocks=1, res_scale=0.1))
    save_model(tmp_path / "s.safetensors", scaled)
    assert load_model(tmp_path / "s.safetensors").spec.res_scale == 0.1
    with pytest.raises(CheckpointError, match="not one of our"):
        save_model(tmp_path / "x.safetensors", nn.Conv2d(3, 3, 1))
    # a (Distributed)DataParallel wrapper is looked through: no `module.` keys are written
    save_model(tmp_path / "dp.safetensors", nn.DataParallel(model))
    assert set(read_state(tmp_path / "dp.safetensors")[0]) == expected_official_keys(model.spec)


def test_metadata_json_nested_too_deeply_is_a_checkpoint_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    """A crafted spec (or bundle field) of 100k nested lists: the JSON decoder's RecursionError
    becomes the one-line error naming the file."""
    from twostage.pipeline import load_pipeline

    save_model(tmp_path / "m.safetensors", random_model(edsr_spec(2)))
    state, meta = read_state(tmp_path / "m.safetensors")
    deep = "[" * 100_000 + "]" * 100_000
    save_file(state, str(tmp_path / "deep.safetensors"), metadata={**meta, "spec": deep})
    with pytest.raises(CheckpointError, match=r"deep\.safetensors: bad model spec") as err:
        load_model(tmp_path / "deep.safetensors")
    assert "\n" not in str(err.value)
    bundle = {"format": "twostage-pipeline", "version": "1", "stage2_spec": deep}
    save_file(state, str(tmp_path / "b.safetensors"), metadata=bundle)
    with pytest.raises(UserError, match=r"b\.safetensors"):
        load_pipeline(tmp_path / "b.safetensors")


# ----------------------------------------------------------------------- strict checks


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path: Path) -> None:
    state = to_official(random_model(rcan_spec(2)))
    gone = "body.1.body.0.body.3.conv_du.2.bias"
    del state[gone]
    state["body.0.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "bad.pt")
    assert gone in str(info.value) and "body.0.extra.weight" in str(info.value)
    assert str(tmp_path / "bad.pt") in str(info.value)

    state = to_official(random_model(rcan_spec(2)))
    state["body.2.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(CheckpointError, match=r"wrong shapes.*body\.2\.weight"):
        from_official(state)

    bsr = to_basicsr(random_model(edsr_spec(3)))["params"]
    del bsr["body.1.conv2.weight"]
    bsr["body.1.conv3.weight"] = torch.zeros(8, 8, 3, 3)
    with pytest.raises(CheckpointError, match=r"body\.1\.conv2\.weight.*body\.1\.conv3\.weight"):
        from_basicsr(bsr)


CRAFTED_TENSORS = {
    "empty conv": ("head.0.weight", torch.zeros(0, 3, 3, 3)),
    "empty upsampler input": ("tail.0.0.weight", torch.zeros(32, 0, 3, 3)),
    "empty squeeze": ("body.0.body.0.body.3.conv_du.0.weight", torch.zeros(0, 8, 1, 1)),
    "0-d head": ("head.0.weight", torch.tensor(1.0)),
    "0-d upsampler": ("tail.0.0.weight", torch.tensor(1.0)),
    "1-d upsampler": ("tail.0.0.weight", torch.ones(32)),
    "0-d squeeze": ("body.0.body.0.body.3.conv_du.0.weight", torch.tensor(1.0)),
    "bool conv": ("head.0.weight", torch.ones(8, 3, 3, 3, dtype=torch.bool)),
    "bool mean shift": ("sub_mean.bias", torch.ones(3, dtype=torch.bool)),
    "int conv": ("body.0.body.0.body.0.weight", torch.ones(8, 8, 3, 3, dtype=torch.int64)),
}


@pytest.mark.parametrize("kind", CRAFTED_TENSORS)
def test_crafted_tensors_are_refused_naming_file_and_tensor(kind: str, tmp_path: Path) -> None:
    key, tensor = CRAFTED_TENSORS[kind]
    state = to_official(random_model(rcan_spec(2)))
    state[key] = tensor
    path = tmp_path / "crafted.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and key in message and "\n" not in message


def test_crafted_model_is_one_line_for_restore_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from twostage.cli import main

    state = to_official(random_model(edsr_spec(2)))
    state["tail.0.0.weight"] = torch.ones(32)
    model = tmp_path / "crafted.pt"
    torch.save(state, model)
    photo = tmp_path / "a.png"
    Image.new("RGB", (12, 10), (90, 120, 30)).save(photo)
    commands = [
        ["restore", "--model", str(model), str(photo), "--out", str(tmp_path / "out")],
        ["export", "--model", str(model), "--onnx", str(tmp_path / "m.onnx")],
    ]
    for args in commands:
        assert main(args) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "crafted.pt" in err[0] and "tail.0.0.weight" in err[0], args


def test_mean_shift_checks() -> None:
    model = random_model(edsr_spec(2))
    state = to_official(model)
    with torch.no_grad():
        model.sub_mean.bias.add_(1.0)
    with pytest.raises(CheckpointError, match="mean shift"):
        to_basicsr(model)
    state["sub_mean.bias"] = state["sub_mean.bias"] / 255  # trained with rgb_range 1
    with pytest.raises(CheckpointError, match="rgb_range"):
        from_official(state)


class Payload:
    """Unpickling this calls open(target, 'w'): a side effect that proves code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_running_pickle_is_refused(writer: str, tmp_path: Path) -> None:
    def write(path: Path, target: Path) -> None:
        obj = {"head.0.weight": torch.zeros(1), "evil": Payload(target)}
        if writer == "torch.save":
            torch.save(obj, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=2)

    # control: the payload really runs when unpickled without restrictions
    control = tmp_path / "control-ran"
    write(tmp_path / "control.pth", control)
    with open(tmp_path / "control.pth", "rb") as f:
        if writer == "torch.save":
            torch.load(f, weights_only=False)
        else:
            pickle.load(f)
    assert control.exists()

    target = tmp_path / "pwned"
    write(tmp_path / "evil.pth", target)
    with pytest.raises(CheckpointError, match=r"refusing|cannot read"):
        read_state(tmp_path / "evil.pth")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pth")
    assert not target.exists()


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        read_state(tmp_path / "missing.pt")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown file type"):
        read_state(tmp_path / "m.onnx")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"broken\.safetensors"):
        read_state(tmp_path / "broken.safetensors")
    torch.save({"epoch": 3, "lr": 1e-4}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="no state dict"):
        read_state(tmp_path / "meta.pt")


# ----------------------------------------------------------------------- spandrel fallback


def other_arch_file(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(12, 3, 3, 3), "conv.bias": torch.zeros(12)}, path)
    return path


def test_spandrel_missing_gives_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` → ImportError
    with pytest.raises(UserError, match="pip install torchvision spandrel"):
        load_model(other_arch_file(tmp_path))


class PixelShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.conv(x), 2)


def fake_spandrel(supported: bool) -> types.ModuleType:
    """A stand-in for spandrel's loader API (ModelLoader → ImageModelDescriptor)."""
    mod = types.ModuleType("spandrel")

    class UnsupportedModelError(Exception):
        pass

    class ImageModelDescriptor:
        def __init__(self, model: nn.Module) -> None:
            self.model, self.scale = model, 2
            self.input_channels = self.output_channels = 3
            self.architecture = types.SimpleNamespace(id="PixelShuffleNet")

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x).clamp(0, 1)

    class ModelLoader:
        def __init__(self, device: str) -> None:
            pass

        def load_from_state_dict(self, state: dict) -> ImageModelDescriptor:
            if not supported:
                raise UnsupportedModelError
            net = PixelShuffleNet()
            net.load_state_dict(state)
            return ImageModelDescriptor(net)

    mod.UnsupportedModelError = UnsupportedModelError  # type: ignore[attr-defined]
    mod.ImageModelDescriptor = ImageModelDescriptor  # type: ignore[attr-defined]
    mod.ModelLoader = ModelLoader  # type: ignore[attr-defined]
    return mod


def test_spandrel_fallback_is_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = other_arch_file(tmp_path)
    monkeypatch.setitem(sys.modules, "spandrel", fake_spandrel(supported=True))
    model = load_model(path)
    assert isinstance(model, SpandrelModel)
    assert model.scale == 2 and model.spec is None and model.architecture == "PixelShuffleNet"
    assert model(torch.rand(1, 3, 5, 4)).shape == (1, 3, 10, 8)
    monkeypatch.setitem(sys.modules, "spandrel", fake_spandrel(supported=False))
    with pytest.raises(CheckpointError, match=r"unknown architecture.*conv\.weight"):
        load_model(path)


def _basicsr_rcan_by_hand(model: nn.Module, groups: int, blocks: int) -> dict[str, torch.Tensor]:
    """BasicSR's RCAN names (basicsr/archs/rcan_arch.py) for our official keys, written out."""
    names = {"head.0": "conv_first", f"body.{groups}": "conv_after_body", "tail.1": "conv_last"}
    names |= {"tail.0.0": "upsample.0", "tail.0.2": "upsample.2"}
    for g in range(groups):
        names[f"body.{g}.body.{blocks}"] = f"body.{g}.conv"
        for b in range(blocks):
            ours, theirs = f"body.{g}.body.{b}.body", f"body.{g}.residual_group.{b}.rcab"
            names[f"{ours}.0"] = f"{theirs}.0"
            names[f"{ours}.2"] = f"{theirs}.2"
            names[f"{ours}.3.conv_du.0"] = f"{theirs}.3.attention.1"
            names[f"{ours}.3.conv_du.2"] = f"{theirs}.3.attention.3"
    state = {}
    for key, value in model.state_dict().items():
        layer, kind = key.rsplit(".", 1)
        if layer not in ("sub_mean", "add_mean"):
            state[f"{names[layer]}.{kind}"] = value.clone()
    return state


@pytest.mark.parametrize("scale", [2, 4])
def test_basicsr_rcan_by_hand_gives_the_same_output(scale: int, tmp_path: Path) -> None:
    """A BasicSR RCAN checkpoint, mapped by hand, computes our network's function."""
    spec = rcan_spec(scale)
    model = random_model(spec, seed=7).eval()
    path = tmp_path / "net_g.pth"
    torch.save({"params": _basicsr_rcan_by_hand(model, 2, 2)}, path)
    loaded = load_model(path).eval()
    x = torch.rand(1, 3, 10, 9)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    assert want.std().item() > 1e-3
    assert torch.equal(got, want)


# ------------------------ NaN weights, weights of another architecture, spandrel's install hint


def _nan_model(tmp_path: Path, net: torch.nn.Module) -> Path:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(net.state_dict(), path)
    return path


def test_nan_weights_are_refused_by_export_and_restore(
    tmp_path: Path,
    photo_file: Callable[..., Path],
    tiny_edsr: Callable[..., torch.nn.Module],
    run_cli: Callable[..., tuple[int, str]],
) -> None:
    model = _nan_model(tmp_path, tiny_edsr())
    code, err = run_cli("export", "--model", str(model), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and "NaN or Inf in the weights of head.0.weight" in err
    assert not (tmp_path / "m.onnx").exists()
    photo = photo_file(tmp_path / "in")
    code, err = run_cli("restore", "--model", str(model), str(photo), "--out", str(tmp_path / "o"))
    assert code == 2 and "NaN or Inf" in err and not (tmp_path / "o").exists()


def test_wrong_init_architecture_says_what_the_weights_are(
    tiny_edsr: Callable[..., torch.nn.Module],
) -> None:
    rcan = build_model(
        ModelSpec(arch="rcan", scale=2, n_feats=8, n_resblocks=1, n_resgroups=1, reduction=4)
    )
    with pytest.raises(CheckpointError) as err:
        load_weights(rcan, tiny_edsr().state_dict(), source="model.init edsr.pt")
    assert str(err.value) == (
        "model.init edsr.pt: the weights are EDSR ×2 (1 block, 8 ch), but "
        "RCAN ×2 (1×1 RCAB, 8 ch, r4) was expected"
    )
    other = tiny_edsr(seed=3)
    load_weights(rcan := tiny_edsr(), other.state_dict(), source="x")
    assert all(
        torch.equal(a, b) for a, b in zip(rcan.state_dict().values(), other.state_dict().values())
    )


@pytest.mark.parametrize("missing", ["spandrel", "torchvision"])
def test_spandrel_hint_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "spandrel":
            raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)
        return real_import(name, *args, **kwargs)

    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(UserError) as err:
        checkpoints_mod.load_model(path)
    if missing == "spandrel":
        assert "need spandrel (pip install torchvision spandrel==0.4.2)" in str(err.value)
    else:
        assert "spandrel, which is installed but cannot import torchvision" in str(err.value)
        assert "(pip install torchvision)" in str(err.value)
