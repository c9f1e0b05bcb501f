"""The distributed path: 2 CPU processes (torchrun, gloo) give the masks and scores of one
process with the same global batch.

The masks must be identical. The scores agree to float rounding only (~1e-6): DDP sums two
half-batch gradients where one process sums the whole batch, so the additions associate
differently; nothing else differs (same examples per step, same schedule, same updates).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smp_export.readers import read_checkpoint
from smp_train.config import DataConfig
from smp_train.trainer import run_training
from tests.test_train_fixtures import tiny_config, write_tiny_base, write_tiny_csv

pytestmark = pytest.mark.slow   # subprocesses / the packaged MiniLM: seconds each


ROOT = Path(__file__).resolve().parents[1]


def _scores(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(directory / "model.safetensors")).items() if k.endswith("mask_scores")}


def test_two_gloo_processes_match_one_process(tmp_path):
    base = write_tiny_base(tmp_path / "base")
    csv = write_tiny_csv(tmp_path / "d.csv", rows=64)
    common = dict(keep=0.3, max_steps=4, max_seq_len=32)
    data = DataConfig(source="table", train_file=csv, max_seq_len=32, max_train_examples=48)
    single = tiny_config(tmp_path, base, csv, output="single", keep=common["keep"], max_steps=common["max_steps"],
                         batch_size=8, data=data)
    run_training(single)

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cli.train", str(base), "-o", str(out), "--data", "table", "--train-file", str(csv),
           "--max-train-examples", "48", "--batch-size", "4", "--max-steps", str(common["max_steps"]),
           "--keep", str(common["keep"]), "--max-seq-len", str(common["max_seq_len"]),
           "--label-words", "bad,good", "--eval-batch-size", "16", "--logging-steps", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"world_size": 2' in proc.stdout

    a, b = _scores(single.output_dir), _scores(out)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
    ma, mb = read_checkpoint(single.output_dir).masks, read_checkpoint(out).masks
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
