"""Distributed training: two gloo processes on CPU, launched as torchrun launches them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from twostage.config import apply_overrides, profile_defaults, save_config
from twostage.train import load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]

# Each rank trains, then dumps the weights it holds, so the test compares the two processes'
# own copies (not one file written by rank 0).
RANK_SCRIPT = """
import os, sys
from safetensors.torch import save_file
from twostage.config import load_config
from twostage.train import train
result = train(load_config(sys.argv[1]), out=sys.argv[2], quiet=True)
state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
save_file(state, os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.safetensors"))
"""


def test_two_gloo_processes_hold_identical_weights(tmp_path: Path, photo_pairs: list[str]) -> None:
    cfg = apply_overrides(
        profile_defaults("tiny"),
        [
            *photo_pairs,
            "optim.iterations=10",
            "log.checkpoint_every=5",
            "log.val_every=5",
        ],
    )
    config = tmp_path / "tiny.yaml"
    save_config(cfg, config)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(config),
            str(out),
            str(dumps),
        ],
        env=env,
        text=True,
        capture_output=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rank0 = load_file(str(dumps / "rank0.safetensors"))
    rank1 = load_file(str(dumps / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    final = load_file(str(out / "model.safetensors"))  # written by rank 0 alone
    assert all(torch.equal(final[k], rank0[k]) for k in final)
    _, state = load_checkpoint(out / "checkpoints" / "iter_00000010")
    assert state["world_size"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["5", "10"]  # one writer, no duplicates

    # The ranks drew different batches and averaged their gradients: the result is not what
    # rank 0's batches alone give (identical weights above are then no accident).
    single = train(cfg, out=tmp_path / "single", quiet=True)
    alone = {k: v.detach() for k, v in single.model.state_dict().items()}
    assert any(
        not torch.equal(alone[k], rank0[k])
        for k in rank0
        if k.endswith("weight") and "mean" not in k
    )
