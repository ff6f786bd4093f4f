"""A run's progress: one overall bar on a terminal, one line per finished stage in a log."""

from __future__ import annotations

import time

from twostage.config import Profile
from twostage.data.splits import TestSet
from twostage.ops.progress import bar, on_terminal, stage_line
from twostage.recipes import Recipe


class Progress:
    """One overall bar whose units are training iterations (+ one per evaluated image); in a
    log (stderr not a terminal), one line per finished stage with its time instead."""

    def __init__(self, total: float, *, quiet: bool, desc: str) -> None:
        self.lines = not (quiet or on_terminal())
        self.desc, self.total, self.last = desc, max(1.0, total), time.perf_counter()
        self.bar = bar(
            total=self.total,
            desc=desc,
            unit="it",
            quiet=quiet,
            position=0,
            leave=True,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining} overall]{postfix}",
        )
        self.done = 0.0

    def __call__(self, amount: float, what: str) -> None:
        amount = min(amount, self.total - self.done)
        self.done += amount
        self.bar.update(amount)
        self.bar.set_postfix_str(what, refresh=True)
        if self.lines:
            now = time.perf_counter()
            stage_line(f"{self.desc} {100 * self.done / self.total:3.0f}%: {what}", now - self.last)
            self.last = now

    def close(self) -> None:
        self.bar.close()


def estimate(recipe: Recipe, profile: Profile, tests: list[TestSet], seeds: int) -> float:
    """The overall bar's total: training iterations of every network, one per evaluated image."""
    per_seed = 0.0
    for net in recipe.needed_networks():
        iters = profile.iterations_for(net.role)
        per_seed += iters * (len(recipe.degradations) if net.per_degradation else 1)
    per_seed += sum(len(t.split.names) for t in tests) * len(recipe.branches)
    return per_seed * seeds
