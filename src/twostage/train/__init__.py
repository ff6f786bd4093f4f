"""Train one network (input domain → target domain at the model's scale) from a `TrainConfig`.

The loop follows BasicSR/EDSR practice: random LR patches with flips and 90° rotations, Adam,
a step schedule, L1, whole-image validation (PSNR/SSIM on RGB, crop = scale).

Run folder (docs/design.md, "Contracts"):
  config.yaml        the full config (reproduces the run)
  checkpoints/       iter_XXXXXXXX/{model.safetensors, state.pt, twostage-checkpoint.txt},
                     latest.txt, best.txt (the clean-ups delete only folders with the mark)
  twostage.lock      held (flock) while a run trains here; names the holder
  metrics.csv        iteration, loss, lr, val_psnr, val_ssim, seconds
  events.out.tfevents.*  TensorBoard: loss, lr, val PSNR/SSIM, a few validation outputs
  model.safetensors  the final weights (the EMA weights when optim.ema > 0), with metadata

Exact resume: batch i is drawn from `np.random.default_rng([seed, i, rank])`, the schedule is a
function of the iteration, and a checkpoint holds weights, optimizer, EMA, scaler, every RNG
state and the open loss window; on CPU a killed-and-resumed run ends bit-identical to an
uninterrupted one, with the same metrics.csv losses.
A checkpoint folder is written under a temporary name and renamed into place; `latest.txt` (a
one-line pointer, written atomically) moves only afterwards, so a kill at any moment leaves the
previous checkpoint loadable; without `latest.txt` a resume takes the newest complete folder.
The training state stores the run's config: a resume is checked against it, not against the
editable config.yaml. A fresh run refuses a folder it does not own (`train`'s docstring).

Speed: `run.amp=bf16` autocasts on CUDA and on the CPU (`auto`, the cpu profile's: only where
bf16 is native); `run.cuda_graph` (CUDA) captures the whole step once and replays it, a
launch-bound step's cure (BENCHMARKS.md, GPU section).

Modules, each importing only those below it:
  loop.py        the `Trainer` (set-up, step, tick, finish) and the entry point `train`
                 (`twostage.train_network` reads a config file and calls it)
  rundir.py      the run folder's ownership checks (fresh run, resume, --overwrite)
  loader.py      the batches of each iteration through a DataLoader (data.num_workers)
  step.py        the step (`make_step`, `TrainStep`), the lr schedule, validation
  cuda_graph.py  run.cuda_graph: a given step captured and replayed
  state.py       checkpoint folders, the training state and RNG, metrics.csv
  dist.py        DDP under torchrun; signals.py  Ctrl-C / SIGTERM
"""

from twostage.train.cuda_graph import graph_blocker
from twostage.train.loop import Trainer, TrainingDiverged, TrainResult, train
from twostage.train.state import (
    CHECKPOINT_MARK,
    config_json,
    has_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    read_training_state,
)
from twostage.train.step import TrainStep, learning_rate, make_step, validate

__all__ = [
    "CHECKPOINT_MARK",
    "TrainResult",
    "TrainStep",
    "Trainer",
    "TrainingDiverged",
    "config_json",
    "graph_blocker",
    "has_checkpoint",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "make_step",
    "read_training_state",
    "train",
    "validate",
]
