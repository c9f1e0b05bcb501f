"""Interleaved timing of named runners.

Every runner is called once per round, in the same order (A B C A B C ...), so slow machine
drift (thermal state, a neighbour's job, frequency scaling) lands on all of them alike and
cancels in their ratios; ``stats.speedup``'s ``pairwise`` ratio compares the calls of one round.
Warm-up rounds run the same way first and are kept apart: they never enter the statistics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import stats


@dataclass(frozen=True)
class Runner:
    """One thing to time: ``run()`` does one batch; ``sync()`` (optional) waits for the device
    (e.g. ``torch.cuda.synchronize``) and is inside the timed interval."""

    name: str
    run: Callable[[], Any]
    sync: Callable[[], Any] | None = None


@dataclass(frozen=True)
class TimingPlan:
    """``warmup`` untimed-for-statistics rounds, then ``runs`` timed rounds."""

    runs: int = 20
    warmup: int = 3

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass
class TimingResult:
    """Per-runner wall times in seconds, in call order within each runner."""

    names: list[str]
    batch_size: int
    times_s: dict[str, list[float]] = field(default_factory=dict)
    warmup_s: dict[str, list[float]] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)   # (phase, name) of every call

    def summary(self, name: str) -> dict[str, Any]:
        """``smp_bench.stats.summarize`` of the timed runs of ``name``."""
        return stats.summarize(self.times_s[name], self.batch_size)

    def speedup(self, name: str, reference: str) -> dict[str, Any]:
        """``smp_bench.stats.speedup`` of ``name`` over ``reference`` (> 1: ``name`` is faster)."""
        return stats.speedup(self.times_s[reference], self.times_s[name])

    def to_dict(self) -> dict[str, Any]:
        """Raw timings in milliseconds, JSON-ready."""
        return {"batch_size": self.batch_size,
                "times_ms": {n: [t * 1e3 for t in self.times_s[n]] for n in self.names},
                "warmup_ms": {n: [t * 1e3 for t in self.warmup_s[n]] for n in self.names},
                "order": [f"{phase}:{name}" for phase, name in self.order]}


def time_interleaved(runners: Sequence[Runner], plan: TimingPlan = TimingPlan(), *, batch_size: int,
                     clock: Callable[[], float] = time.perf_counter,
                     on_call: Callable[[str, str], None] | None = None) -> TimingResult:
    """Call every runner ``plan.warmup`` then ``plan.runs`` times, interleaved round by round.

    ``on_call(phase, name)`` is called after each call (phase ``warmup`` or ``timed``), e.g. to
    advance a progress bar; it is outside the timed interval.
    """
    names = [r.name for r in runners]
    if not runners:
        raise ValueError("no runners to time")
    if len(set(names)) != len(names):
        raise ValueError(f"runner names must be unique, got {names}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    result = TimingResult(names=names, batch_size=batch_size,
                          times_s={n: [] for n in names}, warmup_s={n: [] for n in names})
    for phase, rounds, store in (("warmup", plan.warmup, result.warmup_s),
                                 ("timed", plan.runs, result.times_s)):
        for _ in range(rounds):
            for runner in runners:
                start = clock()
                runner.run()
                if runner.sync is not None:
                    runner.sync()
                store[runner.name].append(clock() - start)
                result.order.append((phase, runner.name))
                if on_call is not None:
                    on_call(phase, runner.name)
    return result
