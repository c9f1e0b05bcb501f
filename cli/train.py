"""``smp-train``: Static Model Pruning of a frozen BERT encoder; a thin click layer over smp_train.

One process: ``smp-train -o runs/x``. Several (CPU gloo or GPUs, same flags):
``torchrun --nproc_per_node 2 -m cli.train -o runs/x`` or ``accelerate launch -m cli.train ...``.
"""

from __future__ import annotations

# ruff: noqa: E402  (the extra is checked before its packages are imported)

import json
import os
import shlex
import sys
from pathlib import Path

import click

from .common import cli_errors, configure_logging, require_extra, split_names

require_extra("smp-train", "train", "torch", "transformers", "accelerate")

from smp_train.config import HEAD_CHOICES, METHODS, DataConfig, DistillConfig, HeadConfig, PruningConfig, TrainConfig
from smp_train.errors import SmpTrainError



def _model_dir(model_dir: Path | None) -> Path:
    if model_dir is not None:
        return model_dir
    from smp_export.default_model import default_model_dir

    return default_model_dir()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_dir", type=click.Path(path_type=Path), required=False)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Run / checkpoint directory.")
@click.option("--method", type=click.Choice(METHODS), default="smp-s", show_default=True,
              help="smp-s / smp-l (SMP), global-topk and movement (baselines), dense and magnitude (no scores).")
@click.option("--keep", type=float, default=0.1, show_default=True, help="Final keep ratio v_f.")
@click.option("--granularity", default="weight", show_default=True,
              help="One score per: weight, neuron (FFN), head (attention), structured (neurons + heads), "
                   "hybrid (structured + a score per weight, --inner-keep), block:RxC (e.g. block:32x32) or "
                   "N:M (e.g. 2:4, with --keep N/M).")
@click.option("--head-keep", type=float, default=None,
              help="Final keep ratio of attention heads (head / structured granularity); default --keep.")
