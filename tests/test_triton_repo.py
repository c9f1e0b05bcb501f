"""Triton model repositories: config.pbtxt parsed with Triton's own ModelConfig protobuf."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from runtime.errors import TritonRepositoryError
from runtime.manifest import Manifest
from runtime.server.triton import TritonOptions, render_config, write_model_repository
from runtime.session import ModelSession
from tests.test_serve_support import tiny_export

text_format = pytest.importorskip("google.protobuf.text_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="Triton's ModelConfig proto ships with tritonclient[grpc]")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def parse(path) -> "model_config_pb2.ModelConfig":
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("triton")
    return {"cls": tiny_export(base / "tiny-cls"), "enc": tiny_export(base / "tiny-enc", head="none")}


def test_classifier_repository(exports, tmp_path):
    options = TritonOptions(max_batch_size=16, max_queue_delay_us=3000, instance_count=2, cores=4)
    model_dir = write_model_repository(exports["cls"], tmp_path / "repo", "sentiment", options)
    assert model_dir == tmp_path / "repo" / "sentiment"
    config = parse(model_dir / "config.pbtxt")
    assert config.name == "sentiment" and config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime" and config.max_batch_size == 16
    assert [i.name for i in config.input] == INPUTS
    assert all(i.data_type == model_config_pb2.TYPE_INT64 and list(i.dims) == [-1] for i in config.input)
    (logits,) = config.output
    assert logits.name == "logits" and logits.data_type == model_config_pb2.TYPE_FP32
    assert list(logits.dims) == [3] and logits.label_filename == "labels.txt"
    assert (model_dir / "labels.txt").read_text().split() == ["negative", "neutral", "positive"]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 3000
    assert config.instance_group[0].count == 2
    assert config.parameters["intra_op_thread_count"].string_value == "2"     # the 4 cores, split
    assert not config.model_operations.op_library_filename                  # no custom operator
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # The versioned model is the export's, byte for byte, and the client-side files travel along.
    assert (model_dir / "1" / "model.onnx").read_bytes() == (exports["cls"] / "model.onnx").read_bytes()
    assert {"config.json", "manifest.json", "vocab.txt"} <= {p.name for p in model_dir.iterdir()}
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]


def test_encoder_repository_on_gpu(exports, tmp_path):
    model_dir = write_model_repository(exports["enc"], tmp_path / "repo",
                                       options=TritonOptions(device="cuda", max_batch_size=8))
    config = parse(model_dir / "config.pbtxt")
    assert config.name == "tiny-enc"
    (hidden,) = config.output
    assert hidden.name == "last_hidden_state" and list(hidden.dims) == [-1, 32]
    assert not hidden.label_filename and not (model_dir / "labels.txt").exists()
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    session = ModelSession.load(model_dir / "1")          # onnxruntime runs what Triton would load
    out = session.run({n: np.ones((2, 5), np.int64) for n in INPUTS})
    assert out["last_hidden_state"].shape == (2, 5, 32)


def test_fixed_batch_model_gets_no_dynamic_batching():
    from runtime.server.triton import IOSpec

    text = render_config("m", [IOSpec("input_ids", "TYPE_INT64", (1, 8))],
                         [IOSpec("logits", "TYPE_FP32", (1, 2))], TritonOptions())
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 8]


def test_refusals(exports, tmp_path):
    repo = tmp_path / "repo"
    write_model_repository(exports["cls"], repo)
    with pytest.raises(TritonRepositoryError, match="model folder exists"):
        write_model_repository(exports["cls"], repo)
    write_model_repository(exports["cls"], repo, options=TritonOptions(overwrite=True))
    with pytest.raises(TritonRepositoryError, match="model.onnx not found"):
        write_model_repository(tmp_path, repo)
    custom = tmp_path / "native"
    custom.mkdir()
    for name in ("model.onnx", "config.json"):
        (custom / name).write_bytes((exports["cls"] / name).read_bytes())
    manifest = Manifest.read(exports["cls"])
    manifest.custom_op_domains = ["smp.sparse"]
    manifest.write(custom)
    with pytest.raises(TritonRepositoryError, match="custom operator domain"):
        write_model_repository(custom, repo)
    with pytest.raises(TritonRepositoryError, match="preferred batch sizes"):
        TritonOptions(max_batch_size=4, preferred_batch_sizes=(8,))


def test_smp_serve_writes_repository(exports, tmp_path, keep_logging):
    from cli.serve import main

    result = CliRunner().invoke(main, [str(exports["cls"]), "--write-model-repository",
                                       str(tmp_path / "repo"), "--model-name", "cls",
                                       "--max-batch", "8", "--max-delay-ms", "2"])
    assert result.exit_code == 0, result.output
    config = parse(tmp_path / "repo" / "cls" / "config.pbtxt")
    assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds == 2000


def test_smp_export_format_triton(tmp_path):
    from cli.export import main
    from tests.fixtures import write_dense_base

    written = write_dense_base(tmp_path / "my-bert", head="sequence-classification", tokenizer=True)
    result = CliRunner().invoke(main, [str(written.path), "--format", "triton", "-o",
                                       str(tmp_path / "repo"), "--weights", "compact"])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "repo" / "my-bert"
    config = parse(model_dir / "config.pbtxt")
    assert [i.name for i in config.input] == INPUTS and config.output[0].name == "logits"
    assert json.loads((model_dir / "manifest.json").read_text())["weights"] == "compact"
    assert "validation     : passed" in result.output
    again = CliRunner().invoke(main, [str(written.path), "--format", "triton", "-o", str(tmp_path / "repo")])
    assert again.exit_code == 2 and "model folder exists" in again.output
