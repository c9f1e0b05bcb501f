"""benchmarks/gpu_2to4.py, the GPU suite of 2:4 semi-structured linears, checked on the CPU: the
2:4 masks keep the two largest of every four inputs, the encoder's linears (and only they) are
pruned, and the dry run writes its table with the 2:4 rows skipped and the reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import BertConfig, BertModel

from tests.test_peers import BENCH, _load


def test_two_four_masks_keep_the_two_largest_of_every_four():
    g = _load("gpu_2to4")
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 9.0, 8.0, -7.0, 0.0]])
    assert g.two_four_mask(w).tolist() == [[False, True, True, False, True, True, False, False]]
    assert not g.is_two_four(w) and g.is_two_four(w * g.two_four_mask(w))


def test_only_the_encoder_linears_are_pruned():
    g = _load("gpu_2to4")
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 vocab_size=50)).eval()
    pooler = model.pooler.dense.weight.clone()
    assert g.prune_two_four(model) == 2 * 6
    assert all(g.is_two_four(lin.weight) for lin in g.encoder_linears(model).values())
    assert torch.equal(model.pooler.dense.weight, pooler)


@pytest.mark.slow
def test_dry_run_writes_the_table(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "gpu_2to4.py"), "--dry-run", "--rounds", "1", "--warmup", "0",
                           "--batches", "1", "--seq-len", "8", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "gpu_2to4.json").read_text())
    assert result["pruned_linears"] == 36 and result["dtype"] == "torch.float32"
    rows = result["rows"]
    assert [r["row"] for r in rows if r["variant"] == "dense"][0] == "encoder b1 x 8"
    assert all("semi-structured tensors are CUDA-only" in r["skipped"] for r in rows if r["variant"] == "2:4")
    assert len([r for r in rows if r["variant"] == "dense"]) == 1 + 6
    assert "| 2:4 | skipped" in (tmp_path / "gpu_2to4.md").read_text()
