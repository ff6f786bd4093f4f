"""--precision: detection (mocked capability queries), the modes' numbers, the pipeline, the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from twostage import cli, runner
from twostage.config import PROFILES
from twostage.errors import UserError
from twostage.models import build_model, preset_spec
from twostage.models.inference import (
    PRECISIONS,
    native_bf16,
    precision_context,
    resolve_amp,
    resolve_precision,
)
from twostage.pipeline import Pipeline, load_pipeline

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
NO_BF16 = {"avx2": True, "avx512_bf16": False, "amx_bf16": False, "amx_tile": False}


def _cpu_caps(monkeypatch: pytest.MonkeyPatch, **flags: bool) -> None:
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: {**NO_BF16, **flags})


def _cuda_bf16(monkeypatch: pytest.MonkeyPatch, supported: bool) -> None:
    def query(including_emulation: bool = True) -> bool:
        assert not including_emulation  # emulated bf16 is what `auto` must avoid
        return supported

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", query)


def test_auto_takes_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_caps(monkeypatch, avx512_bf16=True, amx_bf16=True, amx_tile=True)
    assert resolve_precision("auto", CPU).mode == "bf16"
    assert "AMX" in resolve_precision("auto", CPU).reason
    _cpu_caps(monkeypatch, avx512_bf16=True)
    assert str(resolve_precision("auto", CPU)) == "bf16 (auto: CPU has AVX512-BF16)"
    _cpu_caps(monkeypatch)  # AVX2 only: bf16 would be emulated, 35-70x slower
    assert native_bf16(CPU) is None
    assert resolve_precision("auto", CPU).mode == "fp32"
    _cuda_bf16(monkeypatch, True)
    assert str(resolve_precision("auto", CUDA)) == "bf16 (auto: GPU has bf16)"
    _cuda_bf16(monkeypatch, False)
    assert resolve_precision("auto", CUDA).mode == "fp32"


def test_run_amp_auto_resolves_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """run.amp=auto (the cpu profile's, not the shipped model's): bf16 only where native."""
    assert PROFILES["cpu"].run.amp == "auto" and PROFILES["ship"].run.amp == "none"
    _cpu_caps(monkeypatch)
    assert resolve_amp("auto", CPU) == "none" and resolve_amp("bf16", CPU) == "bf16"
    _cpu_caps(monkeypatch, avx512_bf16=True)
    assert resolve_amp("auto", CPU) == "bf16" and resolve_amp("none", CPU) == "none"
    _cuda_bf16(monkeypatch, False)
    assert resolve_amp("auto", CUDA) == "none"


def test_run_keys_networks_by_the_resolved_amp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's cache key holds run.amp as resolved: `auto` reuses what `none` trained on a
    CPU without native bf16 and retrains where bf16 is native (other hardware, other weights)."""
    tiny = PROFILES["tiny"]
    auto = dataclasses.replace(tiny, run=dataclasses.replace(tiny.run, amp="auto"))
    where = {"branches": ["direct-rcan"], "device": "cpu", "quiet": True, "out": tmp_path}
    _cpu_caps(monkeypatch)
    assert runner.run_recipe("sr-x4", profile=tiny, **where)["networks_trained"]
    again = runner.run_recipe("sr-x4", profile=auto, **where)
    assert again["networks_trained"] == [] and again["training_amp"] == ["none"]
    _cpu_caps(monkeypatch, avx512_bf16=True)
    native = runner.run_recipe("sr-x4", profile=auto, **where)
    assert native["networks_trained"] and native["training_amp"] == ["bf16"]
    assert len(list((tmp_path / "networks").iterdir())) == 2


def test_explicit_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_caps(monkeypatch)
    assert resolve_precision("fp32", CPU).mode == "fp32"
    slow = resolve_precision("bf16", CPU)  # asked for: honoured, with a warning in the reason
    assert slow.mode == "bf16" and "emulated" in slow.reason
    _cpu_caps(monkeypatch, amx_bf16=True)
    assert str(resolve_precision("bf32", CPU)) == "bf32 (requested)"
    with pytest.raises(UserError, match="bf32 is a CPU"):
        resolve_precision("bf32", CUDA)
    with pytest.raises(UserError, match="--precision 'fp16'"):
        resolve_precision("fp16", CPU)
    # A context runs a concrete mode: `auto` is resolved first.
    with pytest.raises(UserError, match="precision mode"), precision_context("auto", CPU):
        pass


def test_bf32_switch_is_scoped() -> None:
    backends = (torch.backends.mkldnn.conv, torch.backends.mkldnn.matmul)  # type: ignore[attr-defined]
    before = [b.fp32_precision for b in backends]
    with pytest.raises(RuntimeError, match="boom"), precision_context("bf32", CPU):
        assert [b.fp32_precision for b in backends] == ["bf16", "bf16"]
        raise RuntimeError("boom")
    assert [b.fp32_precision for b in backends] == before


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


