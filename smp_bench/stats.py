"""The one statistics module of the benchmarks: latency summaries, speed-ups, memory, environment."""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from smp_export.versions import collect_versions

_MIB = 1024 * 1024


def _validated(times_s: Sequence[float], name: str = "times_s") -> np.ndarray:
    arr = np.asarray(list(times_s), dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: at least one timing is needed")
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite, non-negative seconds")
    return arr


def summarize(times_s: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Latency summary of per-batch wall times (seconds); latencies are reported in ms.

    Percentiles interpolate linearly (numpy.percentile's default); ``std_ms`` is the sample
    standard deviation (0 for one run); throughput is ``batch_size / median`` sequences/s.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    arr = _validated(times_s)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "n": int(arr.size),
        "batch_size": int(batch_size),
        "mean_ms": float(arr.mean() * 1e3),
        "std_ms": float(arr.std(ddof=1) * 1e3) if arr.size > 1 else 0.0,
        "min_ms": float(arr.min() * 1e3),
        "max_ms": float(arr.max() * 1e3),
        "p50_ms": float(p50 * 1e3),
        "p90_ms": float(p90 * 1e3),
        "p99_ms": float(p99 * 1e3),
        "throughput_seq_s": float(batch_size / p50) if p50 > 0 else None,
    }


def speedup(baseline_times: Sequence[float], times: Sequence[float]) -> dict[str, Any]:
    """How much faster ``times`` is than ``baseline_times`` (> 1: faster).

    ``ratio_of_medians`` compares the medians; ``pairwise`` is the median of the per-run ratios
    ``baseline[i] / times[i]`` (meaningful for interleaved runs; None unless lengths are equal).
    """
    base = _validated(baseline_times, "baseline_times")
    new = _validated(times, "times")
    base_med, new_med = float(np.median(base)), float(np.median(new))
    pairwise = None
    if base.size == new.size and np.all(new > 0):
        pairwise = float(np.median(base / new))
    return {
        "baseline_median_ms": base_med * 1e3,
        "median_ms": new_med * 1e3,
        "ratio_of_medians": base_med / new_med if new_med > 0 else None,
        "pairwise": pairwise,
        "n_pairs": int(base.size) if pairwise is not None else 0,
    }


def peak_rss_mb() -> float | None:
    """This process's own peak resident set size in MiB (None where unknown).

    Reads ``VmHWM`` from /proc/self/status. ``getrusage``'s ``ru_maxrss`` is only the
    fallback (off Linux): Linux carries it over fork and exec, so a probe process started by a
    big benchmark process would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return maxrss / _MIB if sys.platform == "darwin" else maxrss / 1024


def current_rss_mb() -> float | None:
    """Current resident set size in MiB from /proc/self/statm (None off Linux)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB


def machine_slug(cpu_model: str) -> str:
    """The machine part of a results file's name, as benchmarks/_record.sh makes it:
    ``Intel(R) Xeon(R) Processor`` -> ``Intel-R-Xeon-R-Processor`` (no characters a shell quotes)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model).strip("-")[:40].rstrip("-")
    return slug or "unknown-cpu"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_CPUINFO = Path("/proc/cpuinfo")
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_isa() -> str:
    """The CPU's family / model and the vector extensions the kernels care about, from
    /proc/cpuinfo (e.g. ``family 26 model 2: avx2 fma avx512f ...``); "" where unreadable."""
    try:
        info = _CPUINFO.read_text()
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            break                          # the first processor's block only
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return (f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}: "
            + " ".join(f for f in _ISA_FLAGS if f in flags))


def _onnxruntime_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def environment() -> dict[str, Any]:
    """What shaped a measurement, without the hostname: CPU, cores, versions, platform, time."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": collect_versions(),
        "onnxruntime_providers": _onnxruntime_providers(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = ["summarize", "speedup", "peak_rss_mb", "current_rss_mb", "cpu_model", "cpu_isa", "environment"]
