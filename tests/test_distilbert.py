"""The second architecture entry (``smp_export.arch.DISTILBERT``): a pruned DistilBERT saved dense
is read, exported as every variant, validated, run, served and benchmarked like BERT."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertModel

from runtime.session import ModelSession
from smp_export.arch import BERT, DISTILBERT
from smp_export.checkpoint import linear_weight_names
from smp_export.export import ExportOptions, export_onnx
from smp_export.magnitude import write_magnitude_mask_file
from smp_export.readers import ReadOptions, read_checkpoint
from smp_export.readers.packed import official_mask_key
from smp_export.variants import VARIANTS
from tests.fixtures import write_vocab
from tests.helpers import VOCAB, random_masks


def write_distilbert(model_dir: Path, *, head: str = "sequence-classification", keep: float = 0.3,
                     seed: int = 0) -> Path:
    """``save_pretrained`` of a tiny random DistilBERT whose encoder linears were zeroed by TopK masks."""
    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=64, pad_token_id=0, num_labels=3)
    torch.manual_seed(seed)
    model = DistilBertForSequenceClassification(config) if head == "sequence-classification" else \
        DistilBertModel(config)
    base = model.distilbert if head == "sequence-classification" else model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.copy_(torch.randn_like(param) * 0.1)
        names = linear_weight_names(2)
        params = {n: base.get_parameter(DISTILBERT.own_name(n)) for n in names}
        for name, mask in random_masks(config, params, keep, seed).items():
            params[name].mul_(mask)
    model.save_pretrained(model_dir)
    write_vocab(model_dir)
    return Path(model_dir)


@pytest.fixture(scope="module")
def distil_dir(tmp_path_factory) -> Path:
    return write_distilbert(tmp_path_factory.mktemp("distil") / "distilbert-tiny")


def _feeds() -> dict[str, np.ndarray]:
    ids = np.array([[2, 9, 14, 30, 3, 0], [2, 40, 3, 0, 0, 0]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


def test_names_map_both_ways_and_dims_come_from_its_config_fields(distil_dir):
    assert DISTILBERT.canonical_name("distilbert.transformer.layer.1.ffn.lin2.weight") == \
        "encoder.layer.1.output.dense.weight"
    for name in linear_weight_names(2) + ["pooler.dense.bias", "embeddings.LayerNorm.weight", "classifier.weight"]:
        assert DISTILBERT.canonical_name(DISTILBERT.model_prefix + DISTILBERT.own_name(name)) == name
    ckpt = read_checkpoint(distil_dir)
    assert ckpt.arch is DISTILBERT and ckpt.source_format == "dense" and ckpt.head.kind == "sequence-classification"
    dims = ckpt.dims
    assert (dims.layers, dims.hidden, dims.heads, dims.intermediate, dims.type_vocab_size) == (2, 32, 4, 64, 0)
    assert ckpt.density() == pytest.approx(0.3, abs=0.01) and set(ckpt.masks) == set(linear_weight_names(2))
    assert official_mask_key("encoder.layer.0.attention.self.query.weight", DISTILBERT) == \
        "distilbert.transformer.layer.0.attention.q_lin.mask_scores"
    assert official_mask_key("encoder.layer.0.attention.self.query.weight", BERT) == \
        "bert.encoder.layer.0.attention.self.query.mask_scores"


@pytest.mark.parametrize("weights", list(VARIANTS))
def test_every_variant_exports_validates_and_runs(distil_dir, tmp_path, weights):
    ckpt = read_checkpoint(distil_dir)
    out = tmp_path / weights
    manifest = export_onnx(ckpt, out, options=ExportOptions(weights=weights, validate=True))
    assert manifest.validation.passed and manifest.validation.max_abs_diff < 1e-4
    assert manifest.input_names == ["input_ids", "attention_mask"]        # DistilBERT has no token types
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "distilbert" and config["architectures"] == ["DistilBertForSequenceClassification"]
    assert config["dim"] == 32 and "hidden_size" not in config
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert ("SparseLinear" in ops) == VARIANTS[weights].needs_kernels
    session = ModelSession.load(out)
    logits = session.run(_feeds())["logits"]
    reference = ModelSession.load(_dense_export(distil_dir, tmp_path)).run(_feeds())["logits"]
    np.testing.assert_allclose(logits, reference, atol=1e-4)
    assert session.predict(["good news", "bad"]) and logits.shape == (2, 3)


def _dense_export(model_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "reference-dense"
    if not out.exists():
        export_onnx(read_checkpoint(model_dir), out, options=ExportOptions(weights="dense", validate=False))
    return out


def test_encoder_alone_and_packed_masks(tmp_path):
    model_dir = write_distilbert(tmp_path / "encoder", head="none", keep=1.0)
    mask = write_magnitude_mask_file(model_dir, 0.2, tmp_path / "mask.npy")
    ckpt = read_checkpoint(model_dir, ReadOptions(mask_file=mask))
    assert ckpt.source_format == "packed" and ckpt.arch is DISTILBERT and ckpt.density() == pytest.approx(0.2, abs=0.01)
    manifest = export_onnx(ckpt, tmp_path / "out", options=ExportOptions(weights="sparse-kernel"))
    assert manifest.output_names == ["last_hidden_state"] and manifest.validation.passed
    assert ModelSession.load(tmp_path / "out").embed(["a pruned distilbert"]).shape == (1, 32)


def test_served_over_http(distil_dir, tmp_path):
    from runtime.server import BackgroundServer, ServeConfig

    out = tmp_path / "served"
    export_onnx(read_checkpoint(distil_dir), out, options=ExportOptions(weights="compact", validate=False))
    with BackgroundServer(ServeConfig(export_dir=out, port=0)) as server:
        body = json.dumps({"texts": ["good", "terrible news"]}).encode()
        request = urllib.request.Request(f"{server.url}/v1/classify", data=body, method="POST")
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert len(answer["results"]) == 2 and all(r["label"] for r in answer["results"])


@pytest.mark.slow
def test_benchmarked_with_smp_bench(distil_dir, tmp_path):
    from cli.bench import main

    out, data = tmp_path / "bench", tmp_path / "eval.csv"
    data.write_text("text\n" + "".join(f"good tok{i} bad tok{2 * i}\n" for i in range(12)))
    args = ["--model-dir", distil_dir, "--cache-dir", tmp_path / "cache",
            "--variants", "dense,sparse-kernel", "--sparsity", "0.8", "--batch", "2", "--seq-len", "8",
            "--runs", "2", "--warmup", "1", "--no-memory", "--no-plot", "--no-progress", "--data", data,
            "--text-column", "text", "--eval-samples", "8", "-o", out]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    assert {"ort-dense", "torch-eager-dense", "dense@0.80", "sparse-kernel@0.80"} <= set(records)
    kernel = records["sparse-kernel@0.80"]
    assert kernel["p50_ms"] > 0 and kernel["sparsity"] == pytest.approx(0.8, abs=0.01) and kernel["eval_n"] == 8
    # The same magnitude-pruned model as the dense-zeros export: the same logits.
    assert kernel["max_abs_logit_diff"] == pytest.approx(records["dense@0.80"]["max_abs_logit_diff"], abs=1e-4)
    assert records["torch-eager-dense"]["max_abs_logit_diff"] < 1e-4


def test_errors_name_the_tensor_as_its_file_does(tmp_path):
    """A DistilBERT file without one of its linears: the message names DistilBERT's own tensor."""
    from safetensors.torch import load_file, save_file

    from smp_export.errors import CheckpointError

    model_dir = write_distilbert(tmp_path / "broken")
    state = load_file(str(model_dir / "model.safetensors"))
    del state["distilbert.transformer.layer.1.ffn.lin2.weight"]
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="encoder linear weights missing") as info:
        read_checkpoint(model_dir)
    assert info.value.field == "transformer.layer.1.ffn.lin2.weight"
