"""Progress for people and for logs: tqdm bars on a terminal, one line per finished stage elsewhere.

Under CI, nohup or a pipe every redraw of a bar becomes a line of the log (the demo's log was
thousands of lines long); there, a finished stage prints one line with its time instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether stderr is a terminal (bars) rather than a log (stage lines)."""
    return sys.stderr.isatty()


def bar(iterable: Iterable | None = None, *, quiet: bool = False, **kwargs) -> tqdm:
    """A tqdm bar on a terminal; a disabled one in a log, where stage lines report instead."""
    return tqdm(iterable, disable=quiet or not on_terminal(), **kwargs)


def stage_line(text: str, seconds: float) -> None:
    """`text (12.3 s)` on stderr: one finished stage, for a log."""
    print(f"{text} ({seconds:.1f} s)", file=sys.stderr, flush=True)
