"""SMP on the Hugging Face Trainer: schedules in ``compute_loss``, checkpoints smp-export reads.

The same code runs in one process and under ``torchrun`` / ``accelerate launch`` (DDP; gloo
on CPU): only the score parameters (and a trainable head, or the weights for movement
pruning) require gradients, and every process derives identical masks from identical scores.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from . import __version__
from .build import HeadInfo, build_model
from .checkpoint import load_trainable, write_checkpoint
from .config import TrainConfig
from .data import PadCollator, Splits, load_splits, tokenize
from .errors import ResumeError
from .loss import distillation_loss, score_regularizer
from .modeling import SmpModel
from .report import write_log_files
from .schedule import CubicSchedule, prune_steps

SCORE_PARAMETERS = ("mask_scores", "neuron_scores", "head_scores", "block_scores")   # trained at score_lr

logger = logging.getLogger(__name__)

EVAL_RESULTS = "eval_results.json"


def accuracy(pred: EvalPrediction) -> dict[str, float]:
    """Held-out accuracy of argmax logits."""
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(pred.label_ids)).mean())}


class SmpTrainer(Trainer):
    """Trainer with SMP's schedule, loss and checkpoint format.

    ``compute_loss`` reads the keep ratio v_t and lambda_t from the optimizer step; ``log``
    adds them (and the loss parts, the mask density) to every training log record.
    """

    def __init__(self, *args: Any, smp_config: TrainConfig, head_info: HeadInfo, tokenizer_for_save=None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.smp_config = smp_config
        self.head_info = head_info
        self.tokenizer_for_save = tokenizer_for_save
        self._last: dict[str, torch.Tensor | float] = {}

    # ------------------------------------------------------------------ schedule

    def schedule(self) -> CubicSchedule:
        pruning = self.smp_config.pruning
        total = max(int(self.state.max_steps or 0), 0)
        return CubicSchedule(final_keep=pruning.keep, lambda_final=pruning.regularizer_lambda,
                             prune_steps=prune_steps(total, pruning.prune_fraction) if total else 0,
                             start_step=prune_steps(total, pruning.prune_start) if total else 0)

    def current_keep(self) -> float:
        pruning = self.smp_config.pruning
        if not pruning.trains_scores:
            return pruning.keep
        return self.schedule().keep(self.state.global_step)

    def _smp_model(self) -> SmpModel:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ optimizer

    def create_optimizer(self):
        """AdamW with one group per kind of trained tensor: scores, weights (movement), head."""
        if self.optimizer is not None:
            return self.optimizer
        cfg = self.smp_config
        groups: dict[str, list[torch.nn.Parameter]] = {"scores": [], "weights": [], "head": []}
        for name, param in self._smp_model().named_parameters():
            if not param.requires_grad:
                continue
            key = "scores" if name.endswith(SCORE_PARAMETERS) else "head" if name.startswith("head.") else "weights"
            groups[key].append(param)
        lrs = {"scores": cfg.pruning.score_lr, "weights": cfg.pruning.weight_lr, "head": cfg.head.head_lr}
        param_groups = [{"params": ps, "lr": lrs[k], "weight_decay": 0.0} for k, ps in groups.items() if ps]
        self.optimizer = torch.optim.AdamW(param_groups, betas=(self.args.adam_beta1, self.args.adam_beta2),
                                           eps=self.args.adam_epsilon)
        return self.optimizer

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        features = {k: v for k, v in inputs.items() if k != "labels"}
        keep = self.current_keep()
        training = model.training
        teacher = self._teacher_logits(features) if training and self.smp_config.distill.enabled else None
        logits = model(**features, keep=keep)["logits"]
        ce = F.cross_entropy(logits, labels)
        loss = ce
        if teacher is not None:
            d = self.smp_config.distill
            loss = distillation_loss(logits, teacher, labels, temperature=d.temperature, alpha=d.alpha)
        if training:
            loss = self._add_regularizer(loss, keep)
            self._last.update(ce=ce.detach(), keep=keep)
        return (loss, {"logits": logits}) if return_outputs else loss

    @torch.no_grad()
    def _teacher_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        smp = self._smp_model()
        smp.eval()
        try:
            return smp(**features, dense=True)["logits"]
        finally:
            smp.train()

    def _add_regularizer(self, loss: torch.Tensor, keep: float) -> torch.Tensor:
        pruning = self.smp_config.pruning
        if not pruning.trains_scores or pruning.regularizer_lambda <= 0:
            return loss
        schedule = self.schedule()
        step = self.state.global_step
        reg = score_regularizer(self._smp_model().scores().values())
        weight = schedule.reg_weight(step)
        self._last.update(reg=reg.detach(), reg_weight=weight, **{"lambda": schedule.regu_lambda(step)})
        return loss + weight * reg

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._last:
            for key, value in self._last.items():
                logs[key] = float(value.item()) if isinstance(value, torch.Tensor) else float(value)
            logs["density"] = self.density(float(self._last.get("keep", 1.0)))
        super().log(logs, start_time)

    def density(self, keep: float) -> float:
        """Kept fraction of the scored linears' weights at ``keep`` (1.0 for the dense model)."""
        masks = self._smp_model().masks(keep)
        if masks is None:
            return 1.0
        return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())

    # ------------------------------------------------------------------ checkpoints

    def smp_metadata(self) -> dict[str, Any]:
        """The ``smp`` dict of config.json (what smp-export and a person need to know)."""
        cfg = self.smp_config
        p = cfg.pruning
        return {"method": p.method, "keep": p.keep, "granularity": str(p.structure), "head_keep": p.head_keep,
                "inner_keep": p.inner_keep, "temperature": p.temperature, **self.head_info.as_config(),
                "lambda_final": p.regularizer_lambda, "score_init": p.score_init, "score_init_mode": p.score_init_mode,
                "score_lr": p.score_lr,
                "prune_fraction": p.prune_fraction, "prune_start": p.prune_start, "distill": asdict(cfg.distill),
                "current_keep": self.current_keep(), "global_step": int(self.state.global_step),
                "max_steps": int(self.state.max_steps or 0), "base_model": str(cfg.model_dir),
                "data": self.data_source(), "max_seq_len": cfg.data.max_seq_len,
                "producer": f"smp-train {__version__}"}

    def data_source(self) -> str:
        """'bbc' or the training file, for the records."""
        cfg = self.smp_config.data
        return "bbc" if cfg.source == "bbc" else str(cfg.train_file)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = Path(output_dir or self.args.output_dir)
        write_checkpoint(self._smp_model(), output_dir, self.smp_metadata(), self.tokenizer_for_save)
        torch.save(self.args, output_dir / "training_args.bin")

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        load_trainable(target, Path(resume_from_checkpoint))


