"""The wheel installs smp_export, runtime, cli (and smp_train): never `benchmarks` or `tests`."""

from __future__ import annotations

import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_wheel_packages_exclude_benchmarks_and_tests():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["scikit-build"]["wheel"]["packages"]
    assert sorted(packages) == ["cli", "runtime", "smp_export", "smp_train"]
    for package in packages:            # each is a real package: its modules ship with it
        assert (ROOT / package / "__init__.py").is_file(), package


def test_console_scripts_point_at_click_commands():
    import click

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name, target in project["project"]["scripts"].items():
        module_name, attr = target.split(":")
        module = __import__(module_name, fromlist=[attr])
        assert isinstance(getattr(module, attr), click.Command), name


def test_torch_is_pinned_to_the_local_cpu_wheel():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "torch==2.13.0" in project["project"]["dependencies"]
    extras = project["project"]["optional-dependencies"]
    assert not any(dep.startswith("onnxruntime") for dep in project["project"]["dependencies"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    assert any(d.startswith("onnxruntime") and "gpu" not in d for d in extras["cpu"])
