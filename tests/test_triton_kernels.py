"""Triton and KServe for the kernel variants: the ai.smp library travels in the repository,
config.pbtxt (parsed with tritonclient's ModelConfig protobuf) names it where Triton will open
it, a fresh process loads it from there and computes what the export computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from runtime.errors import TritonRepositoryError
from runtime.kernels import LIBRARY_NAME, custom_op_library_path, library_available
from runtime.server.kserve import FILE_NAME, KServeOptions
from runtime.server.triton import TritonOptions, write_model_repository
from runtime.session import ModelSession
from tests.test_serve_support import tiny_kernel_export

text_format = pytest.importorskip("google.protobuf.text_format")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
pytestmark = pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def parameters(config) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.fixture(scope="module")
def kernel_export(tmp_path_factory):
    return tiny_kernel_export(tmp_path_factory.mktemp("triton-kernels") / "tiny-kernel")


def feeds() -> dict[str, np.ndarray]:
    ids = np.array([[2, 5, 9, 4, 0, 0], [3, 8, 7, 6, 10, 11]], np.int64)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


def test_kernel_repository_config(kernel_export, tmp_path):
    options = TritonOptions(max_batch_size=16, instance_count=2, cores=8)
    model_dir = write_model_repository(kernel_export, tmp_path / "repo", "sk", options)
    config = parse(model_dir / "config.pbtxt")
    expected = str((tmp_path / "repo").resolve() / "sk" / LIBRARY_NAME)
    assert list(config.model_operations.op_library_filename) == [expected]
    assert (model_dir / LIBRARY_NAME).read_bytes() == custom_op_library_path().read_bytes()
    assert parameters(config) == {"intra_op_thread_count": "4", "inter_op_thread_count": "1"}
    group = config.instance_group[0]
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert [i.name for i in config.input] == INPUTS and all(list(i.dims) == [-1] for i in config.input)
    (logits,) = config.output
    assert logits.name == "logits" and list(logits.dims) == [3] and logits.label_filename == "labels.txt"
    assert json.loads((model_dir / "manifest.json").read_text())["custom_op_domains"] == ["ai.smp"]


_FRESH = """
import json, sys
import numpy as np, onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
model_dir, feeds_path, out_path = sys.argv[1:]
config = text_format.Parse(open(model_dir + "/config.pbtxt").read(), model_config_pb2.ModelConfig())
options = ort.SessionOptions()
options.intra_op_num_threads = int(config.parameters["intra_op_thread_count"].string_value)
for library in config.model_operations.op_library_filename:
    options.register_custom_ops_library(library)
