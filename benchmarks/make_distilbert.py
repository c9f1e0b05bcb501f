"""Write a DistilBERT-base-shaped encoder (6 layers, dim 768, 12 heads, FFN 3072) with random
weights and the packaged MiniLM's WordPiece tokenizer (the same 30522-token uncased vocabulary)
into a model directory, for the ``distilbert`` suite: speed depends on shapes and masks only,
and no weights can be downloaded here. Accuracy against the dense model still means what it
says (the pruned model's agreement with its own dense parent); task accuracy does not.

    python benchmarks/make_distilbert.py build/distilbert-base-random
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(out: Path) -> None:
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from runtime.contract import TOKENIZER_FILES
    from smp_export.default_model import default_model_dir

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                              max_position_embeddings=512, pad_token_id=0)
    DistilBertModel(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (default_model_dir() / name).is_file():
            shutil.copy2(default_model_dir() / name, out / name)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/distilbert-base-random"))
