"""The peers suite's logic without timing: ratios and the fastest dense peer, accuracy scoring,
the report files, and the row builders skipping with a reason when their package is absent
(``smp_bench.peers``, ``benchmarks/peer_rows.py``, ``benchmarks/peer_deepsparse.py``,
``benchmarks/peer_deepsparse_group.py``, ``benchmarks/peers.py``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from smp_bench import peers as P
from smp_bench.stats import machine_slug

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    """A benchmarks/ script as a module (registered under its name: the scripts import each other so)."""
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(BENCH / f"{name}.py"):
        return sys.modules[name]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows_mod():
    return _load("peer_rows")


@pytest.fixture(scope="module")
def ds_mod():
    return _load("peer_deepsparse")


@pytest.fixture(scope="module")
def ds_group():
    return _load("peer_deepsparse_group")


@pytest.fixture(scope="module")
def suite():
    import os

    before = os.environ.get("OMP_WAIT_POLICY")
    module = _load("peers")          # sets OMP_WAIT_POLICY for its own run: not for this process
    if before is None:
        os.environ.pop("OMP_WAIT_POLICY", None)
    return module


def _info(name, dense=True, model="unpruned", precision="fp32", runtime="onnxruntime", foreign=False):
    return P.RowInfo(name, runtime, model, precision, f"made {name}", dense, 1024, f"/x/{name}", foreign=foreign)


TIMES = {"ort-dense": [0.30, 0.32, 0.31], "ort-int8": [0.15, 0.16, 0.155], "openvino-int8": [0.08, 0.07, 0.075],
         "sparse-kernel@0.90": [0.05, 0.06, 0.055]}


# ---------------------------------------------------------------------------- ratios

def test_the_fastest_dense_peer_is_the_lowest_median_among_dense_rows_only():
    speeds = P.speed_fields(TIMES, 32, dense_peers=["ort-dense", "ort-int8", "openvino-int8"])
    assert {f["fastest_dense_peer"] for f in speeds.values()} == {"openvino-int8"}
    assert speeds["openvino-int8"]["vs_fastest_dense"] == pytest.approx(1.0)
    assert speeds["sparse-kernel@0.90"]["vs_fastest_dense"] == pytest.approx(0.075 / 0.055)
    assert speeds["ort-dense"]["vs_reference"] == pytest.approx(1.0)
    assert speeds["ort-int8"]["vs_reference"] == pytest.approx(0.31 / 0.155)
    assert speeds["ort-int8"]["vs_reference_pairwise"] == pytest.approx(np.median([2.0, 2.0, 2.0]))
    assert speeds["ort-int8"]["p50_ms"] == pytest.approx(155.0)
    assert speeds["ort-int8"]["throughput_seq_s"] == pytest.approx(32 / 0.155)


def test_a_faster_kernel_row_is_never_the_dense_bar():
    assert P.fastest(TIMES, ["ort-dense", "ort-int8"]) == "ort-int8"
    assert P.fastest(TIMES, []) is None
    assert P.fastest(TIMES, ["not-timed"]) is None
    speeds = P.speed_fields(TIMES, 1, dense_peers=[])
    assert "vs_fastest_dense" not in speeds["ort-int8"]


def test_the_reference_must_be_timed():
    with pytest.raises(ValueError, match="ort-dense"):
        P.speed_fields({"ort-int8": [0.1]}, 1)


def test_foreign_rows_are_chained_through_their_own_reference():
    main = P.speed_fields(TIMES, 32, dense_peers=["ort-dense", "ort-int8", "openvino-int8"])
    foreign = P.speed_fields({"own": [0.2, 0.2], "deepsparse": [0.1, 0.1]}, 32, reference="own")
    chained = P.chained_fields(foreign, main)
    best = main["openvino-int8"]["vs_reference"]
    assert chained["deepsparse"]["vs_reference"] == pytest.approx(2.0)
    assert chained["deepsparse"]["vs_fastest_dense"] == pytest.approx(2.0 / best)
    assert chained["deepsparse"]["fastest_dense_peer"] == "openvino-int8"
    # in-process, the chain gives the direct ratio of medians
    assert main["ort-int8"]["vs_reference"] / best == pytest.approx(main["ort-int8"]["vs_fastest_dense"])


# ---------------------------------------------------------------------------- accuracy

def test_eval_vectors_pool_real_tokens_and_refuse_unknown_kinds():
    hidden = np.zeros((1, 3, 2), dtype=np.float32)
    hidden[0, 0] = [1, 0]
    hidden[0, 1] = [1, 0]
    hidden[0, 2] = [0, 100]                        # padding: must not count
    pooled = P.eval_vectors(P.EMBEDDINGS, hidden, np.array([[1, 1, 0]]))
    np.testing.assert_allclose(pooled, [[1.0, 0.0]], atol=1e-6)
    assert P.eval_vectors(P.LOGITS, np.ones((2, 5)), np.ones((2, 3))).shape == (2, 5)
    with pytest.raises(ValueError):
        P.eval_vectors("probabilities", hidden, np.ones((1, 3)))


def test_embedding_rows_get_cosine_and_nearest_centroid_accuracy():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 8))
    labels = ["a" if row[0] > 0 else "b" for row in ref]
    cents = (["a", "b"], np.stack([np.eye(8)[0], -np.eye(8)[0]]))
    outputs = {"ort-dense": ref, "same": ref.copy(), "noisy": ref + rng.normal(scale=3.0, size=ref.shape),
               "other-shape": ref[:, :4]}
    scored = P.score_rows(P.EMBEDDINGS, outputs, labels=labels, centroid_model=cents)
    assert scored["same"]["cosine_mean"] == pytest.approx(1.0)
    assert scored["same"]["task_accuracy"] == scored["ort-dense"]["task_accuracy"] == 1.0
    assert scored["noisy"]["cosine_mean"] < 0.9 and scored["noisy"]["task_accuracy"] < 1.0
    assert "eval_note" in scored["other-shape"] and "cosine_mean" not in scored["other-shape"]


def test_logit_rows_get_argmax_agreement_head_accuracy_and_logit_cosine():
    ref = np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])
    flipped = ref[:, ::-1].copy()
    scored = P.score_rows(P.LOGITS, {"ort-dense": ref, "flipped": flipped}, labels=["x", "y", "x", "x"],
                          label_map={"x": 0, "y": 1})
    assert scored["ort-dense"]["task_accuracy"] == pytest.approx(1.0 - 1 / 4)
    assert scored["flipped"]["argmax_agreement"] == 0.0
    assert scored["flipped"]["task_accuracy"] == pytest.approx(1 / 4)
    assert scored["flipped"]["cosine_mean"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        P.score_rows(P.LOGITS, {"flipped": flipped})


def test_each_row_is_compared_with_the_fp32_row_of_its_own_model():
    infos = [_info("ort-dense"), _info("ort-int8", precision="int8"), _info("dense@0.90", model="pruned"),
             _info("dense-int8@0.90", model="pruned", precision="int8"),
             _info("sparse-kernel@0.90", dense=False, model="pruned"),
             _info("deepsparse x", model="pruned", runtime="deepsparse", foreign=True)]
    twins = P.fp32_twins(infos)
    assert twins["ort-int8"] == "ort-dense" and twins["dense-int8@0.90"] == "dense@0.90"
    assert twins["sparse-kernel@0.90"] == "dense@0.90" and twins["deepsparse x"] == "dense@0.90"
    vectors = {"ort-dense": np.eye(3), "dense@0.90": np.eye(3)[::-1], "dense-int8@0.90": np.eye(3)[::-1]}
    fields = P.twin_fields(vectors, twins)
    assert fields["dense-int8@0.90"]["twin_cosine_mean"] == pytest.approx(1.0)
    assert "ort-int8" not in fields                      # no outputs: no field


# ---------------------------------------------------------------------------- rows and report

def _rows():
    infos = [_info("ort-dense"), _info("ort-int8", precision="int8"), _info("openvino-int8", runtime="openvino"),
             _info("sparse-kernel@0.90", dense=False, model="pruned"), _info("never-timed")]
    speeds = P.speed_fields(TIMES, 32, dense_peers=["ort-dense", "ort-int8", "openvino-int8"])
    evals = {"ort-dense": {"task_accuracy": 0.87, "cosine_mean": 1.0, "cosine_min": 1.0}}
    rows = P.build_rows("shipped", 32, infos, speeds, evals)
    foreign = P.speed_fields({"own": [0.3], "deepsparse dense@0.90": [0.1]}, 32, reference="own")
    rows += P.build_rows("shipped", 32, [_info("deepsparse dense@0.90", runtime="deepsparse", foreign=True)],
                         P.chained_fields(foreign, speeds), {})
    return rows


def test_rows_are_flat_in_order_and_only_the_timed_ones():
    rows = _rows()
    assert [r["name"] for r in rows] == ["ort-dense", "ort-int8", "openvino-int8", "sparse-kernel@0.90",
                                         "deepsparse dense@0.90"]
    assert rows[0]["task_accuracy"] == 0.87 and rows[0]["group"] == "shipped" and rows[0]["batch_size"] == 32
    assert all(isinstance(v, (str, int, float, bool, type(None))) for r in rows for v in r.values())
    assert P.sections(rows)[0][:2] == ("shipped", 32)


def test_the_report_files_hold_every_row_the_bar_and_the_reasons(tmp_path):
    skipped = [P.Skipped("shipped", "openvino-bf16", "the OpenVINO CPU plugin offers no BF16 | here")]
    meta = {"command": "python benchmarks/peers.py --quick", "seq_len": 128, "threads": 2,
            "environment": {"cpu_model": "Test CPU", "cpu_isa": "family 1 model 2: avx2"},
            "groups": {"shipped": "the shipped checkpoint"}, "versions": {"openvino": "1.0"}}
    files = P.write_results(tmp_path / "out", _rows(), skipped=skipped, notes=["a note"], meta=meta,
                            timings={"shipped/batch32": {"x": [1.0]}})
    payload = json.loads(files["results.json"].read_text())
    assert payload["schema"] == P.SCHEMA and len(payload["records"]) == 5
    assert payload["skipped"][0]["name"] == "openvino-bf16" and payload["meta"]["command"].endswith("--quick")
    assert json.loads(files["timings.json"].read_text())["timings"]["shipped/batch32"] == {"x": [1.0]}
    md = files["results.md"].read_text()
    assert "Fastest dense peer: `openvino-int8`" in md and "deepsparse dense@0.90 †" in md
    assert "| sparse-kernel@0.90 | onnxruntime | pruned | fp32 | 55.0 |" in md
    assert "offers no BF16 / here" in md and "a note" in md and "family 1 model 2: avx2" in md
    assert "`python benchmarks/peers.py --quick`" in md and "the shipped checkpoint" in md
    assert "- shipped `ort-int8`: made ort-int8" in md
    text = P.table(_rows(), markdown=False)
    assert text.splitlines()[0].startswith("row") and "4.13x" in text    # 0.31 / 0.075


def test_results_folder_and_index_line(tmp_path):
    assert machine_slug("AMD EPYC 9B45 64-Core Processor") == "AMD-EPYC-9B45-64-Core-Processor"
    assert machine_slug("???") == "unknown-cpu"
    assert machine_slug("Intel(R) Xeon(R) Processor") == "Intel-R-Xeon-R-Processor"
    out = P.results_dir(tmp_path, "20260101-000000", "AMD EPYC")
    assert out.name == "20260101-000000-peers-AMD-EPYC"
    index = tmp_path / "INDEX.md"
    index.write_text("| date (UTC) | suite |\n| --- | --- |\n| 1 | demo |\n\nNotes after the table.\n")
    P.add_index_row(index, P.index_row("20260101-000000", "AMD EPYC", 2, "python benchmarks/peers.py", out))
    lines = index.read_text().splitlines()
    assert lines[3].startswith("| 20260101-000000 | peers | AMD EPYC | 2 | `python benchmarks/peers.py` |")
    assert f"({out.name}/results.md)" in lines[3] and lines[-1] == "Notes after the table."
    fresh = tmp_path / "new" / "INDEX.md"
    fresh.parent.mkdir()
    P.add_index_row(fresh, "| x |")
    assert fresh.read_text().splitlines()[2] == "| x |"


# ---------------------------------------------------------------------------- builders

def _tiny_export(directory: Path) -> Path:
    """A dense-export-shaped directory: model.onnx (logits = mean(float(ids)) * [1, -1]) + config.json."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["mf", "ax"], ["ms"], keepdims=1),
             helper.make_node("Add", ["m", "ms"], ["s"]),
             helper.make_node("MatMul", ["s", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])],
        [numpy_helper.from_array(np.array([[1.0, -1.0]], dtype=np.float32), "w"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "model.onnx"))
    (directory / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    return directory


FEEDS = {"input_ids": np.array([[2, 4], [6, 8], [1, 1]], dtype=np.int64), "attention_mask": np.ones((3, 2), np.int64),
         "token_type_ids": np.zeros((3, 2), np.int64)}
WANT = np.array([[5.0, -5.0], [9.0, -9.0], [3.0, -3.0]])    # (mean ids + mask sum) * [1, -1]


def test_openvino_and_nncf_absent_are_skipped_with_the_venv_and_the_fix(rows_mod, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    got = rows_mod.openvino_rows(tmp_path / "model.onnx", tmp_path, 2, "unpruned", [], "shipped")
    assert [s.name for s in got] == list(rows_mod.OPENVINO_ROWS)
    assert all(isinstance(s, P.Skipped) and "openvino not installed in" in s.reason and sys.prefix in s.reason
               and "make peers-setup" in s.reason for s in got)


def test_optimum_absent_or_a_missing_cpu_flag_skips_with_the_reason(rows_mod, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optimum.onnxruntime", None)
    got = rows_mod.optimum_rows(tmp_path, tmp_path, 2, "unpruned", ["avx2"], "g")
    assert {s.name for s in got} == set(rows_mod.OPTIMUM_CONFIGS)
    assert all("optimum-onnx not installed" in s.reason for s in got)
    monkeypatch.undo()
    pytest.importorskip("optimum.onnxruntime")
    monkeypatch.setattr(rows_mod, "OPTIMUM_CONFIGS", {"optimum-avx512-vnni": ("avx512_vnni", "avx512_vnni")})
    got = rows_mod.optimum_rows(tmp_path, tmp_path, 2, "unpruned", ["avx2", "fma"], "g")
    assert len(got) == 1 and "this CPU has no avx512_vnni" in got[0].reason


def test_an_ort_row_runs_the_export_by_path(rows_mod, tmp_path):
    export = _tiny_export(tmp_path / "tiny")
    row = rows_mod.ort_row(_info("ort-dense", ), export, 1)
    assert row.output == "logits"
    np.testing.assert_allclose(row.infer(FEEDS), WANT, rtol=1e-6)
    (logits,) = row.bind(FEEDS)()
    np.testing.assert_allclose(logits, WANT, rtol=1e-6)
    assert rows_mod.export_bytes(export) == (export / "model.onnx").stat().st_size


def test_openvino_without_nncf_keeps_its_fp32_row_and_skips_the_int8_ones(rows_mod, monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    export = _tiny_export(tmp_path / "tiny")
    monkeypatch.setitem(sys.modules, "nncf", None)
    got = rows_mod.openvino_rows(export / "model.onnx", tmp_path, 1, "unpruned", [], "g")
    built = [r for r in got if not isinstance(r, P.Skipped)]
    skipped = {s.name: s.reason for s in got if isinstance(s, P.Skipped)}
    assert built[0].info.name == "openvino-fp32" and "INFERENCE_PRECISION_HINT" in built[0].info.method
    np.testing.assert_allclose(built[0].infer(FEEDS), WANT, rtol=1e-5)
    assert {"openvino-int8", "openvino-int8-weights"} <= set(skipped)
    assert "nncf not installed" in skipped["openvino-int8"]


def test_a_cached_peer_model_is_reused_only_from_the_same_source_and_settings(rows_mod, tmp_path):
    source = tmp_path / "model.onnx"
    source.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"y")
    stamp = rows_mod._source_stamp(source, {"a": 1})
    (out / rows_mod.STAMP).write_text(json.dumps(stamp))
    assert rows_mod.cached(out, stamp, "model.onnx")
    assert not rows_mod.cached(out, rows_mod._source_stamp(source, {"a": 2}), "model.onnx")
    assert not rows_mod.cached(out, stamp, "model.xml")


def test_no_deepsparse_venv_skips_every_deepsparse_row_with_the_fix(ds_mod, tmp_path):
    got = ds_mod.deepsparse_rows(python=tmp_path / "none" / "bin" / "python", reference_onnx=tmp_path / "r.onnx",
                                 models=[(_info("deepsparse unpruned"), tmp_path / "m.onnx")],
                                 input_names=["input_ids"], timing_feeds={}, eval_feeds={}, eval_batch=32,
                                 rounds={}, warmup=0, threads=2, seq_len=128, work=tmp_path / "work")
    assert not got.infos and got.skipped[0][0] == "deepsparse unpruned"
    assert "no DeepSparse virtualenv" in got.skipped[0][1] and "make peers-setup" in got.skipped[0][1]


def test_static_copies_fix_the_sequence_axis_only(ds_mod, tmp_path):
    import onnx

    export = _tiny_export(tmp_path / "tiny")
    out = ds_mod.static_copy(export / "model.onnx", 128, tmp_path / "static.onnx")
    dims = [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in onnx.load(str(out)).graph.input]
    assert dims == [["b", 128], ["b", 128]]


# ---------------------------------------------------------------------------- the script's helpers

def test_chunks_are_exactly_the_batch_and_the_padding_is_dropped(suite, ds_group):
    seen = []

    def infer(feeds):
        seen.append(len(feeds["input_ids"]))
        return feeds["input_ids"][:, :1] * 10

    out = suite.chunked(infer, {"input_ids": np.arange(10).reshape(5, 2)}, 2)
    assert seen == [2, 2, 2] and out.ravel().tolist() == [0, 20, 40, 60, 80]
    padded = ds_group.padded_to_chunks({"x": np.arange(5)}, 4)
    assert padded["x"].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert ds_group.padded_to_chunks({"x": np.arange(4)}, 4)["x"].tolist() == [0, 1, 2, 3]


def test_the_cli_options(suite):
    args = suite.parse_args(["--quick"])
    assert args.groups == ["shipped"] and args.runs == 4 and args.eval_samples == 64
    assert suite._rounds(args, 32) == 4 and suite._rounds(args, 1) == 16
    args = suite.parse_args(["--groups", "magnitude", "--peers", "openvino", "--no-deepsparse"])
    assert args.groups == ["magnitude"] and args.peers == ["openvino"] and not args.deepsparse
    with pytest.raises(SystemExit):
        suite.parse_args(["--groups", "nope"])


def test_other_processes_busy_cores_exclude_this_process():
    stat = "cpu  {} 0 {} 1000 0 0 0 0 0 0\ncpu0 1 2 3\n"
    before = P.cpu_snapshot(stat.format(100, 100))
    after = P.CpuSnapshot(before.wall_s + 2.0, before.machine_busy_s + 3.0, before.own_s + 1.0)
    assert P.other_cores(before, after) == pytest.approx(1.0)          # (3 - 1) busy seconds / 2 s
    assert P.other_cores(before, P.CpuSnapshot(before.wall_s + 1, before.machine_busy_s, before.own_s + 1)) == 0.0
    assert P.other_cores(P.cpu_snapshot("garbage"), after) is None


def test_vector_flags_come_from_the_first_processor():
    info = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 avx512_bf16 avx512_vnni amx_int8 ht\n\nflags\t: other\n"
    assert P.cpu_vector_flags(info) == ["sse4_2", "avx2", "avx512_bf16", "avx512_vnni", "amx_int8"]
    assert P.cpu_vector_flags("no flags here") == []
