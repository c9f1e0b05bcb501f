"""Plain dense checkpoints whose zeros are the sparsity (a pruned model saved dense).

The mask of each encoder linear is ``weight != 0``. This is the fallback reader: it claims
any directory with a config of a known architecture (``smp_export.arch``) and a weight file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..arch import ARCHITECTURES
from ..checkpoint import PrunedCheckpoint
from .base import ReadOptions, register
from .files import peek_config, split_scores, weight_files
from .model_dir import assemble, read_model_dir

logger = logging.getLogger(__name__)


class DenseReader:
    """A dense model directory; zero weights of the encoder linears are the pruned ones."""

    name = "dense"
    description = "dense checkpoint (BERT, DistilBERT): mask = weight != 0 (pruned model saved dense)"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        cfg = peek_config(path)
        return cfg is not None and cfg.get("model_type") in ARCHITECTURES and bool(weight_files(path))

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        model = read_model_dir(path, limits=options.limits)
        weights, scores = split_scores(model.tensors)
        if scores:
            logger.warning("ignoring %d mask_scores tensors: the dense reader uses the zeros of the weights "
                           "(use --input-format smp or movement to use the scores)", len(scores))
        masks = {name: weights[name] != 0 for name in model.linear_names(weights)}
        ckpt = assemble(model, weights, masks, options, source_format=self.name, method="dense-zeros",
                        keep_is_density=True)
        if ckpt.density() == 1.0:
            logger.info("%s: no zero weights in the encoder linears; the model is not pruned", path)
        return ckpt


register(DenseReader())
