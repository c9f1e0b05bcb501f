"""SIGTERM and SIGINT during ``smp-export`` both leave nothing behind: no output directory, no
temporary sibling, and the exit code a shell expects (143 / 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import write_dense_zero_checkpoint


def _interrupt_export(tmp_path: Path, signum: int) -> subprocess.CompletedProcess:
    w = write_dense_zero_checkpoint(tmp_path / "m", num_layers=2)
    out = tmp_path / "out"
    # --weights auto times every linear: seconds of work inside the temporary directory.
    cmd = [str(Path(sys.executable).parent / "smp-export"), str(w.path), "-o", str(out), "--weights", "auto",
           "--autotune-tokens", "64,128,256"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the export never created its temporary directory"
        time.sleep(0.005)
    os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert not out.exists(), "an interrupted export left an output directory"
    assert not list(tmp_path.glob(".out.*")), "an interrupted export left its temporary directory"
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"),
                                                (signal.SIGINT, 130, "interrupted")])
def test_a_signal_during_export_removes_the_temporary_directory(tmp_path, signum, code, word):
    result = _interrupt_export(tmp_path, signum)
    assert result.returncode == code, result.stderr
    assert word in result.stderr
    assert "Traceback" not in result.stderr
