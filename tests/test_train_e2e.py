"""Tiny end to end: smp-train -> smp-export reads the directory with no flags -> ONNX validates.

Also: the exported masks are the trained masks, resume after an interruption gives the
uninterrupted run's scores, and the shipped form (packed masks + head) exports the same model.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from smp_export.export import ExportOptions, export_onnx
from smp_export.readers import read_checkpoint
from smp_train.build import build_model
from smp_train.checkpoint import load_shipped, load_trainable, write_shipped
from smp_train.trainer import run_training
from tests.test_train_fixtures import tiny_config, write_tiny_base, write_tiny_csv


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, write_tiny_base(root / "base"), write_tiny_csv(root / "data.csv")


def _scores(directory):
    return {k: v for k, v in load_file(str(directory / "model.safetensors")).items() if k.endswith("mask_scores")}


@pytest.mark.slow
def test_train_export_validate_smp_s_prototype(tiny, tmp_path):
    root, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, keep=0.3)
    result = run_training(config)
    out = config.output_dir
    assert result.metrics["steps"] == 6 and result.metrics["accuracy"] is not None
    for name in ("config.json", "model.safetensors", "vocab.txt", "eval_results.json", "training_log.json",
                 "training_log.csv", "training_log.svg"):
        assert (out / name).is_file(), name
    smp = json.loads((out / "config.json").read_text())["smp"]
    assert smp["method"] == "smp-s" and smp["keep"] == 0.3 and smp["head"] == "prototype"
    assert smp["temperature"] == 1.0 and smp["classes"] == ["neg", "pos"]
    log = json.loads((out / "training_log.json").read_text())
    assert any("keep" in r and "lambda" in r for r in log) and any("eval_accuracy" in r for r in log)
    assert (out / "training_log.svg").read_text().startswith("<svg")

    ckpt = read_checkpoint(out)                      # no flags: format, method, keep, head detected
    assert ckpt.source_format == "smp" and ckpt.method == "smp-s" and ckpt.head.kind == "prototype"
    model, _, _ = build_model(config, ("neg", "pos"))
    load_trainable(model, out)
    trained = model.masks(0.3)
    assert all(torch.equal(trained[n], ckpt.masks[n]) for n in trained)
    assert abs(ckpt.density() - result.metrics["density"]) < 1e-12
    for weights in ("sparse-initializer", "compact"):
        manifest = export_onnx(ckpt, tmp_path / f"onnx-{weights}", options=ExportOptions(weights=weights))
        assert manifest.validation.passed and manifest.head["kind"] == "prototype"
        assert manifest.output_names == ["logits"]

    shipped = write_shipped(out, tmp_path / "shipped", base_model=str(base))
    again = load_shipped(shipped)
    assert all(torch.equal(again.masks[n], ckpt.masks[n]) for n in ckpt.masks)
    manifest = export_onnx(again, tmp_path / "onnx-shipped", options=ExportOptions(weights="dense"))
    assert manifest.validation.passed and manifest.head["label_words"] == ["neg", "pos"]


@pytest.mark.parametrize("method,head,base_head", [("smp-l", "label-words", "smp-label-words"),
                                                    ("global-topk", "linear", "none"),
                                                    ("movement", "prototype", "none")])
def test_other_methods_and_heads_export(tiny, tmp_path, method, head, base_head):
    root, base, csv = tiny
    if base_head != "none":
        base = write_tiny_base(tmp_path / "mlm", head=base_head)
    config = tiny_config(tmp_path, base, csv, method=method, head=head, keep=0.2, max_steps=3,
                         label_words=("bad", "good") if head != "linear" else ())
    frozen = load_file(str(base / "model.safetensors"))
    run_training(config)
    ckpt = read_checkpoint(config.output_dir)
    assert ckpt.method == {"smp-l": "smp-l", "global-topk": "global-topk", "movement": "smp-l"}[method]
    assert ckpt.head.kind == {"label-words": "smp-label-words", "linear": "sequence-classification",
                              "prototype": "prototype"}[head]
    model, _, _ = build_model(config, ("neg", "pos"))
    load_trainable(model, config.output_dir)
    trained = model.masks(0.2)
    assert all(torch.equal(trained[n], ckpt.masks[n]) for n in trained)
    name = "encoder.layer.0.attention.self.query.weight"
    changed = not torch.equal(ckpt.weights[name], frozen.get(name, frozen.get("bert." + name)))
    assert changed == (method == "movement")          # only movement pruning trains the weights
    manifest = export_onnx(ckpt, tmp_path / "onnx", options=ExportOptions(weights="dense"))
    assert manifest.validation.passed


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted(tiny, tmp_path):
    root, base, csv = tiny
    straight = tiny_config(tmp_path, base, csv, output="straight", save_steps=2, max_steps=4)
    run_training(straight)
    broken = tiny_config(tmp_path, base, csv, output="broken", save_steps=2, max_steps=4)
    with pytest.raises(KeyboardInterrupt):
        run_training(broken, callbacks=[_Interrupt()])
    assert (broken.output_dir / "checkpoint-2").is_dir() and not (broken.output_dir / "model.safetensors").exists()
    resumed = tiny_config(tmp_path, base, csv, output="broken", save_steps=2, max_steps=4, resume=True)
    result = run_training(resumed)
    assert result.metrics["steps"] == 4
    a, b = _scores(straight.output_dir), _scores(broken.output_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    log = json.loads((broken.output_dir / "training_log.json").read_text())
    assert [r["step"] for r in log if "loss" in r][0] == 1   # the log survived the interruption


@pytest.mark.parametrize("method", ["dense", "magnitude"])
def test_dense_and_magnitude_rows_only_evaluate(tiny, tmp_path, method):
    root, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, method=method, keep=0.1)
    result = run_training(config)
    assert result.metrics["steps"] == 0 and 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.metrics["density"] == (1.0 if method == "dense" else pytest.approx(0.1, abs=0.01))
    assert (config.output_dir / "eval_results.json").is_file()
    assert not (config.output_dir / "model.safetensors").exists()


def test_distillation_from_the_dense_model_runs_and_is_recorded(tiny, tmp_path):
    from smp_train.config import DistillConfig

    root, base, csv = tiny
    config = tiny_config(tmp_path, base, csv, max_steps=2, distill=DistillConfig(enabled=True))
    run_training(config)
    smp = json.loads((config.output_dir / "config.json").read_text())["smp"]
    assert smp["distill"] == {"enabled": True, "temperature": 2.0, "alpha": 0.5}
