"""Every CLI maps the project's one error root the same way: ``error: <message>`` naming the file
and field, exit 2; a refusal of the system (port in use, permissions) exit 1; no traceback."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from cli import bench, export, serve, train
from cli.common import EXIT_OS, cli_errors
from runtime.errors import SmpError
from smp_bench.errors import BenchmarkError
from smp_export.errors import CheckpointError
from smp_train.errors import TrainConfigError


@pytest.mark.parametrize("error", [CheckpointError("bad", path="m/config.json", field="hidden_size"),
                                   TrainConfigError("bad", path="m/config.json", field="hidden_size"),
                                   BenchmarkError("bad", path="m/config.json", field="hidden_size")])
def test_every_stage_error_is_the_same_exit_and_message(error, capsys):
    assert isinstance(error, SmpError)
    with pytest.raises(SystemExit) as exit_info, cli_errors():
        raise error
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: m/config.json: field 'hidden_size': bad\n"


def test_an_os_refusal_exits_1(capsys):
    with pytest.raises(SystemExit) as exit_info, cli_errors():
        raise PermissionError(13, "Permission denied", "/out")
    assert exit_info.value.code == EXIT_OS and "error: [Errno 13] Permission denied" in capsys.readouterr().err


def test_each_cli_reports_a_missing_model_directory_alike(tmp_path, keep_logging):
    missing = str(tmp_path / "nowhere")
    runs = {"smp-export": (export.main, [missing]),
            "smp-bench": (bench.main, ["--model-dir", missing, "--no-progress", "-o", str(tmp_path / "b")]),
            "smp-serve": (serve.main, [missing]),
            "smp-train": (train.main, [missing, "-o", str(tmp_path / "t")])}
    for name, (command, args) in runs.items():
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2, (name, result.output)
        assert result.output.startswith("error: ") and missing in result.output, (name, result.output)
        assert "Traceback" not in result.output, name


def test_serve_on_a_taken_port_exits_1(tmp_path, keep_logging):
    from smp_export.export import ExportOptions, export_onnx
    from tests.helpers import tiny_checkpoint

    export_onnx(tiny_checkpoint(), tmp_path / "e", options=ExportOptions(weights="dense", validate=False))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(serve.main, [str(tmp_path / "e"), "--port", str(port)])
    assert result.exit_code == EXIT_OS and "\nerror: [Errno 98]" in result.output and "Traceback" not in result.output


def test_a_command_of_a_missing_extra_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from cli.common import require_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        require_extra("smp-export", "export", "torch", "numpy")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: smp-export needs the export extra (missing: torch): "
                                       "pip install torch==2.13.0 && pip install 'smp-export[export]'\n")
    require_extra("smp-serve", "cpu", "numpy")          # present: nothing happens
