"""smp_bench.stats: hand-computed summaries, speed-ups, memory and environment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smp_bench import stats


def test_summarize_hand_computed() -> None:
    times = [0.010, 0.020, 0.030, 0.040]               # seconds
    out = stats.summarize(times, batch_size=8)
    assert out["n"] == 4 and out["batch_size"] == 8
    assert out["p50_ms"] == pytest.approx(25.0)        # halfway between 20 and 30
    assert out["p90_ms"] == pytest.approx(37.0)        # 30 + 0.7 * 10 (rank 2.7)
    assert out["p99_ms"] == pytest.approx(39.7)
    assert out["mean_ms"] == pytest.approx(25.0)
    assert out["std_ms"] == pytest.approx(np.std([10, 20, 30, 40], ddof=1))
    assert (out["min_ms"], out["max_ms"]) == pytest.approx((10.0, 40.0))
    assert out["throughput_seq_s"] == pytest.approx(8 / 0.025)


def test_summarize_matches_numpy_percentile() -> None:
    times = list(np.random.default_rng(0).gamma(2.0, 0.01, size=37))
    out = stats.summarize(times, batch_size=1)
    for q in (50, 90, 99):
        assert out[f"p{q}_ms"] == pytest.approx(np.percentile(times, q) * 1e3)


def test_summarize_single_run() -> None:
    out = stats.summarize([0.5], batch_size=2)
    assert out["std_ms"] == 0.0 and out["p99_ms"] == pytest.approx(500.0)
    assert out["throughput_seq_s"] == pytest.approx(4.0)


@pytest.mark.parametrize("times", [[], [float("nan")], [-0.1, 0.2]])
def test_summarize_rejects_bad_input(times: list[float]) -> None:
    with pytest.raises(ValueError):
        stats.summarize(times, batch_size=1)


def test_summarize_rejects_bad_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        stats.summarize([0.1], batch_size=0)


def test_speedup_ratio_and_pairwise() -> None:
    base = [0.10, 0.20, 0.30]
    new = [0.05, 0.05, 0.20]
    out = stats.speedup(base, new)
    assert out["ratio_of_medians"] == pytest.approx(0.20 / 0.05)
    assert out["pairwise"] == pytest.approx(2.0)       # median of 2, 4, 1.5
    assert out["n_pairs"] == 3
    assert out["baseline_median_ms"] == pytest.approx(200.0)


def test_speedup_unequal_lengths_has_no_pairwise() -> None:
    out = stats.speedup([0.2, 0.2], [0.1])
    assert out["ratio_of_medians"] == pytest.approx(2.0)
    assert out["pairwise"] is None and out["n_pairs"] == 0


def test_speedup_rejects_empty() -> None:
    with pytest.raises(ValueError, match="baseline_times"):
        stats.speedup([], [0.1])
    with pytest.raises(ValueError, match="times"):
        stats.speedup([0.1], [])


def test_memory_readings() -> None:
    peak, current = stats.peak_rss_mb(), stats.current_rss_mb()
    assert peak is not None and peak > 1
    assert current is not None and 1 < current <= peak * 1.5


def test_environment_is_json_and_hostname_free(monkeypatch) -> None:
    """Whatever the host is called, no field names it: every way Python reads the hostname is
    made to return a sentinel, which must not appear anywhere in the record."""
    import os
    import platform
    import socket

    sentinel = "hostname-sentinel-7f3a9c"
    monkeypatch.setattr(socket, "gethostname", lambda: sentinel)
    monkeypatch.setattr(socket, "getfqdn", lambda *a: sentinel)
    monkeypatch.setattr(platform, "node", lambda: sentinel)
    real_uname = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((real_uname.sysname, sentinel, real_uname.release,
                                                              real_uname.version, real_uname.machine)))
    monkeypatch.setattr(platform, "_uname_cache", None, raising=False)   # platform.uname() reads os.uname() again
    assert sentinel in json.dumps({"node": platform.node(), "uname": os.uname()})   # the sentinel is in place
    env = stats.environment()
    text = json.dumps(env)
    assert env["logical_cores"] >= 1 and env["cpu_model"]
    assert "onnxruntime" in env["versions"] and "numpy" in env["versions"]
    assert env["python"] and env["timestamp"].endswith("+00:00")
    assert sentinel not in text


def test_cpu_isa_names_family_model_and_vector_extensions(tmp_path, monkeypatch):
    from smp_bench import stats
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nflags\t\t: fpu sse avx2 fma\n\n"
                    "processor\t: 1\ncpu family\t: 99\nflags\t\t: avx512f\n")
    monkeypatch.setattr(stats, "_CPUINFO", info)
    assert stats.cpu_isa() == "family 25 model 1: avx2 fma"
    monkeypatch.setattr(stats, "_CPUINFO", tmp_path / "missing")
    assert stats.cpu_isa() == ""
