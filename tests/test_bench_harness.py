"""smp_bench: interleaved timing, accuracy metrics, flat records and writers, plot, profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smp_bench import accuracy as acc
from smp_bench import profile as prof
from smp_bench import records
from smp_bench import stats
from smp_bench.harness import Runner, TimingPlan, time_interleaved
from smp_bench.records import (build_record, is_flat, markdown_table, read_json, terminal_table, write_json,
                               write_markdown)


class FakeClock:
    """Each runner call advances time by that runner's cost; warm-up calls cost extra."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _runners(clock: FakeClock, costs: dict[str, float], calls: list[str]) -> list[Runner]:
    def make(name: str):
        def run() -> None:
            calls.append(name)
            clock.now += costs[name] * (10.0 if calls.count(name) <= 2 else 1.0)   # first 2 calls: cold
        return run
    return [Runner(name, make(name)) for name in costs]


def test_interleaved_order_and_warmup_excluded() -> None:
    clock, calls = FakeClock(), []
    result = time_interleaved(_runners(clock, {"A": 0.010, "B": 0.005}, calls), TimingPlan(runs=3, warmup=2),
                              batch_size=4, clock=clock)
    assert calls == ["A", "B"] * 5                                   # A B A B ..., warm-up included
    assert result.order[:4] == [("warmup", "A"), ("warmup", "B")] * 2
    assert [n for phase, n in result.order if phase == "timed"] == ["A", "B"] * 3
    assert result.warmup_s["A"] == pytest.approx([0.1, 0.1])         # the cold calls ...
    assert result.times_s["A"] == pytest.approx([0.01] * 3)          # ... never reach the statistics
    assert result.summary("B")["p50_ms"] == pytest.approx(5.0)
    assert result.summary("B")["throughput_seq_s"] == pytest.approx(800.0)
    speed = result.speedup("B", "A")
    assert speed["ratio_of_medians"] == pytest.approx(2.0) and speed["pairwise"] == pytest.approx(2.0)
    raw = result.to_dict()
    assert raw["times_ms"]["A"] == pytest.approx([10.0] * 3) and raw["order"][0] == "warmup:A"


def test_sync_is_inside_the_timed_interval_and_on_call_reports() -> None:
    clock, seen = FakeClock(), []
    def sync() -> None:
        clock.now += 0.5
    runner = Runner("gpu", lambda: None, sync)
    result = time_interleaved([runner], TimingPlan(runs=2, warmup=1), batch_size=1, clock=clock,
                              on_call=lambda phase, name: seen.append((phase, name)))
    assert result.times_s["gpu"] == pytest.approx([0.5, 0.5])
    assert seen == [("warmup", "gpu"), ("timed", "gpu"), ("timed", "gpu")]


