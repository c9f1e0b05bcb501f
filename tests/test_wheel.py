"""The wheel `pip wheel .` builds carries the ai.smp library, and installs and runs a kernel
export in a fresh virtual environment with no compiler used (binary packages only, CC/CXX
pointing at /bin/false), and without torch: a deployment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime.kernels import LIBRARY_NAME, library_available
from runtime.session import ModelSession
from tests.test_serve_support import tiny_kernel_export

ROOT = Path(__file__).resolve().parents[1]
#: What the README promises the library needs (README "Install", runtime/native/README.md "Wheel").
GLIBC_MAX, GLIBCXX_MAX = (2, 27), (3, 4, 29)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not library_available(), reason="the ai.smp library is not built")]

_RUN = """
import json, sys
import numpy as np
from runtime.session import ModelSession
from runtime.kernels import custom_op_library_path
session = ModelSession.load(sys.argv[1])
np.save(sys.argv[3], session.run(dict(np.load(sys.argv[2])))["logits"])
try:
    import torch  # noqa: F401
    has_torch = True
except ImportError:
    has_torch = False
print(json.dumps({"library": str(custom_op_library_path()), "torch": has_torch}))
"""


# Network failures only: a requirement no registry can satisfy is a failure, not a skip.
_OFFLINE = ("Network is unreachable", "Temporary failure in name resolution",
            "Failed to establish a new connection", "Max retries exceeded")


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``args``; skip (not fail) when pip cannot reach a package registry."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    if done.returncode != 0 and any(sign in done.stdout + done.stderr for sign in _OFFLINE):
        pytest.skip(f"no package registry reachable for {' '.join(args[2:4])}: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, f"{args[:3]}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)])
    (found,) = out.glob("smp_export-*.whl")
    return found


def _versions(data: bytes, prefix: bytes) -> list[tuple[int, ...]]:
    return [tuple(int(p) for p in m.split(b".")) for m in re.findall(prefix + rb"_([0-9.]+[0-9])", data)]


def test_wheel_holds_the_library_and_only_the_five_packages(wheel):
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl")     # one wheel for every CPython
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        library = archive.read(f"runtime/native/{LIBRARY_NAME}")
    tops = {n.split("/")[0] for n in names if not n.startswith("smp_export-")}
    assert tops == {"cli", "runtime", "smp_bench", "smp_export", "smp_train"}
    assert not [n for n in names if n.endswith((".cc", ".h")) or "CMakeLists" in n]
    # The library asks for no newer glibc / libstdc++ than the README states.
    assert max(_versions(library, rb"GLIBC")) <= GLIBC_MAX
    assert max(_versions(library, rb"GLIBCXX")) <= GLIBCXX_MAX


def test_wheel_installs_and_runs_a_kernel_export_without_build_tools(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    no_tools = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false", "PIP_ONLY_BINARY": ":all:"}
    no_tools.pop("SMP_SPARSE_LIBRARY", None)
    installed = _run([str(python), "-m", "pip", "install", "--only-binary", ":all:", f"{wheel}[cpu]"], env=no_tools)
    assert "Building wheel" not in installed.stdout and "Running setup.py" not in installed.stdout
    export = tiny_kernel_export(tmp_path / "export")
    ids = np.array([[2, 5, 9, 4, 0], [3, 8, 7, 6, 10]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    np.savez(tmp_path / "feeds.npz", **feeds)
    done = _run([str(python), "-c", _RUN, str(export), str(tmp_path / "feeds.npz"), str(tmp_path / "out.npy")],
                env=no_tools, cwd=tmp_path)                # not the checkout: the wheel's packages only
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"library": str(env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                                     / "site-packages" / "runtime" / "native" / LIBRARY_NAME), "torch": False}
    want = ModelSession.load(export).run(feeds)["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-6, atol=1e-6)
    serve_help = _run([str(env_dir / "bin" / "smp-serve"), "--help"], env=no_tools, cwd=tmp_path)
    assert "--write-model-repository" in serve_help.stdout
