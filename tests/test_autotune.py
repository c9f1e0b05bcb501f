"""--weights auto: per-linear timing and choice, recorded in the manifest."""

from __future__ import annotations

import numpy as np

from runtime.manifest import Manifest
from smp_export.autotune import AutotuneConfig, autotune_linears, time_linear
from smp_export.export import ExportOptions, export_onnx
from tests.helpers import tiny_checkpoint
from tests.kernel_helpers import random_weight

FAST = AutotuneConfig(tokens=(16, 40), repeats=2, warmup=1, threads=1)


def test_candidates_include_bsr_only_when_blocks_fit():
    rng = np.random.default_rng(0)
    blocky = random_weight(rng, 32, 32, 0.2, (1, 4))
    scattered = random_weight(rng, 32, 32, 0.05)
    b = np.zeros(32, np.float32)
    assert {"dense", "csr", "bsr1x4"} <= set(time_linear(blocky, b, FAST))
    timings = time_linear(scattered, b, FAST)
    assert set(timings) == {"dense", "csr"} and all(v > 0 for v in timings.values())


def test_autotune_picks_the_fastest_and_keeps_the_timings():
    import torch

    rng = np.random.default_rng(1)
    weights = {"a.weight": torch.from_numpy(random_weight(rng, 48, 32, 0.05)),
               "a.bias": torch.zeros(48)}
    (choice,) = autotune_linears(weights, ["a.weight"], FAST).values()
    assert choice.format in ("dense", "csr", "bsr")
    label = choice.format if choice.format != "bsr" else f"bsr{choice.block_shape[0]}x{choice.block_shape[1]}"
    assert choice.timings_ms[label] == min(choice.timings_ms.values())


def test_auto_export_records_choices_and_validates(tmp_path):
    ckpt = tiny_checkpoint(keep=0.1, hidden_size=64, intermediate_size=128)
    manifest = export_onnx(ckpt, tmp_path / "e", options=ExportOptions(weights="auto", autotune=FAST))
    assert manifest.validation.passed
    on_disk = Manifest.read(tmp_path / "e")
    assert on_disk.weights == "auto"
    for record in on_disk.layers:
        assert record.format in ("dense", "compact", "csr", "bsr")
        assert {"dense", "csr"} <= set(record.timings_ms)
        assert (record.block_shape != []) == (record.format == "bsr")
    assert sum(on_disk.totals["formats"].values()) == len(on_disk.layers)
    assert on_disk.custom_op_domains == (["ai.smp"] if any(r.format in ("csr", "bsr") for r in on_disk.layers)
                                         else [])


def test_pick_weighs_every_shape_alike():
    """A plain sum would let the 4096-token shape decide alone; relative times do not."""
    from smp_export.autotune import pick

    medians = {"dense": [100.0, 1.0], "csr": [90.0, 3.0]}      # csr 10% faster at 4096, 3x slower at 128
    assert min(medians, key=lambda k: sum(medians[k])) == "csr"
    assert pick(medians) == "dense"
    assert pick({"dense": [5.0], "csr": [4.0], "bsr1x4": [4.5]}) == "csr"
