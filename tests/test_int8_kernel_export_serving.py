"""The int8 kernel export (sparse-kernel --precision int8) where users run it: smp-serve serves
it through the ai.smp library, and `smp-export --format triton` ships that library in the
repository (like fp32 sparse-kernel)."""

from __future__ import annotations

import onnx
import pytest
from click.testing import CliRunner

from runtime.kernels import library_available
from runtime.server import BackgroundServer, ServeConfig
from runtime.session import ModelSession
from tests.test_serve_support import post, tiny_kernel_export

pytestmark = pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    return tiny_kernel_export(tmp_path_factory.mktemp("int8") / "tiny-cls-int8", precision="int8")


def test_export_holds_the_fused_int8_kernels(int8_export):
    ops = {n.op_type for n in onnx.load(str(int8_export / "model.onnx")).graph.node if n.domain == "ai.smp"}
    assert {"SparseFFNInt8", "SparseLinearInt8", "Attention"} <= ops and "SparseLinear" not in ops


def test_smp_serve_classifies_with_the_int8_export(int8_export):
    session = ModelSession.load(int8_export)
    config = ServeConfig(export_dir=int8_export, port=0, max_delay_ms=2, max_texts=8, max_seq_len=16)
    with BackgroundServer(config, session) as server:
        texts = ["good movie", "the film was very bad"]
        response = post(server.url + "/v1/classify", {"texts": texts})
    assert response.status_code == 200, response.text
    assert [r["label"] for r in response.json()["results"]] == session.predict(texts, max_length=16)


def test_triton_handoff_ships_the_library_with_the_int8_kernel_export(tmp_path):
    from google.protobuf import text_format

    from cli.export import main
    from tests.fixtures import write_dense_base

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    written = write_dense_base(tmp_path / "my-bert", head="sequence-classification", tokenizer=True)
    result = CliRunner().invoke(main, [str(written.path), "--format", "triton", "-o", str(tmp_path / "repo"),
                                       "--weights", "sparse-kernel", "--precision", "int8"])
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "repo" / "my-bert"
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert list(config.model_operations.op_library_filename) == [str(model_dir.resolve() / "libsmp_sparse.so")]
    assert (model_dir / "libsmp_sparse.so").is_file()
    ops = {n.op_type for n in onnx.load(str(model_dir / "1" / "model.onnx")).graph.node if n.domain == "ai.smp"}
    assert "SparseLinearInt8" in ops or "SparseFFNInt8" in ops
