"""smp-bench end to end on tiny models built here: CLI options, outputs, data files, torch paths, CUDA errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli.bench
from cli.bench import CLI_ONLY, main
from runtime.errors import DeviceError
from smp_bench.config import (GROUPS, BackendOptions, BenchConfig, DataOptions, ModelOptions, OutputOptions,
                              TimingOptions, checkpoint_from_manifest, group_fields)
from smp_bench.errors import BenchmarkError
from smp_bench.loading import check_device
from smp_bench.records import is_flat
from smp_export.export import ExportOptions, export_onnx
from tests.fixtures import write_dense_base, write_packed_mask, write_vocab
from tests.helpers import random_masks, tiny_checkpoint

WORDS = ["good", "bad", "great", "terrible", "yes", "no", "tok7", "tok9", "tok12", "tok30"]
FAST = ["--batch", "2", "--seq-len", "8", "--warmup", "1", "--no-progress"]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ["sport", "tech"][i % 2]
        words = rng.choice(WORDS[:5] if label == "sport" else WORDS[5:], size=6)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    rows = _texts(24)
    csv = d / "eval.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    jsonl = d / "eval.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t, "topic": lab}) + "\n" for t, lab in rows))
    glue = d / "dev_matched.tsv"
    labels = ["entailment", "neutral", "contradiction"]
    glue.write_text("index\tsentence1\tsentence2\tgold_label\n" + "".join(
        f"{i}\t{t}\t{rows[(i + 1) % 24][0]}\t{labels[i % 3]}\n" for i, (t, _) in enumerate(rows)))
    return {"csv": csv, "jsonl": jsonl, "glue": glue}


def _export_all(ckpt, root: Path, variants=("dense", "sparse-initializer", "compact")) -> list[Path]:
    dirs = []
    for weights in variants:
        out = root / f"tiny-{weights}"
        export_onnx(ckpt, out, options=ExportOptions(weights=weights))
        write_vocab(out)
        dirs.append(out)
    return dirs


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory) -> list[Path]:
    return _export_all(tiny_checkpoint(keep=0.3), tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_dense_base(tmp_path_factory.mktemp("base") / "model", tokenizer=True).path


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_cli_on_exports_writes_table_json_markdown_png(tiny_exports, data_files, tmp_path) -> None:
    out = tmp_path / "res"
    result = _ok(_invoke(*tiny_exports, *FAST, "--runs", "3", "--no-memory", "--data", data_files["csv"],
                         "--text-column", "text", "--label-column", "label", "--eval-samples", "8", "-o", out))
    assert "p50 ms" in result.output and "tiny-compact" in result.output
    # The source checkpoint ("tiny") is not on disk: the dense export is the reference, said so.
    assert "note: ort-dense is" in result.output and "skipped torch-eager-dense" in result.output
    data = _results(out)
    records = {r["name"]: r for r in data["records"]}
    assert list(records) == ["ort-dense", "tiny-sparse-initializer", "tiny-compact"]
    assert all(is_flat(r) for r in data["records"])
    r = records["tiny-compact"]
    assert r["n"] == 3 and r["batch_size"] == 2 and r["seq_len"] == 8 and r["warmup"] == 1
    assert r["sparsity"] == pytest.approx(0.7, abs=0.01) and r["onnx_bytes"] > 0 and r["load_s"] > 0
    assert r["speedup"] > 0 and r["speedup_pairwise"] > 0 and r["reference"] == "ort-dense"
    assert records["ort-dense"]["speedup"] == pytest.approx(1.0)
    assert r["cosine_mean"] == pytest.approx(1.0, abs=1e-5)          # same pruned model, other storage
    assert r["eval_n"] == 8 and 0.0 <= r["task_accuracy"] <= 1.0 and "eval.csv" in r["eval_source"]
    assert r["env_cpu_model"] and r["env_logical_cores"] >= 1 and r["version_onnxruntime"]
    assert r["env_ort_spinning"] is False                            # interleaved runs: no spinning by default
    assert r["command"].startswith("smp-bench ") and "--runs 3" in r["command"]
    timings = json.loads((out / "timings.json").read_text())
    assert [o for o in timings["order"] if o.startswith("timed:")][:3] == [
        "timed:ort-dense", "timed:tiny-sparse-initializer", "timed:tiny-compact"]
    md = (out / "results.md").read_text()
    assert "| tiny-compact |" in md and "results.png" in md and "(spinning off)" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_profile_and_memory_on_exports(tiny_exports, tmp_path) -> None:
    out = tmp_path / "res"
    result = _ok(_invoke(tiny_exports[0], tiny_exports[2], *FAST, "--runs", "2", "--data", "none",
                         "--profile", "--profile-runs", "1", "-o", out))
    assert "per-operator time" in result.output and "pruned_linears" in result.output
    recs = _results(out)["records"]
    assert all(r["peak_rss_mb"] > 0 and r["profile_pruned_linears_ms"] > 0 for r in recs)
    assert recs[0]["env_timing_inputs"] == "random token ids"
    assert "cosine_mean" not in recs[0]                                 # --data none: no accuracy
    assert (out / "profile.json").is_file()


def test_glue_tsv_sentence_pairs_with_a_logits_head(data_files, tmp_path) -> None:
    ckpt = tiny_checkpoint(head="sequence-classification", keep=0.5)
    ckpt.config.id2label = {0: "entailment", 1: "neutral", 2: "contradiction"}
    ckpt.config.label2id = {v: k for k, v in ckpt.config.id2label.items()}
    dirs = _export_all(ckpt, tmp_path / "exp", ("dense", "compact"))
    out = tmp_path / "res"
    _ok(_invoke(*dirs, *FAST, "--runs", "1", "--no-memory", "--no-plot", "--data", data_files["glue"],
                "--eval-samples", "6", "-o", out))
    r = {x["name"]: x for x in _results(out)["records"]}["tiny-compact"]
    assert r["eval_output"] == "logits" and r["argmax_agreement"] == 1.0
    assert r["max_abs_logit_diff"] < 1e-4 and r["task_metric"] == "accuracy" and r["eval_n"] == 6
    assert not (out / "results.png").exists()


@pytest.mark.slow
def test_default_model_sweep_with_torch_backends(tiny_model_dir, data_files, tmp_path) -> None:
    out, cache = tmp_path / "res", tmp_path / "cache"
    args = ["--model-dir", tiny_model_dir, "--cache-dir", cache,
            "--sweep", "0.5,0.9", "--variants", "compact", "--backend", "all", *FAST]
    result = _ok(_invoke(*args, "--runs", "2", "--no-memory", "--data", data_files["jsonl"], "--text-column",
                         "body", "--label-column", "topic", "--eval-samples", "8", "-o", out))
    assert "exporting" in result.output
    recs = {r["name"]: r for r in _results(out)["records"]}
    assert list(recs) == ["torch-eager-dense", "ort-dense", "compact@0.50", "torch-csr@0.50",
                          "compact@0.90", "torch-csr@0.90"]
    assert recs["ort-dense"]["is_reference"] and recs["ort-dense"]["sparsity"] == 0.0
    assert recs["torch-eager-dense"]["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
    for level in ("0.50", "0.90"):
        onnx_rec, csr = recs[f"compact@{level}"], recs[f"torch-csr@{level}"]
        assert onnx_rec["sparsity"] == pytest.approx(float(level), abs=0.01)
        # The same masked model through onnxruntime and torch.sparse CSR: the same outputs.
        assert csr["cosine_mean"] == pytest.approx(onnx_rec["cosine_mean"], abs=1e-5)
        assert csr["backend"] == "torch" and csr["family"] == "csr" and csr["onnx_bytes"] is None
    assert recs["compact@0.90"]["cosine_mean"] < recs["compact@0.50"]["cosine_mean"] <= 1.0 + 1e-6
    assert (out / "results.png").is_file()
    # Second run: masks and exports come from the cache.
    again = _ok(_invoke(*args, "--runs", "1", "--no-memory", "--no-plot", "--eval-samples", "0",
                        "--data", "none", "-o", tmp_path / "res2"))
    assert "exporting" not in again.output and "building magnitude masks" not in again.output
    # An export made with other options (or by other exporter code) is not reused.
    cached = next(cache.glob("*/sparsity0.90-compact"))
    record = json.loads((cached / "manifest.json").read_text())
    record["export_options"] = {"attention": "fused"}
    (cached / "manifest.json").write_text(json.dumps(record))
    third = _ok(_invoke(*args, "--runs", "1", "--no-memory", "--no-plot", "--eval-samples", "0",
                        "--data", "none", "-o", tmp_path / "res3"))
    assert third.output.count("exporting") == 1 and "sparsity0.90-compact" in third.output


def test_int8_peers_are_built_timed_and_scored(tiny_model_dir, data_files, tmp_path) -> None:
    out, cache = tmp_path / "res", tmp_path / "cache"
    result = _ok(_invoke("--model-dir", tiny_model_dir, "--cache-dir", cache, "--variants", "dense,sparse-initializer",
                         "--precisions", "fp32,int8", "--no-torch-eager", *FAST, "--runs", "2", "--no-memory",
                         "--no-plot", "--data", data_files["jsonl"], "--text-column", "body", "--label-column",
                         "topic", "--eval-samples", "8", "-o", out))
    assert "note: no int8 export of sparse-initializer" in result.output and "dense-int8@0.90" in result.output
    recs = {r["name"]: r for r in _results(out)["records"]}
    assert list(recs) == ["ort-dense", "dense@0.90", "dense-int8@0.90", "sparse-initializer@0.90"]
    int8, fp32 = recs["dense-int8@0.90"], recs["dense@0.90"]
    assert int8["precision"] == "int8" and int8["family"] == "dense-int8" and fp32["precision"] == "fp32"
    assert int8["n"] == 2 and int8["onnx_bytes"] < fp32["onnx_bytes"]
    assert 0.99 < int8["cosine_mean"] < 1.0 and int8["eval_n"] == 8 and 0.0 <= int8["task_accuracy"] <= 1.0
    assert (next(cache.glob("*/sparsity0.90-dense-int8")) / "model.onnx").is_file()
    refused = _invoke("--model-dir", tiny_model_dir, "--cache-dir", cache, "--variants", "sparse-initializer",
                      "--precisions", "int8", *FAST, "-o", tmp_path / "x")
    assert refused.exit_code == 2 and "--precisions" in refused.output and not (tmp_path / "x").exists()


def test_exports_whose_source_is_on_disk_get_torch_runners(tiny_model_dir, tmp_path) -> None:
    from smp_export.readers import ReadOptions, read_checkpoint

    dense = read_checkpoint(tiny_model_dir, input_format="dense")
    mask = tmp_path / "mask.npy"
    write_packed_mask(mask, random_masks(dense.config, dense.weights, keep=0.2))
    ckpt = read_checkpoint(tiny_model_dir, ReadOptions(mask_file=mask))
    out_dir = tmp_path / "exp-compact"
    export_onnx(ckpt, out_dir, options=ExportOptions(weights="compact"))
    assert checkpoint_from_manifest(out_dir).density() == pytest.approx(ckpt.density())
    out = tmp_path / "res"
    _ok(_invoke(out_dir, *FAST, "--backend", "all", "--runs", "1", "--no-memory", "--no-plot",
                "--cache-dir", tmp_path / "cache", "--data", "none", "-o", out))
    names = [r["name"] for r in _results(out)["records"]]
    assert names == ["torch-eager-dense", "ort-dense", "exp-compact", "torch-csr@0.80"]


def test_cuda_requested_without_cuda_is_a_clear_error(tiny_exports, tiny_model_dir, tmp_path) -> None:
    import onnxruntime
    import torch

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() or torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = _invoke(*tiny_exports, "--device", "cuda", "--no-progress", "-o", tmp_path / "a")
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.output and "--backend torch" in result.output
    result = _invoke("--model-dir", tiny_model_dir, "--backend", "torch", "--device", "cuda", "-o", tmp_path / "b")
    assert result.exit_code == 2 and "torch.cuda.is_available() is False" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cuda_provider_selection_when_available(monkeypatch) -> None:
    import onnxruntime
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    def on(device: str, backend: str) -> BenchConfig:
        return BenchConfig(backends=BackendOptions(device=device, backend=backend))

    check_device(on("cuda", "all"))                                    # no error
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    check_device(on("cuda", "torch"))                                  # torch alone needs no CUDA EP
    with pytest.raises(DeviceError, match="--backend torch"):
        check_device(on("cuda", "ort"))
    check_device(on("cpu", "all"))


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt"], "Invalid value for '--backend'"),
    (["--sweep", "0.5,abc"], "--sweep"),
    (["--sweep", "0.5,1.5"], "--sweep"),
    (["--variants", "dense,bogus"], "unknown variant"),
    (["--precisions", "fp32,bf16"], "unknown precision"),
    (["--runs", "0"], "--runs"),
    (["--batch", "0"], "--batch"),
    (["--seq-len", "1"], "--seq-len"),
    (["--threads", "0"], "--threads"),
    (["--sparsity", "1.5"], "--sparsity"),
    (["--eval-samples", "-1"], "--eval-samples"),
    (["--profile-runs", "0"], "--profile-runs"),
    (["--device", "tpu"], "Invalid value for '--device'"),
])
def test_bad_options_exit_non_zero(args, message, tmp_path) -> None:
    result = _invoke(*args, "-o", tmp_path / "x")
    assert result.exit_code == 2 and message in result.output


def test_data_file_needs_a_text_column(tiny_exports, data_files, tmp_path) -> None:
    result = _invoke(*tiny_exports, *FAST, "--data", data_files["csv"], "--no-memory", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "--text-column" in result.output
    result = _invoke(*tiny_exports, *FAST, "--data", data_files["csv"], "--text-column", "nope", "--no-memory",
                     "-o", tmp_path / "y")
    assert result.exit_code == 2 and "nope" in result.output


def test_bench_config_validates() -> None:
    with pytest.raises(BenchmarkError, match="--eval-samples"):
        BenchConfig.from_flat(eval_samples=-1)
    torch_only = BenchConfig(backends=BackendOptions(backend="torch", torch_eager=False))
    assert torch_only.uses_torch_eager and torch_only.uses_torch_csr and not torch_only.uses_ort
    assert BenchConfig(model=ModelOptions(variants=("compact",))).export_variants() == ("compact",)
    assert BenchConfig.from_flat(batch=4, seed=1, backend="all") == BenchConfig(
        timing=TimingOptions(batch=4), data=DataOptions(seed=1), backends=BackendOptions(backend="all"))
    with pytest.raises(TypeError, match="no option"):
        BenchConfig.from_flat(batch_size=4)
    with pytest.raises(TypeError):
        TimingOptions(32)                                               # keyword-only


@pytest.mark.parametrize("group, values, option", [
    (TimingOptions, {"batch": 0}, "--batch"),
    (TimingOptions, {"seq_len": 1}, "--seq-len"),
    (TimingOptions, {"runs": 0}, "--runs"),
    (TimingOptions, {"warmup": -1}, "--warmup"),
    (TimingOptions, {"threads": 0}, "--threads"),
    (BackendOptions, {"backend": "tensorrt"}, "--backend"),
    (BackendOptions, {"device": "tpu"}, "--device"),
    (ModelOptions, {"sparsity": 1.0}, "--sparsity"),
    (ModelOptions, {"sweep": (0.5, 0.0)}, "--sweep"),
    (ModelOptions, {"variants": ("bogus",)}, "--variants"),
    (ModelOptions, {"variants": ()}, "--variants"),
    (ModelOptions, {"precisions": ("int4",)}, "--precisions"),
    (ModelOptions, {"precisions": ()}, "--precisions"),
    (DataOptions, {"eval_samples": -1}, "--eval-samples"),
    (DataOptions, {"centroid_samples": -1}, "--centroid-samples"),
    (OutputOptions, {"profile_runs": 0}, "--profile-runs"),
])
def test_option_groups_reject_out_of_range_values_naming_the_option(group, values, option) -> None:
    with pytest.raises(BenchmarkError) as err:
        group(**values)
    assert err.value.field == option and option in str(err.value)
    with pytest.raises(BenchmarkError) as err:
        BenchConfig.from_flat(**values)
    assert err.value.field == option


def test_every_cli_option_is_one_config_field() -> None:
    """A new click option needs a field of one group of the same name (and the reverse)."""
    fields = [group_fields(group) for group in GROUPS.values()]
    union = frozenset().union(*fields)
    assert sum(map(len, fields)) == len(union)                          # no name in two groups
    params = {p.name for p in main.params}
    assert CLI_ONLY <= params
    assert params - CLI_ONLY == union - {"output_dir", "command"}       # set by the CLI itself


def test_cli_defaults_are_the_config_defaults(monkeypatch, tmp_path) -> None:
    seen = []

    def fake_run(config, *, echo):
        seen.append(config)
        raise BenchmarkError("stop here")

    monkeypatch.setattr(cli.bench, "run_benchmark", fake_run)
    result = _invoke("-o", tmp_path / "x")
    assert result.exit_code == 2 and "stop here" in result.output
    config = seen[0]
    assert config.output == OutputOptions(output_dir=tmp_path / "x", command=f"smp-bench -o {tmp_path / 'x'}")
    assert config == BenchConfig(output=config.output)
    # ... and what results.json records of it is JSON, by group.
    record = json.loads(json.dumps(config.to_dict()))
    assert set(record) == set(GROUPS) and record["model"]["cache_dir"] == "build/bench-cache"
    assert record["timing"]["batch"] == 32 and record["data"]["seed"] == 13


def test_torch_memory_probe(tiny_model_dir, capsys) -> None:
    """The child-process entry point of the torch probes, called in this process (a fresh
    interpreter importing torch + transformers costs seconds; the ORT probe runs as a real child
    in test_bench_harness)."""
    from smp_bench.config import CheckpointSource
    from smp_bench.memory import probe_argv, probe_main
    from smp_bench.plan import VariantSpec

    source = CheckpointSource("dense", str(tiny_model_dir), unpruned=True)
    argv = probe_argv(VariantSpec("torch-csr@0.00", "torch", "csr", 0.0, None, source, csr=True),
                       BenchConfig(timing=TimingOptions(batch=2, seq_len=8)))
    assert argv[:3] == ["-m", "smp_bench.memory", "probe"] and "--csr" in argv and "--threads" not in argv
    probe_main(argv[3:])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["peak_rss_mb"] > 0 and got["load_s"] > 0
