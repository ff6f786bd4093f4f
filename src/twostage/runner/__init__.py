"""Runs a recipe: trains each network once, writes mapped sets, evaluates, writes bundles.

**Run order** (`run_recipe`, run.py): work out the networks the chosen branches need; train each
once into `out/networks/<name>-<hash>/` (hash of its TrainConfig, its data and its upstream
networks, configs.py: a finished network, one with `model.safetensors`, is reused by any later
run, and an interrupted one resumes from its checkpoints); write every stage-1 network's outputs
(the **mapped sets**, train and test) to `out/mapped/<network>/<set>/` once (networks.py); train
the specialized stage 2 on them — initialised from the off-the-shelf weights (`specialized_init:
offshelf`, the default: the paper's "intermediate training" fine-tunes the network that already
knows the domain) or from scratch (`specialized_init: scratch`); evaluate every branch on every
test set (evaluation.py); write `bundles/<branch>.safetensors` (bundles.py) and the report
(report.py). progress.py draws the one overall bar.
"""

from twostage.runner.configs import FAMILY_INSTANCES
from twostage.runner.run import run_recipe

__all__ = ["FAMILY_INSTANCES", "run_recipe"]