class LogFilesCallback(TrainerCallback):
    """Rewrites training_log.{json,csv,svg} in the output directory after every evaluation."""

    def __init__(self, directory: Path, title: str):
        self.directory = Path(directory)
        self.title = title

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_log_files(state.log_history, self.directory, title=self.title)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_log_files(state.log_history, self.directory, title=self.title)


@dataclass(frozen=True)
class RunResult:
    """What a run produced: its directory, final metrics and wall time."""

    output_dir: Path
    metrics: dict[str, Any]
    wall_s: float


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """TrainingArguments of the run: AdamW, linear decay, no warm-up; gloo DDP on CPU."""
    cpu = not torch.cuda.is_available()
    save = {"save_strategy": "steps", "save_steps": config.save_steps} if config.save_steps else \
        {"save_strategy": "epoch"}
    return TrainingArguments(
        output_dir=str(config.output_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.pruning.score_lr,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        eval_strategy="epoch", logging_strategy="steps", logging_steps=config.logging_steps,
        logging_first_step=True, save_total_limit=config.save_total_limit, save_safetensors=True,
        report_to=[], disable_tqdm=True, seed=config.seed, data_seed=config.seed,
        remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=0,
        use_cpu=cpu, ddp_backend="gloo" if cpu and _world_size() > 1 else None,
        ddp_find_unused_parameters=False, **save)


def _prepare_output(config: TrainConfig) -> bool | str:
    """Check / clear the output directory; return Trainer's ``resume_from_checkpoint``."""
    out = Path(config.output_dir)
    if config.resume:
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise ResumeError("nothing to resume: no checkpoint-N directory", path=out, field="resume")
        logger.info("resuming from %s", last)
        return last
    if out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise ResumeError("output directory exists and is not empty; pass --resume to continue the run "
                              "or --overwrite to replace it", path=out, field="output_dir")
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(out)
    return False


def _datasets(splits: Splits, tokenizer, max_seq_len: int):
    return (tokenize(splits.train, splits.classes, tokenizer, max_seq_len),
            tokenize(splits.eval, splits.classes, tokenizer, max_seq_len))


def run_training(config: TrainConfig, *, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    """Train (or, for dense / magnitude with a frozen head, only evaluate) and write the outputs."""
    start = time.time()
    resume = _prepare_output(config)
    set_seed(config.seed)
    splits = load_splits(config.data)
    model, tokenizer, head_info = build_model(config, splits.classes)
    train_ds, eval_ds = _datasets(splits, tokenizer, config.data.max_seq_len)
    title = f"smp-train {config.pruning.method} keep {config.pruning.keep:g} ({head_info.kind} head)"
    trainer = SmpTrainer(model=model, args=training_arguments(config), train_dataset=train_ds,
                         eval_dataset=eval_ds, data_collator=PadCollator(tokenizer.pad_token_id or 0),
                         compute_metrics=accuracy, smp_config=config, head_info=head_info,
                         tokenizer_for_save=tokenizer,
                         callbacks=[LogFilesCallback(config.output_dir, title), *callbacks])
    trains = any(p.requires_grad for p in model.parameters())
    if trains:
        trainer.train(resume_from_checkpoint=resume or None)
        trainer.save_model()
    metrics = trainer.evaluate()
    result = {"method": config.pruning.method, "keep": config.pruning.keep, "head": head_info.kind,
              "head_trained": head_info.trained, "accuracy": metrics.get("eval_accuracy"),
              "eval_loss": metrics.get("eval_loss"), "density": trainer.density(trainer.current_keep()),
              "eval_examples": len(eval_ds), "train_examples": len(train_ds),
              "steps": int(trainer.state.global_step), "wall_s": round(time.time() - start, 1),
              "world_size": trainer.args.world_size, "data": trainer.data_source()}
    if trainer.is_world_process_zero():
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / EVAL_RESULTS).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        write_log_files(trainer.state.log_history, config.output_dir, title=title)
    logger.info("%s keep %g: accuracy %.4f (density %.4f)", config.pruning.method, config.pruning.keep,
                result["accuracy"] or float("nan"), result["density"])
    return RunResult(output_dir=Path(config.output_dir), metrics=result, wall_s=time.time() - start)
