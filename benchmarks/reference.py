"""The reference RCAN: spandrel's vendored copy of the official architecture, loaded on its own.

spandrel's package `__init__` builds a registry that imports torchvision (not installed here),
so the vendored module `spandrel/architectures/RCAN/__arch/rcan_arch.py` is imported under a
stub `spandrel` package (as tests/test_checkpoints.py does): only the module and its two small
helpers (`__arch_helpers.padding`, `util`) run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from torch import Tensor, nn

ARCH_MODULE = "spandrel.architectures.RCAN.__arch.rcan_arch"


def reference_rcan_class() -> type[nn.Module]:
    """spandrel's `RCAN` class; raises RuntimeError when spandrel is not installed."""
    found = importlib.util.find_spec("spandrel")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("spandrel is not installed (pip install --no-deps spandrel==0.4.2)")
    saved = {k: v for k, v in sys.modules.items() if k == "spandrel" or k.startswith("spandrel.")}
    stub = types.ModuleType("spandrel")
    stub.__path__ = list(found.submodule_search_locations)
    sys.modules["spandrel"] = stub
    try:
        return importlib.import_module(ARCH_MODULE).RCAN
    finally:  # leave sys.modules as it was: the class keeps its module alive
        for name in [k for k in sys.modules if k == "spandrel" or k.startswith("spandrel.")]:
            del sys.modules[name]
        sys.modules.update(saved)


class ReferenceRCAN(nn.Module):
    """spandrel's RCAN behind our interface: N×3×H×W in [0, 1] → [0, 1].

    spandrel scales its input in place (`x *= rgb_range`), so the input is cloned first (a
    copy of the 3-channel input: negligible next to the network).
    """

    def __init__(
        self, *, scale: int, n_resgroups: int, n_resblocks: int, n_feats: int, reduction: int
    ) -> None:
        super().__init__()
        self.net = reference_rcan_class()(
            scale=scale,
            n_resgroups=n_resgroups,
            n_resblocks=n_resblocks,
            n_feats=n_feats,
            reduction=reduction,
        )
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.clone())