@pytest.mark.parametrize("preset", ["rcan-tiny", "edsr-tiny"])
def test_reduced_precision_is_close_to_fp32_and_the_tail_stays_fp32(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset_spec(preset, scale=2)).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    seen: dict[str, torch.dtype] = {}
    model.tail[1].register_forward_hook(
        lambda mod, args, out: seen.update(last_in=args[0].dtype, last_out=out.dtype)
    )
    model.head[0].register_forward_hook(lambda mod, args, out: seen.update(head=out.dtype))
    out = {}
    for mode in ("fp32", "bf32", "bf16"):
        with torch.inference_mode(), precision_context(mode, CPU):
            out[mode] = model(x)
        assert out[mode].dtype == torch.float32
        if mode == "bf16":  # the body ran in bf16, the last conv and the output in fp32
            assert seen == {
                "head": torch.bfloat16,
                "last_in": torch.float32,
                "last_out": torch.float32,
            }
    # Measured: bf16 is within 0.4/255 of fp32 here (≈ 62 dB), bf32 within float rounding.
    assert (out["bf16"] - out["fp32"]).abs().max() <= 1.0 / 255
    assert _psnr(out["bf16"], out["fp32"]) >= 50
    assert (out["bf32"] - out["fp32"]).abs().max() <= 1.0 / 255
    assert not torch.equal(out["bf16"], out["fp32"])  # the mode did change the arithmetic


def _bundle(path: Path) -> Pipeline:
    torch.manual_seed(3)
    pipe = Pipeline(
        build_model(preset_spec("rcan-tiny", scale=2)),
        build_model(preset_spec("edsr-tiny", scale=2)),
    )
    pipe.save_bundle(path)
    return pipe


def test_pipeline_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundle(tmp_path / "p.safetensors")
    img = np.random.default_rng(0).random((20, 18, 3)).astype(np.float32)
    _cpu_caps(monkeypatch, amx_bf16=True)
    pipe = load_pipeline(tmp_path / "p.safetensors", precision="auto")
    assert isinstance(pipe, Pipeline) and str(pipe.precision) == "bf16 (auto: CPU has AMX)"
    assert load_pipeline(tmp_path / "p.safetensors").precision.mode == "fp32"  # the API default
    fast = pipe.restore(img)
    exact = pipe.restore(img, precision="fp32")
    assert fast.dtype == exact.dtype == np.float32
    # Two networks and an 8-bit intermediate: a rounding step may flip, so bound the PSNR.
    assert np.abs(fast - exact).max() > 0 and 10 * np.log10(1 / np.mean((fast - exact) ** 2)) >= 45
    _cpu_caps(monkeypatch)
    assert load_pipeline(tmp_path / "p.safetensors", precision="auto").precision.mode == "fp32"


def test_auto_keeps_fp32_for_networks_that_are_not_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Foreign(nn.Module):  # e.g. a spandrel network: its output layer may run in bf16
        scale = 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    from twostage import pipeline as pipeline_module

    _cpu_caps(monkeypatch, amx_bf16=True)
    pipe = Pipeline(None, Foreign())
    chosen = pipeline_module._pipeline_precision(pipe, "auto", CPU)
    assert chosen.mode == "fp32" and "Foreign" in chosen.reason
    assert pipeline_module._pipeline_precision(pipe, "bf16", CPU).mode == "bf16"


def test_onnx_runs_fp32_only(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read: the option is checked first")
    with pytest.raises(UserError, match="ONNX"):
        load_pipeline(onnx, precision="bf16")


def test_cli_restore_precision(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.PRECISIONS == PRECISIONS  # the CLI's copy (it stays torch-free) is the same table
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    assert "--precision {auto,fp32,bf32,bf16}" in capsys.readouterr().out
    _bundle(tmp_path / "p.safetensors")
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(tmp_path / "a.png")
    _cpu_caps(monkeypatch, amx_bf16=True)
    args = ["restore", "--model", str(tmp_path / "p.safetensors"), str(tmp_path / "a.png")]
    assert cli.main([*args, "--out", str(tmp_path / "o1"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("precision: bf16 (auto: CPU has AMX)") == 1
    assert cli.main([*args, "--out", str(tmp_path / "o2"), "--precision", "fp32"]) == 0
    assert "precision: fp32 (requested)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--out", str(tmp_path / "o3"), "--precision", "fp16"])
    assert exit_info.value.code == 2 and not (tmp_path / "o3").exists()


def test_run_precision_changes_only_the_evaluation(tmp_path: Path) -> None:
    """`run --precision bf16` re-evaluates the cached networks in bf16: the same networks (none
    retrained), the mode in results.json, PSNR within bf16's rounding of fp32's."""
    import json

    args = ["run", "sr-x4", "--profile", "tiny", "--branches", "direct-rcan", "--quiet"]
    args += ["--device", "cpu", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    fp32 = json.loads((tmp_path / "results.json").read_text())
    assert fp32["precision"] == "fp32" and fp32["networks_trained"]
    assert fp32["training_amp"] == ["none"]  # the tiny profile trains in fp32
    assert cli.main([*args, "--precision", "bf16"]) == 0
    bf16 = json.loads((tmp_path / "results.json").read_text())
    assert bf16["precision"] == "bf16" and bf16["networks_trained"] == []
    pairs = [(a["psnr"], b["psnr"]) for a, b in zip(fp32["rows"], bf16["rows"], strict=True)]
    assert all(abs(a - b) < 0.2 for a, b in pairs)
    with pytest.raises(SystemExit) as info:
        cli.main([*args, "--precision", "fp16"])
    assert info.value.code == 2
