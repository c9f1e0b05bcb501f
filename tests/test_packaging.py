"""The wheel: its five packages (never `benchmarks` or `tests`), a deployment-only base install,
extras for the rest, torch pinned to the local CPU wheel."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_wheel_packages_exclude_benchmarks_and_tests():
    packages = PROJECT["tool"]["scikit-build"]["wheel"]["packages"]
    assert sorted(packages) == ["cli", "runtime", "smp_bench", "smp_export", "smp_train"]
    for package in packages:            # each is a real package: its modules ship with it
        assert (ROOT / package / "__init__.py").is_file(), package


def test_console_scripts_point_at_click_commands():
    import click

    for name, target in PROJECT["project"]["scripts"].items():
        module_name, attr = target.split(":")
        module = __import__(module_name, fromlist=[attr])
        assert isinstance(getattr(module, attr), click.Command), name


def test_base_install_is_what_a_deployment_needs():
    base = _names(PROJECT["project"]["dependencies"])
    assert base == {"numpy", "tokenizers", "click", "aiohttp", "prometheus-client"}
    extras = PROJECT["project"]["optional-dependencies"]
    assert {"torch", "transformers", "onnx"} <= _names(extras["export"])
    for extra in ("train", "bench"):          # both build on the exporter
        assert "smp-export" in _names(extras[extra])
    assert "matplotlib" in _names(extras["bench"]) and "accelerate" in _names(extras["train"])


def test_torch_is_pinned_to_the_local_cpu_wheel():
    extras = PROJECT["project"]["optional-dependencies"]
    assert "torch==2.13.0" in extras["export"]
    every = [r for reqs in [PROJECT["project"]["dependencies"], *extras.values()] for r in reqs]
    assert [r for r in every if r.startswith("torch")] == ["torch==2.13.0"]
    assert not any(dep.startswith("onnxruntime") for dep in PROJECT["project"]["dependencies"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    assert any(d.startswith("onnxruntime") and "gpu" not in d for d in extras["cpu"])
