"""Plain dense BERT checkpoints whose zeros are the sparsity (a pruned model saved dense).

The mask of each encoder linear is ``weight != 0``. This is the fallback reader: it claims
any directory with a ``model_type: bert`` config and a weight file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..checkpoint import PrunedCheckpoint
from .base import ReadOptions, register
from .files import (
    build_bert_config,
    canonicalize,
    load_config,
    load_state_dict,
    peek_config,
    primary_weight_file,
    require_linear_weights,
    split_scores,
    tokenizer_dir,
    weight_files,
)
from .heads import build_head

logger = logging.getLogger(__name__)


class DenseReader:
    """A dense BERT directory; zero weights of the encoder linears are the pruned ones."""

    name = "dense"
    description = "dense BERT checkpoint: mask = weight != 0 (pruned model saved dense)"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        cfg = peek_config(path)
        return cfg is not None and cfg.get("model_type") == "bert" and bool(weight_files(path))

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        cfg = load_config(path)
        config = build_bert_config(cfg, path=path)
        file = primary_weight_file(path)
        weights, scores = split_scores(canonicalize(load_state_dict(path))[0])
        if scores:
            logger.warning("ignoring %d mask_scores tensors: the dense reader uses the zeros of the weights "
                           "(use --input-format smp or movement to use the scores)", len(scores))
        names = require_linear_weights(weights, config.num_hidden_layers, path=file)
        masks = {name: weights[name] != 0 for name in names}

        tok = tokenizer_dir(path)
        head = build_head(weights, config, cfg, options, path=path, tokenizer=tok, require_label_words=False)
        ckpt = PrunedCheckpoint(config=config, weights=weights, masks=masks, source_format=self.name,
                                method="dense-zeros", source_path=path, head=head, tokenizer_dir=tok)
        ckpt.metadata["keep"] = ckpt.metadata["density"] = ckpt.density()
        if ckpt.density() == 1.0:
            logger.info("%s: no zero weights in the encoder linears; the model is not pruned", path)
        return ckpt


register(DenseReader())
