"""Shared helpers of the smp-train tests: a tiny BERT with a tokenizer and a tiny labelled CSV.

The tiny model (2 layers, hidden 32) has no dropout, so runs are deterministic; its vocab
holds the words the CSV's classes are built from, so the prototype head separates them.
"""

from __future__ import annotations

import random
from pathlib import Path

from smp_train.config import DataConfig, HeadConfig, PruningConfig, TrainConfig
from tests.fixtures import write_dense_base

POS_WORDS = ("good", "great", "yes")
NEG_WORDS = ("bad", "terrible", "no")


def write_tiny_base(directory: Path, head: str = "none") -> Path:
    """A tiny dropout-free BERT (BertModel / BertForMaskedLM) with a WordPiece vocab."""
    write_dense_base(directory, head=head, tokenizer=True, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return Path(directory)


def write_tiny_csv(path: Path, rows: int = 64, seed: int = 0, labels: tuple[str, str] = ("neg", "pos")) -> Path:
    """``text,label`` rows: 5 class words mixed with 5 random filler tokens."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for _ in range(rows):
        label = rng.choice(labels)
        words = [rng.choice(POS_WORDS if label == labels[1] else NEG_WORDS) for _ in range(5)]
        words += [f"tok{rng.randrange(100)}" for _ in range(5)]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(tmp: Path, base: Path, csv: Path, *, output: str = "run", method: str = "smp-s",
                keep: float = 0.3, max_steps: int = 6, batch_size: int = 8, head: str = "auto",
                label_words: tuple[str, ...] = ("bad", "good"), **overrides) -> TrainConfig:
    """A TrainConfig of a few steps on the tiny model and CSV."""
    values = dict(model_dir=base, output_dir=tmp / output,
                  pruning=PruningConfig(method=method, keep=keep),
                  head=HeadConfig(kind=head, label_words=label_words),
                  data=DataConfig(source="table", train_file=csv, max_seq_len=32),
                  max_steps=max_steps, batch_size=batch_size, eval_batch_size=16, logging_steps=2)
    values.update(overrides)
    return TrainConfig(**values)
