"""smp-train with structured granularities -> smp-export: the masks trained are the masks
exported, they have the claimed structure, and ``compact`` removes the pruned units exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from smp_export.errors import CheckpointError, MaskError
from smp_export.export import ExportOptions, export_onnx
from smp_export.readers import ReadOptions, read_checkpoint
from smp_export.structure import Granularity, head_key, neuron_key
from smp_train.build import build_model
from smp_train.checkpoint import load_shipped, load_trainable, write_shipped
from smp_train.config import PruningConfig
from smp_train.errors import TrainConfigError
from smp_train.trainer import run_training
from tests.test_train_fixtures import tiny_config, write_tiny_base, write_tiny_csv


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-structured")
    return root, write_tiny_base(root / "base"), write_tiny_csv(root / "data.csv")


@pytest.mark.parametrize("values,field", [({"granularity": "rows"}, "granularity"),
                                          ({"granularity": "head", "method": "global-topk"}, "granularity"),
                                          ({"granularity": "2:4", "keep": 0.1}, "keep"),
                                          ({"granularity": "neuron", "head_keep": 0.5}, "head_keep"),
                                          ({"granularity": "structured", "inner_keep": 0.5}, "inner_keep"),
                                          ({"granularity": "hybrid", "inner_keep": 0.0}, "inner_keep")])
def test_bad_granularity_settings_are_config_errors(values, field):
    with pytest.raises(TrainConfigError) as err:
        PruningConfig(**values)
    assert err.value.field == field


def test_only_unit_scores_train_and_forward_uses_their_masks(tiny, tmp_path):
    _, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, pruning=PruningConfig(method="smp-l", keep=0.5,
                                                                   granularity="structured"))
    model, _, _ = build_model(config, ("neg", "pos"))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted([f"bert.{neuron_key(i)}" for i in range(2)] + [f"bert.{head_key(i)}" for i in range(2)])
    ids = torch.randint(5, 40, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        for s in model.scores().values():
            s.normal_()
    model.eval()
    with torch.no_grad():
        got = model(ids, mask, keep=0.5)["logits"]
        masks = model.masks(0.5)
        for name, mod in model.masked_linears().items():        # the same masks applied by hand
            mod.weight.mul_(masks[name])
        want = model(ids, mask, dense=True)["logits"]
    torch.testing.assert_close(got, want)
    model.train()
    loss = model(ids, mask, keep=0.5)["logits"].square().sum()
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in model.scores().values())


@pytest.mark.parametrize("granularity,keep", [("neuron", 0.5), ("head", 0.5), ("structured", 0.5), ("hybrid", 0.5),
                                              ("block:8x4", 0.3), ("2:4", 0.5)])
def test_train_export_compact_and_ship(tiny, tmp_path, granularity, keep):
    _, base, csv = tiny
    inner = 0.5 if granularity == "hybrid" else None
    config = tiny_config(tmp_path, base, csv, pruning=PruningConfig(method="smp-s", keep=keep, inner_keep=inner,
                                                                   granularity=granularity))
    run_training(config)
    out = config.output_dir
    assert json.loads((out / "config.json").read_text())["smp"]["granularity"] == granularity
    ckpt = read_checkpoint(out)
    assert ckpt.method == "smp-s" and ckpt.metadata["granularity"] == granularity
    model, _, _ = build_model(config, ("neg", "pos"))
    load_trainable(model, out)
    trained = model.masks(keep)
    assert all(torch.equal(trained[n], ckpt.masks[n]) for n in trained)
    manifest = export_onnx(ckpt, tmp_path / "compact", options=ExportOptions(weights="compact"))
    assert manifest.validation.passed                    # compaction computes the masked model
    report = manifest.metadata["structure"]
    if granularity == "hybrid":                          # the kernels run what compaction leaves
        kernel = export_onnx(ckpt, tmp_path / "kernel", options=ExportOptions(weights="sparse-kernel"))
        assert kernel.validation.passed and kernel.totals["neurons_removed"] == manifest.totals["neurons_removed"]
        assert ckpt.metadata["inner_keep"] == 0.5 and ckpt.density() < 0.5 * 0.75
    if granularity in ("neuron", "head"):
        removed = manifest.totals["neurons_removed" if granularity == "neuron" else "heads_removed"]
        assert removed > 0 and manifest.totals["heads_removed" if granularity == "neuron" else "neurons_removed"] == 0
    if granularity in ("structured", "hybrid"):
        removed = manifest.totals["heads_removed"] + manifest.totals["neurons_removed"]
        assert removed == (4 * 2 - sum(report["heads_with_weights"])) + (64 * 2 - sum(report["neurons_with_weights"]))
        assert removed > 0 and manifest.totals["stored_params"] < manifest.totals["params"]
    if granularity == "2:4":
        assert report["two_four"]
    shipped = load_shipped(write_shipped(out, tmp_path / "shipped", base_model=str(base)))
    assert shipped.metadata["granularity"] == granularity
    assert all(torch.equal(shipped.masks[n], ckpt.masks[n]) for n in ckpt.masks)


def test_structured_magnitude_baseline_prunes_whole_units(tiny, tmp_path):
    _, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, pruning=PruningConfig(method="magnitude", keep=0.5,
                                                                   granularity="structured"))
    model, _, _ = build_model(config, ("neg", "pos"))
    masks = model.masks(0.5)
    w1 = masks["encoder.layer.0.intermediate.dense.weight"]
    assert torch.equal(w1.any(1), w1.all(1)) and int(w1.all(1).sum()) == 32
    norms = torch.cat([model.masked_linears()["encoder.layer.0.intermediate.dense.weight"].weight,
                       model.masked_linears()["encoder.layer.0.output.dense.weight"].weight.T], 1).norm(dim=1)
    assert norms[w1.all(1)].min() >= norms[~w1.all(1)].max()


def test_a_checkpoint_whose_scores_do_not_match_its_granularity_is_refused(tiny, tmp_path):
    _, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, max_steps=2,
                         pruning=PruningConfig(method="smp-l", keep=0.5, granularity="structured"))
    run_training(config)
    out = config.output_dir
    cfg = json.loads((out / "config.json").read_text())
    cfg["smp"]["granularity"] = "block:5x5"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MaskError, match="does not divide"):
        read_checkpoint(out)
    cfg["smp"]["granularity"] = "structured"
    (out / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(out / "model.safetensors"))
    del tensors["encoder.layer.1.attention.head_scores"]
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(MaskError, match="scores missing") as err:
        read_checkpoint(out)
    assert err.value.field == "encoder.layer.1.attention.head_scores" and "model.safetensors" in str(err.value)


def test_granularity_claimed_for_a_plain_zero_weight_model_is_checked(tmp_path):
    from tests.fixtures import write_dense_base

    written = write_dense_base(tmp_path / "zeros")
    tensors = load_file(str(tmp_path / "zeros" / "model.safetensors"))
    tensors["encoder.layer.0.intermediate.dense.weight"][3:9] = 0         # whole neurons 3..8
    tensors["encoder.layer.0.output.dense.weight"][:, 3:9] = 0
    save_file(tensors, str(tmp_path / "zeros" / "model.safetensors"), metadata={"format": "pt"})
    ckpt = read_checkpoint(written.path, ReadOptions(granularity="neuron"))
    assert ckpt.metadata["structure"]["neurons_with_weights"][0] == 64 - 6
    with pytest.raises(MaskError, match="not 2:4") as err:
        read_checkpoint(written.path, ReadOptions(granularity="2:4"))
    assert err.value.field == "--granularity"
    assert Granularity.parse(ckpt.metadata["granularity"]).neurons


def test_the_regularizer_is_off_by_default_for_unit_scores_only():
    assert PruningConfig().regularizer_lambda == 400.0
    assert PruningConfig(granularity="block:4x4").regularizer_lambda == 400.0
    assert PruningConfig(granularity="structured").regularizer_lambda == 0.0
    assert PruningConfig(granularity="hybrid", lambda_final=5.0).regularizer_lambda == 5.0


def test_smp_export_refuses_a_claimed_structure_before_any_output(tmp_path):
    from click.testing import CliRunner

    from cli.export import main
    from tests.fixtures import write_dense_base

    written = write_dense_base(tmp_path / "zeros", tokenizer=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(written.path), "-o", str(out), "--granularity", "2:4"])
    assert result.exit_code == 2 and "--granularity" in result.output and "not 2:4" in result.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    bad = CliRunner().invoke(main, [str(written.path), "-o", str(out), "--granularity", "rows"])
    assert bad.exit_code == 2 and "unknown granularity" in bad.output and not out.exists()


def test_the_recorded_structure_is_checked_and_a_contradicting_claim_refused(tiny, tmp_path):
    import numpy as np

    from smp_export.readers.packed import pack_masks

    _, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, max_steps=2,
                         pruning=PruningConfig(method="smp-l", keep=0.5, granularity="neuron"))
    run_training(config)
    shipped = write_shipped(config.output_dir, tmp_path / "shipped", base_model=str(base))
    with pytest.raises(MaskError, match="contradicts the checkpoint's recorded neuron"):
        read_checkpoint(shipped, ReadOptions(granularity="head"))
    masks = load_shipped(shipped).masks
    masks["encoder.layer.0.intermediate.dense.weight"][0, 0] ^= True      # one bit: a neuron partly kept
    np.save(shipped / "masks.npy", pack_masks(masks))
    for options in (ReadOptions(), ReadOptions(granularity="neuron")):
        with pytest.raises(MaskError, match="1 neurons are partly kept"):
            read_checkpoint(shipped, options)


def test_a_structured_checkpoint_missing_a_linear_names_it(tiny, tmp_path):
    _, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, max_steps=2,
                         pruning=PruningConfig(method="smp-l", keep=0.5, granularity="neuron"))
    run_training(config)
    tensors = load_file(str(config.output_dir / "model.safetensors"))
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(config.output_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="encoder linear weights missing") as err:
        read_checkpoint(config.output_dir)
    assert err.value.field == "encoder.layer.1.output.dense.weight" and "model.safetensors" in str(err.value)
