"""twostage: two-stage domain-adapted training for real-world image SR and restoration.

The public Python API (docs/api.md) is re-exported here from `twostage.api`; importing it loads
neither numpy nor torch until a function is called.
"""

__version__ = "0.1.0"

# after __version__, which the modules below read
from twostage.api import (
    Mean,
    Model,
    RunResults,
    Scores,
    degrade,
    load,
    run,
    score,
    train_network,
)
from twostage.errors import UserError

__all__ = [
    "Mean",
    "Model",
    "RunResults",
    "Scores",
    "UserError",
    "__version__",
    "degrade",
    "load",
    "run",
    "score",
    "train_network",
]