@click.option("--inner-keep", type=float, default=None,
              help="hybrid: final keep ratio of each matrix's per-weight TopK, intersected with the kept neurons "
                   "and heads (default 1: none pruned inside).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="SMP-S temperature p.")
@click.option("--lambda-final", type=float, default=None,
              help="Final regularizer weight [default: 400; 0 for neuron / head scores (measured better)].")
@click.option("--score-lr", type=float, default=2e-2, show_default=True)
@click.option("--score-init", type=float, default=0.0, show_default=True, help="Constant initial score.")
@click.option("--score-init-from", "score_init_mode", type=click.Choice(["constant", "magnitude"]), default="constant",
              show_default=True, help="magnitude: S_0 = |W| / mean|W| per matrix (first masks = magnitude masks).")
@click.option("--weight-lr", type=float, default=3e-5, show_default=True, help="Weights' lr (movement only).")
@click.option("--prune-start", type=float, default=0.1, show_default=True,
              help="Share of the steps at keep 1 before pruning starts (score warm-up; 0: none).")
@click.option("--prune-fraction", type=float, default=0.7, show_default=True,
              help="Share of the steps over which the keep ratio then falls cubically to --keep.")
@click.option("--head", "head_kind", type=click.Choice(HEAD_CHOICES), default="auto", show_default=True,
              help="auto: label-words with an MLM head, else prototype. linear is trained.")
@click.option("--label-words", type=str, default=None,
              help="One per class, comma-separated: MLM label words, or prototype label texts.")
@click.option("--label-template", type=str, default="{label}", show_default=True,
              help="Prototype label text from the class name, e.g. 'news about {label}'.")
@click.option("--prototype-scale", type=float, default=20.0, show_default=True)
@click.option("--head-lr", type=float, default=1e-3, show_default=True, help="lr of the linear head.")
@click.option("--distill/--no-distill", default=False, show_default=True, help="KD from the dense model.")
@click.option("--distill-temperature", type=float, default=2.0, show_default=True)
@click.option("--distill-alpha", type=float, default=0.5, show_default=True)
@click.option("--data", "source", type=click.Choice(["bbc", "table", "glue"]), default="bbc", show_default=True)
@click.option("--train-file", type=click.Path(path_type=Path), default=None)
@click.option("--eval-file", type=click.Path(path_type=Path), default=None)
@click.option("--text-column", default="text", show_default=True)
@click.option("--text-pair-column", default=None)
@click.option("--label-column", default="label", show_default=True)
@click.option("--max-seq-len", type=int, default=128, show_default=True)
@click.option("--max-train-examples", type=int, default=None)
@click.option("--max-eval-examples", type=int, default=None)
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--max-steps", type=int, default=-1, show_default=True, help="> 0 overrides --epochs.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Per process.")
@click.option("--eval-batch-size", type=int, default=64, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--logging-steps", type=int, default=10, show_default=True)
@click.option("--save-steps", type=int, default=None, help="Checkpoint every N steps (default: every epoch).")
@click.option("--dropout", type=float, default=None, help="Override hidden / attention dropout.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint-N in the output directory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--ship", type=click.Path(path_type=Path), default=None,
              help="Also write the small shipped form (packed masks + head + metadata) here.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress.")
def main(model_dir: Path | None, output: Path, method: str, keep: float, granularity: str, head_keep: float | None,
         inner_keep: float | None, temperature: float, lambda_final: float | None, score_lr: float, score_init: float,
         score_init_mode: str, weight_lr: float, prune_start: float, prune_fraction: float, head_kind: str,
         label_words: str | None, label_template: str, prototype_scale: float, head_lr: float, distill: bool,
         distill_temperature: float, distill_alpha: float, source: str, train_file: Path | None,
         eval_file: Path | None, text_column: str, text_pair_column: str | None, label_column: str,
         max_seq_len: int, max_train_examples: int | None, max_eval_examples: int | None, epochs: float,
         max_steps: int, batch_size: int, eval_batch_size: int, grad_accum: int, seed: int, logging_steps: int,
         save_steps: int | None, dropout: float | None, resume: bool, overwrite: bool, ship: Path | None,
         verbose: bool) -> None:
    """Prune MODEL_DIR (default: the packaged all-MiniLM-L6-v2) with SMP: all pretrained weights
    frozen, only mask scores trained. Writes a checkpoint smp-export reads with no extra flags."""
    configure_logging(verbose)
    with cli_errors(sigterm=True):
        from smp_train.trainer import run_training

        config = TrainConfig(
            model_dir=_model_dir(model_dir), output_dir=output,
            pruning=PruningConfig(method=method, keep=keep, granularity=granularity, head_keep=head_keep,
                                  inner_keep=inner_keep,
                                  temperature=temperature,
                                  lambda_final=lambda_final,
                                  score_lr=score_lr, score_init=score_init, score_init_mode=score_init_mode,
                                  weight_lr=weight_lr,
                                  prune_start=prune_start, prune_fraction=prune_fraction),
            head=HeadConfig(kind=head_kind, label_words=split_names(label_words), template=label_template,
                            scale=prototype_scale, head_lr=head_lr),
            distill=DistillConfig(enabled=distill, temperature=distill_temperature, alpha=distill_alpha),
            data=DataConfig(source=source, train_file=train_file, eval_file=eval_file, text_column=text_column,
                            text_pair_column=text_pair_column, label_column=label_column, max_seq_len=max_seq_len,
                            max_train_examples=max_train_examples, max_eval_examples=max_eval_examples),
            epochs=epochs, max_steps=max_steps, batch_size=batch_size, eval_batch_size=eval_batch_size,
            grad_accum=grad_accum, seed=seed, logging_steps=logging_steps, save_steps=save_steps,
            dropout=dropout, resume=resume, overwrite=overwrite)
        result = run_training(config)
        if ship is not None and _is_rank_zero():
            _ship(output, ship, result.metrics, model_dir)
    if _is_rank_zero():
        click.echo(json.dumps(result.metrics, indent=2))
    _close_process_group()


def _close_process_group() -> None:
    """Tear down the DDP process group the trainer opened (torchrun), before the interpreter
    exits: left to static destructors, gloo's threads made a rank abort at exit ("terminate
    called without an active exception") in about 1 run in 6 of test_train_distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _ship(output: Path, ship: Path, metrics: dict, model_dir: Path | None) -> None:
    from smp_export.default_model import DEFAULT_MODEL_PACKAGE
    from smp_train.checkpoint import write_shipped

    if not (output / "model.safetensors").is_file():
        raise SmpTrainError("nothing to ship: this run wrote no checkpoint (dense / magnitude runs do not)",
                            path=output, field="--ship")
    base = DEFAULT_MODEL_PACKAGE if model_dir is None else str(model_dir)
    write_shipped(output, ship, base_model=base,
                  extra={"eval": metrics, "command": shlex.join(["smp-train", *sys.argv[1:]])})
    click.echo(f"shipped: {ship}", err=True)


if __name__ == "__main__":
    main()
