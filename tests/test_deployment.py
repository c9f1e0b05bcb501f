"""A deployment has the runtime only: ``smp-serve`` runs an export (a kernel variant, with the
``ai.smp`` library) in a process where importing torch, transformers, matplotlib, onnx or the
exporter, trainer and lab fails, and answers what the export computes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from runtime.session import ModelSession
from smp_export.export import ExportOptions, export_onnx
from tests.fixtures import write_dense_zero_checkpoint, write_vocab

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "transformers", "matplotlib", "onnx", "scipy", "safetensors", "accelerate", "tqdm",
           "smp_export", "smp_train", "smp_bench")
# Run first in the server's process: any import of a blocked package raises ImportError.
BLOCKER = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed in a deployment")
        return None
sys.meta_path.insert(0, Blocked())
from cli.serve import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if urllib.request.urlopen(url + "/v2/health/ready", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server not ready in time")


def test_blocked_imports_really_fail():
    code = BLOCKER.split("from cli.serve")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "torch is not installed in a deployment" in proc.stderr


@pytest.mark.slow
def test_smp_serve_runs_a_kernel_export_without_the_training_stack(tmp_path):
    model = write_dense_zero_checkpoint(tmp_path / "model", keep=0.2).path
    write_vocab(model)
    export = tmp_path / "export"
    export_onnx(_read(model), export, options=ExportOptions(weights="sparse-kernel"))
    texts = ["good news", "bad terrible"]
    session = ModelSession.load(export)
    want = session.logits(texts)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", BLOCKER, str(export), "--port", str(port), "--model-name", "m"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        answer = _post(url + "/v1/classify", {"texts": texts})
        assert [r["label"] for r in answer["results"]] == session.predict(texts)
        feeds = session.encode(texts)
        inputs = [{"name": n, "shape": list(a.shape), "datatype": "INT64", "data": a.ravel().tolist()}
                  for n, a in feeds.items()]
        infer = _post(url + "/v2/models/m/infer", {"inputs": inputs})
        got = np.array(infer["outputs"][0]["data"], dtype=np.float32).reshape(want.shape)
        np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "is not installed in a deployment" not in stderr


def _read(model: Path):
    from smp_export.readers import read_checkpoint

    return read_checkpoint(model)
