"""Progress of long work: smp_export reports export steps and autotune's linears to a listener
(none by default); smp-bench's bars draw them on a terminal and nothing elsewhere."""

from __future__ import annotations

import io
import sys

import pytest

from runtime.kernels import library_available
from smp_bench.progress import TaskBars
from smp_export.export import ExportOptions, export_onnx
from smp_export.progress import listening, report
from tests.helpers import tiny_checkpoint


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_export_reports_its_steps(tmp_path):
    seen: list[tuple] = []
    with listening(lambda *event: seen.append(event)):
        export_onnx(tiny_checkpoint(), tmp_path / "e", options=ExportOptions(weights="compact"))
    steps = [e for e in seen if e[0] == "export"]
    assert [e[1] for e in steps] == list(range(7)) and {e[2] for e in steps} == {6}
    assert steps[0][3] == "masking and compacting" and steps[4][3].startswith("validating")
    report("export", 1, 2)                    # outside the block: nobody listens, nothing happens
    assert len(seen) == len(steps)


@pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")
def test_autotune_reports_each_linear(tmp_path):
    from smp_export.autotune import AutotuneConfig

    seen: list[tuple] = []
    ckpt = tiny_checkpoint()
    with listening(lambda *event: seen.append(event)):
        export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights="auto", autotune=AutotuneConfig(tokens=(8,))))
    tuned = [e for e in seen if e[0] == "autotune"]
    assert [e[1] for e in tuned] == list(range(len(ckpt.masks) + 1))
    assert tuned[0][3] in ckpt.masks and tuned[-1][3] == "done"


def test_bars_draw_on_a_terminal_only(monkeypatch):
    pytest.importorskip("tqdm")
    for stream, drawn in ((_Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        bars = TaskBars(enabled=True)
        for done in range(4):
            bars("export", done, 3, f"step {done}")
        assert not bars.bars                 # closed once done
        assert ("export" in stream.getvalue()) == drawn
    monkeypatch.setattr(sys, "stderr", _Terminal())
    quiet = TaskBars(enabled=False)          # --no-progress
    quiet("autotune", 0, 5, "x")
    quiet.close()
    assert sys.stderr.getvalue() == ""
