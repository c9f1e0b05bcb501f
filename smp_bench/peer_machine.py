"""The machine side of the peers suite (``benchmarks/peers.py``): how many cores other processes
kept busy while a section was timed (``/proc/stat`` less this process) and the CPU's vector
flags, for the report. Re-exported by ``smp_bench.peers``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuSnapshot:
    """Busy CPU seconds of the whole machine (/proc/stat) and of this process, at one instant."""

    wall_s: float
    machine_busy_s: float | None
    own_s: float


def cpu_snapshot(stat: str | None = None) -> CpuSnapshot:
    """Now: wall clock, the machine's busy seconds (user, nice, system, irq, softirq, steal;
    None off Linux) and this process's CPU seconds."""
    import os
    import time

    busy = None
    try:
        fields = (stat if stat is not None else Path("/proc/stat").read_text()).splitlines()[0].split()
        ticks = [int(x) for x in fields[1:9]]
        if fields[0] != "cpu" or len(ticks) != 8:
            raise ValueError(f"not a /proc/stat cpu line: {fields[:2]}")
        busy = (sum(ticks[:3]) + sum(ticks[5:8])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    times = os.times()
    return CpuSnapshot(time.perf_counter(), busy, times.user + times.system)


def other_cores(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    """How many cores others kept busy between two snapshots (the machine's busy time less this
    process's, per wall second): 0 on a quiet machine, whatever this run itself does."""
    wall = after.wall_s - before.wall_s
    if before.machine_busy_s is None or after.machine_busy_s is None or wall <= 0:
        return None
    other = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return max(0.0, other / wall)


_VECTOR_FLAG = re.compile(r"^(sse4|avx|fma|f16c|vnni|amx|bf16|vpclmul|gfni|vaes)|vnni|bf16|fp16")


def cpu_vector_flags(cpuinfo: str | None = None) -> list[str]:
    """Every vector-extension flag of the first processor in /proc/cpuinfo (``stats.cpu_isa``
    names only those the kernels use; OpenVINO also cares about e.g. ``avx512_bf16``)."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return [flag for flag in value.split() if _VECTOR_FLAG.search(flag)]
    return []
