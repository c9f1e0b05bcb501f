"""smp-train: Static Model Pruning (SMP-L / SMP-S) on a frozen BERT encoder.

Only per-weight mask scores of the 6 encoder linears of every layer are trained; masks come
from ``smp_export.masks`` (the one definition export uses too), so a trained mask and an
exported mask cannot disagree. Training runs on the Hugging Face Trainer (single process,
``torchrun`` / ``accelerate launch`` on several processes or GPUs).
"""

__version__ = "0.1.0"
