"""The smp-serve command in a subprocess: JSON logs, graceful SIGTERM with a request in flight,
and configuration errors that exit non-zero with a message."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.serve import main
from tests.test_serve_support import get, metric_value, post, tiny_export, token_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("serve-cli") / "tiny-cls")


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))      # every JSON-looking line must parse
    return lines


def _wait_for_port(proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in _log_lines(log):
            if "port" in entry:
                return int(entry["port"])
        if proc.poll() is not None:
            pytest.fail(f"smp-serve exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"smp-serve did not report its port: {log.read_text()}")


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests(export_dir, tmp_path):
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "cli.serve", str(export_dir), "--port", "0", "--log-format", "json",
           "--max-delay-ms", "20000", "--max-batch", "64", "--shutdown-timeout", "20"]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = f"http://127.0.0.1:{_wait_for_port(proc, log)}"
        assert get(url + "/v2/health/ready").status_code == 200
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(post, url + "/v2/models/tiny-cls/infer", {"inputs": token_inputs([[2, 3]])})
            deadline = time.monotonic() + 10
            while metric_value(get(url + "/metrics").text, "smp_serve_inflight_requests") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)        # the request is waiting in the batcher
            sent = time.monotonic()
            answer = pending.result(timeout=30)
        assert answer.status_code == 200, answer.text
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - sent < 15         # shutdown flushed the 20 s batching delay
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    entries = _log_lines(log)
    messages = [e["msg"] for e in entries]
    assert "shutdown requested" in messages and messages[-1] == "shutdown complete"
    assert any(m.startswith("shutting down: finishing 1 in-flight") for m in messages)
    access = [e for e in entries if e["logger"] == "runtime.server.access"]
    assert any(e["status"] == 200 and e["endpoint"] == "/v2/models/{name}/infer" for e in access)
    assert all({"ts", "level", "latency_ms", "method", "path"} <= set(e) for e in access)


def test_cli_configuration_errors(export_dir, tmp_path, keep_logging):
    runner = CliRunner()
    missing = runner.invoke(main, [str(tmp_path / "nowhere"), "--port", "0"])
    assert missing.exit_code == 2 and "export directory not found" in missing.output
    empty_key = tmp_path / "key"
    empty_key.write_text("\n")
    no_key = runner.invoke(main, [str(export_dir), "--api-key-file", str(empty_key)])
    assert no_key.exit_code == 2 and "API key file is empty" in no_key.output
    bad_name = runner.invoke(main, [str(export_dir), "--model-name", "a/b"])
    assert bad_name.exit_code == 2 and "model name must be" in bad_name.output
    zero = runner.invoke(main, [str(export_dir), "--max-batch", "0"])
    assert zero.exit_code == 2 and "--max-batch" in zero.output