@pytest.mark.parametrize("kwargs, message", [({"runs": 0}, "runs"), ({"warmup": -1}, "warmup")])
def test_timing_plan_rejects_bad_counts(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TimingPlan(**kwargs)


def test_runner_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        time_interleaved([Runner("a", lambda: None), Runner("a", lambda: None)], batch_size=1)
    with pytest.raises(ValueError, match="no runners"):
        time_interleaved([], batch_size=1)


# ---------------------------------------------------------------------------- accuracy

def test_mean_pool_ignores_padding() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    pooled = acc.mean_pool(hidden, np.array([[1, 1, 0]]), normalize=False)
    assert pooled == pytest.approx(np.array([[2.0, 0.0]]))


def test_cosine_and_nearest_centroid() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    assert acc.cosine_agreement(ref, ref * 3.0) == pytest.approx({"cosine_mean": 1.0, "cosine_min": 1.0})
    flipped = ref[:, ::-1]
    out = acc.cosine_agreement(ref, flipped)
    assert out["cosine_min"] < 0.2
    names, cents = acc.centroids(ref, ["x", "y", "x", "y"])
    assert names == ["x", "y"]
    assert acc.nearest_centroid_predict(ref, names, cents) == ["x", "y", "x", "y"]
    metrics = acc.evaluate("embeddings", ref, flipped, labels=["x", "y", "x", "y"], centroid_model=(names, cents))
    assert metrics["task_accuracy"] == 0.0 and "nearest-centroid" in metrics["task_metric"]


def test_logits_agreement_and_label_mapping() -> None:
    ref = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    out = ref.copy()
    out[2] = [0.0, 3.0, 0.5]
    m = acc.logits_agreement(ref, out)
    assert m["argmax_agreement"] == pytest.approx(2 / 3) and m["max_abs_logit_diff"] == pytest.approx(3.0)
    mapping = acc.label_index({0: "Entailment", 1: "neutral", 2: "contradiction"}, ["entailment", "neutral"])
    assert mapping == {"entailment": 0, "neutral": 1}
    assert acc.label_index({0: "LABEL_0", 1: "LABEL_1"}, ["0", "1"]) == {"0": 0, "1": 1}
    assert acc.label_index({0: "pos", 1: "neg"}, ["sports"]) is None
    assert acc.logits_accuracy(out, ["a", "b", "c"], {"a": 0, "b": 1, "c": 2}) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        acc.logits_agreement(ref, out[:2])


# ---------------------------------------------------------------------------- records and writers

def _records() -> list[dict]:
    env = stats.environment()
    env["torch_threads"] = 2
    base = {"backend": "onnxruntime", "family": "dense", "sparsity": 0.0, "is_reference": True,
            "reference": "ort-dense", "onnx_bytes": 2**20, "load_s": 0.1, "seq_len": 8, "warmup": 1}
    recs = []
    for name, times, sparsity, family in (("ort-dense", [0.02, 0.021, 0.019], 0.0, "dense"),
                                          ("compact@0.90", [0.01, 0.011, 0.009], 0.9, "compact"),
                                          ("torch-csr@0.90", [0.05, 0.04, 0.06], 0.9, "csr")):
        info = dict(base, family=family, sparsity=sparsity, is_reference=name == "ort-dense",
                    backend="torch" if family == "csr" else "onnxruntime")
        recs.append(build_record(name, info=info, summary=stats.summarize(times, 4),
                                 speedup=stats.speedup([0.02, 0.021, 0.019], times),
                                 extra={"cosine_mean": 0.99, "cosine_min": 0.9, "task_accuracy": 0.5,
                                        "peak_rss_mb": 123.0, "nested": {"a": [1, 2]}},
                                 environment=env, command="smp-bench --batch 4"))
    return recs


def test_records_are_flat_and_carry_the_environment(tmp_path: Path) -> None:
    recs = _records()
    assert all(is_flat(r) for r in recs)
    r = recs[1]
    assert r["speedup"] == pytest.approx(2.0) and r["speedup_pairwise"] == pytest.approx(2.0)
    assert r["env_cpu_model"] and r["env_logical_cores"] >= 1 and r["version_numpy"]
    assert r["env_torch_threads"] == 2 and r["command"] == "smp-bench --batch 4"
    assert r["nested_a"] == "1,2"                           # nested values flattened
    path = write_json(tmp_path / "results.json", recs, skipped=[])
    assert read_json(path)[1]["name"] == "compact@0.90"
    assert json.loads(path.read_text())["schema_version"] == records.SCHEMA_VERSION == 2
    with pytest.raises(ValueError, match="not flat"):
        write_json(tmp_path / "bad.json", [{"name": "x", "list": [1]}])


def test_markdown_and_terminal_tables(tmp_path: Path) -> None:
    recs = _records()
    md = write_markdown(tmp_path / "results.md", recs, plot="results.png").read_text()
    assert md.count("\n| ") >= 4 and "compact@0.90" in md and "2.00x" in md and "cos 0.9900" in md
    assert "CPU:" in md and "command: `smp-bench --batch 4`" in md and "![" in md
    table = terminal_table(recs)
    assert len(table.splitlines()) == 5 and "p50 ms" in table
    assert markdown_table(recs).splitlines()[1].startswith("| ---")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from smp_bench.plot import plot_results

    path = plot_results(_records(), tmp_path / "results.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plot_refuses_nothing_to_plot(tmp_path: Path) -> None:
    from smp_bench.plot import PlotError, plot_results

    with pytest.raises(PlotError):
        plot_results([{"name": "x"}], tmp_path / "x.png")


# ---------------------------------------------------------------------------- profile

@pytest.mark.parametrize("name, op, info, category", [
    ("/encoder/layer.0/attention/self/query/MatMul", "MatMul", None, "pruned_linears"),
    ("/encoder/layer.3/output/dense/Add", "Add", None, "pruned_linears"),
    ("fused_17", "FusedMatMul", prof.NodeInfo("FusedMatMul", "", ("x", "encoder.layer.1.intermediate.dense.weight_t")),
     "pruned_linears"),
    ("sparse_0", "CsrMatMul", prof.NodeInfo("CsrMatMul", "ai.smp", ("x",)), "pruned_linears"),
    ("/encoder/layer.0/output/dense/SparseLinear", "SparseLinear", prof.NodeInfo("SparseLinear", "ai.smp", ("x",)),
     "pruned_linears"),
    ("/encoder/layer.0/attention/self/Attention", "Attention", prof.NodeInfo("Attention", "ai.smp", ("q",)),
     "attention"),
    ("/encoder/layer.0/attention/self/MultiHeadAttention", "MultiHeadAttention",
     prof.NodeInfo("MultiHeadAttention", "com.microsoft", ("q",)), "attention"),
    ("/encoder/layer.0/attention/self/query/Reshape", "Reshape", None, "attention"),
    ("/encoder/layer.0/attention/self/MatMul/MatMulScaleFusion/", "FusedMatMul", None, "attention"),
    ("/encoder/layer.0/attention/self/Softmax", "Softmax", None, "attention"),
    ("/mask/Cast", "Cast", None, "attention"),
    ("/encoder/layer.0/output/LayerNorm/LayerNormalization", "LayerNormalization", None, "layer_norm"),
    ("/embeddings/word_embeddings/Gather", "Gather", None, "embeddings"),
    ("BiasGelu_token_5", "BiasGelu", None, "activation"),
    ("/encoder/layer.0/intermediate/intermediate_act_fn/Erf", "Erf", None, "activation"),
    ("/encoder/layer.0/output/Add", "Add", None, "other"),
    ("/pooler/dense/MatMul", "MatMul", prof.NodeInfo("MatMul", "", ("x", "pooler.dense.weight_t")), "other"),
])
def test_categorize(name, op, info, category) -> None:
    assert prof.categorize(name, op, info) == category


def _event(name: str, op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_parse_trace_groups_per_run_and_skips_warmup() -> None:
    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 1000},
              _event("/encoder/layer.0/attention/self/query/MatMul", "MatMul", 10, 900),   # warm-up run
              {"cat": "Session", "name": "model_run", "ts": 2000, "dur": 100},
              _event("/encoder/layer.0/attention/self/query/MatMul", "MatMul", 2010, 60),
              _event("/encoder/layer.0/attention/self/query/MatMul", "MatMul", 2010, 60, ) | {"name": "x_fence_before"},
              _event("/embeddings/LayerNorm/LayerNormalization", "LayerNormalization", 2070, 20),
              {"cat": "Session", "name": "model_run", "ts": 3000, "dur": 300},
              _event("/encoder/layer.0/attention/self/Softmax", "Softmax", 3010, 200)]
    s = prof.parse_trace(events, skip_runs=1)
    assert s.runs == 2 and s.run_ms == pytest.approx(0.2)
    assert s.category_ms["pruned_linears"] == pytest.approx(0.03)       # 60 us over 2 runs
    assert s.category_ms["attention"] == pytest.approx(0.1)
    assert s.category_ms["layer_norm"] == pytest.approx(0.01)
    assert sum(s.fractions().values()) == pytest.approx(1.0)
    fields = s.to_fields()
    assert fields["profile_attention_pct"] == pytest.approx(100 * 0.1 / 0.14)
    with pytest.raises(ValueError, match="model_run"):
        prof.parse_trace(events[:2], skip_runs=1)


def test_profile_a_tiny_export(tmp_path: Path) -> None:
    from smp_export.export import ExportOptions, export_onnx
    from tests.helpers import tiny_checkpoint

    out = tmp_path / "tiny"
    export_onnx(tiny_checkpoint(), out, options=ExportOptions(weights="sparse-initializer", validate=False))
    ids = np.random.default_rng(0).integers(1, 100, size=(2, 8))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    s = prof.profile_model(out / "model.onnx", feeds, runs=2, intra_op_threads=1, trace_dir=tmp_path / "t")
    assert s.runs == 2 and Path(s.trace).is_file()
    assert s.category_ms["pruned_linears"] > 0 and s.category_ms["attention"] > 0
    assert s.category_ms["layer_norm"] > 0 and s.category_ms["embeddings"] > 0
    assert "MatMul" in s.op_ms
    text = prof.format_profile({"tiny": s})
    assert "pruned_linears" in text and "tiny" in text


@pytest.mark.slow
def test_memprobe_runs_in_its_own_process(tmp_path: Path) -> None:
    from smp_bench.memprobe import probe_in_subprocess
    from smp_export.export import ExportOptions, export_onnx
    from tests.helpers import tiny_checkpoint

    out = tmp_path / "tiny"
    export_onnx(tiny_checkpoint(), out, options=ExportOptions(weights="dense", validate=False))
    got = probe_in_subprocess(["-m", "smp_bench.memprobe", str(out), "--batch", "2", "--seq-len", "8"])
    assert got["peak_rss_mb"] >= got["import_rss_mb"] > 0 and got["load_s"] > 0


def test_harness_and_memprobe_never_import_torch() -> None:
    """The harness measures exports without the training stack, and the memory probe of an
    export must not count torch's resident memory."""
    code = ("import sys, smp_bench, smp_bench.harness, smp_bench.records, smp_bench.accuracy, smp_bench.stats, "
            "smp_bench.plot, smp_bench.profile, smp_bench.memprobe, smp_bench.data; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('smp_train', 'torch', 'transformers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