session = ort.InferenceSession(model_dir + "/1/model.onnx", options, providers=["CPUExecutionProvider"])
feeds = dict(np.load(feeds_path))
np.save(out_path, session.run(["logits"], feeds)[0])
maps = open("/proc/self/maps").read()
print(json.dumps([line.split()[-1] for line in maps.splitlines() if line.endswith("libsmp_sparse.so")]))
"""


def test_a_fresh_process_loads_the_library_from_the_repository(kernel_export, tmp_path):
    model_dir = write_model_repository(kernel_export, tmp_path / "repo", "sk", TritonOptions(cores=2))
    np.savez(tmp_path / "feeds.npz", **feeds())
    env = {k: v for k, v in os.environ.items() if k != "SMP_SPARSE_LIBRARY"}
    done = subprocess.run([sys.executable, "-c", _FRESH, str(model_dir), str(tmp_path / "feeds.npz"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.splitlines()[-1])) == {str(model_dir.resolve() / LIBRARY_NAME)}
    want = ModelSession.load(kernel_export).run(feeds())["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-6, atol=1e-6)


def test_library_root_names_the_path_inside_tritons_container(kernel_export, tmp_path):
    model_dir = write_model_repository(kernel_export, tmp_path / "repo", "sk", TritonOptions(library_root="/models/"))
    config = parse(model_dir / "config.pbtxt")
    assert list(config.model_operations.op_library_filename) == ["/models/sk/libsmp_sparse.so"]
    assert parameters(config)["intra_op_thread_count"] == "0"        # one instance: every core


def test_kserve_inference_service(kernel_export, tmp_path):
    yaml = pytest.importorskip("yaml")
    kserve = KServeOptions(storage_uri="s3://bucket/smp/repo", memory="3Gi")
    model_dir = write_model_repository(kernel_export, tmp_path / "repo", "Tiny_Kernel",
                                       TritonOptions(instance_count=2, cores=4), kserve=kserve)
    config = parse(model_dir / "config.pbtxt")
    assert list(config.model_operations.op_library_filename) == ["/mnt/models/Tiny_Kernel/libsmp_sparse.so"]
    service = yaml.safe_load((model_dir / FILE_NAME).read_text())
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    assert service["metadata"]["name"] == "tiny-kernel"
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://bucket/smp/repo" and model["protocolVersion"] == "v2"
    assert model["resources"]["limits"] == model["resources"]["requests"] == {"cpu": "4", "memory": "3Gi"}
    assert parameters(config)["intra_op_thread_count"] == "2"


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


@pytest.mark.parametrize("options, kserve, match", [
    (dict(device="cuda"), None, "run on the CPU only"),
    (dict(library_root="/opt/models"), KServeOptions(storage_uri="pvc://claim/repo"), "serves the repository from"),
    (dict(), KServeOptions(storage_uri="pvc://claim/repo"), "KServe needs --cores"),
])
def test_handoff_refusals_write_nothing(kernel_export, tmp_path, options, kserve, match):
    with pytest.raises(TritonRepositoryError, match=match):
        write_model_repository(kernel_export, tmp_path / "repo", "sk", TritonOptions(**options), kserve=kserve)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(op_library="/no/such/libsmp_sparse.so"), "library to ship is not a file"),
    (dict(library_root="models"), "not an absolute path"),
    (dict(instance_count=2), "2 CPU instances need --cores"),
    (dict(instance_count=3, cores=2), "cannot be shared by 3 instances"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(TritonRepositoryError, match=match):
        TritonOptions(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(storage_uri="bucket/models"), "not a storage URI"),
    (dict(storage_uri="s3://b/m", memory="lots"), "not a Kubernetes quantity"),
    (dict(storage_uri="s3://b/m", name="My_Model"), "not a DNS-1035 label"),
])
def test_bad_kserve_options(kwargs, match):
    with pytest.raises(TritonRepositoryError, match=match):
        KServeOptions(**kwargs)


def test_a_path_that_is_not_a_repository_is_refused(kernel_export, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hello')\n")
    (project / "README.md").write_text("# a project\n")
    before = _listing(project)
    with pytest.raises(TritonRepositoryError, match="not a Triton model repository: 'README.md'"):
        write_model_repository(kernel_export, project, "sk")
    (project / "README.md").unlink()
    with pytest.raises(TritonRepositoryError, match="'src' is not a model folder"):
        write_model_repository(kernel_export, project, "sk")
    assert _listing(project) == [p for p in before if p != "README.md"]
    a_file = tmp_path / "repo.txt"
    a_file.write_text("x")
    with pytest.raises(TritonRepositoryError, match="not a directory"):
        write_model_repository(kernel_export, a_file, "sk")
    # A repository that already holds a model takes another one.
    write_model_repository(kernel_export, tmp_path / "repo", "one")
    write_model_repository(kernel_export, tmp_path / "repo", "two")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["one", "two"]


def test_smp_serve_writes_a_kernel_repository_with_kserve(kernel_export, tmp_path, keep_logging):
    from cli.serve import main

    args = [str(kernel_export), "--write-model-repository", str(tmp_path / "repo"), "--model-name", "sk",
            "--instances", "2", "--cores", "4", "--kserve-storage-uri", "pvc://models/repo"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "inferenceservice.yaml" in result.output
    config = parse(tmp_path / "repo" / "sk" / "config.pbtxt")
    assert config.instance_group[0].count == 2 and parameters(config)["intra_op_thread_count"] == "2"
    assert list(config.model_operations.op_library_filename) == ["/mnt/models/sk/libsmp_sparse.so"]


@pytest.mark.parametrize("extra, message", [
    (["--op-library", "/no/such/lib.so"], "/no/such/lib.so"),
    (["--instances", "2"], "need --cores"),
    (["--kserve-name", "x"], "need --kserve-storage-uri"),
])
def test_cli_bad_input_writes_nothing(kernel_export, tmp_path, keep_logging, extra, message):
    from cli.serve import main

    result = CliRunner().invoke(main, [str(kernel_export), "--write-model-repository", str(tmp_path / "repo"), *extra])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "repo").exists()
    plain = CliRunner().invoke(main, [str(kernel_export), "--cores", "2"])
    assert plain.exit_code == 2 and "need --write-model-repository" in plain.output


def test_kserve_wants_a_repository_of_its_own(kernel_export, tmp_path):
    write_model_repository(kernel_export, tmp_path / "repo", "other")
    kserve = KServeOptions(storage_uri="s3://b/repo")
    with pytest.raises(TritonRepositoryError, match="already holds other: KServe's Triton would load"):
        write_model_repository(kernel_export, tmp_path / "repo", "sk", TritonOptions(cores=2), kserve=kserve)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["other"]


@pytest.mark.parametrize("memory, ok", [("2Gi", True), ("512k", True), ("1e9", True), ("1.5Pi", True),
                                        ("512K", False), ("2 Gi", False), ("-1Gi", False)])
def test_memory_is_a_kubernetes_quantity(memory, ok):
    if ok:
        assert KServeOptions(storage_uri="s3://b/m", memory=memory).memory == memory
    else:
        with pytest.raises(TritonRepositoryError, match="Kubernetes quantity"):
            KServeOptions(storage_uri="s3://b/m", memory=memory)


def test_a_failed_overwrite_keeps_the_old_model(kernel_export, tmp_path, monkeypatch):
    import runtime.server.triton as triton

    model_dir = write_model_repository(kernel_export, tmp_path / "repo", "sk")
    before = (model_dir / "config.pbtxt").read_text()
    real_replace = triton.os.replace

    def failing_replace(src, dst):           # the new folder cannot be moved into place
        if ".tmp-" in str(src):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(triton.os, "replace", failing_replace)
    with pytest.raises(TritonRepositoryError, match="cannot write the model folder"):
        write_model_repository(kernel_export, tmp_path / "repo", "sk", TritonOptions(cores=4, overwrite=True))
    assert (model_dir / "config.pbtxt").read_text() == before
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["sk"]      # no temporary folders left
    with pytest.raises(TritonRepositoryError):
        write_model_repository(kernel_export, tmp_path / "new-repo", "sk")
    assert not (tmp_path / "new-repo").exists()                               # the folder it created is gone


def test_smp_export_refuses_the_destination_before_any_export(tmp_path, monkeypatch):
    import cli.export
    from tests.fixtures import write_dense_base

    exports: list[object] = []
    real = cli.export.export_onnx
    monkeypatch.setattr(cli.export, "export_onnx", lambda *a, **k: exports.append(a) or real(*a, **k))
    written = write_dense_base(tmp_path / "my-bert", head="sequence-classification", tokenizer=True)
    base = [str(written.path), "--format", "triton", "--weights", "sparse-kernel"]
    runner = CliRunner()
    assert runner.invoke(cli.export.main, [*base, "-o", str(tmp_path / "repo")]).exit_code == 0
    assert len(exports) == 1
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine\n")
    for extra, message in ((["-o", str(tmp_path / "repo")], "model folder exists"),
                           (["-o", str(tmp_path / "project")], "'notes.txt' is not a model folder"),
                           (["-o", str(tmp_path / "r2"), "--op-library", str(tmp_path / "none.so")], "none.so"),
                           (["-o", str(tmp_path / "r2"), "--library-root", "rel"], "not an absolute path"),
                           (["-o", str(tmp_path / "r2"), "--kserve-storage-uri", "s3://b/r"], "KServe needs --cores")):
        result = runner.invoke(cli.export.main, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    assert len(exports) == 1 and not (tmp_path / "r2").exists()
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["notes.txt"]
    onnx_format = runner.invoke(cli.export.main, [str(written.path), "--cores", "2", "-o", str(tmp_path / "x")])
    assert onnx_format.exit_code == 2 and "need --format triton" in onnx_format.output
