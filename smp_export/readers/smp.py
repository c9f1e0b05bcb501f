"""SMP training output: BERT weights plus ``*.mask_scores`` of the 6 encoder linears per layer.

Two producers write it: the official SMP code (``model_type: masked_bert``, usually
``MaskedBertForSMP`` with the frozen MLM head) and this project's smp-train (a config with
an ``smp`` dict). Masks follow the official ``to_mask.py``: SMP-L keeps the top
``int(keep * numel)`` scores of each matrix; SMP-S (directory names containing ``mag``)
spreads the keep ratio over layers by the mean sigmoid of the scores.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import HeadSpec, PrunedCheckpoint
from ..errors import CheckpointError, MaskError
from ..masks import check_keep_ratio, global_topk_masks, smp_l_masks, smp_s_masks, smp_s_ratio_map
from ..structure import BLOCK_SCORES, HEAD_SCORES, NEURON_SCORES, Granularity, structured_masks
from .base import ReadOptions, register
from .files import (BIN_FILE, SAFETENSORS_FILE, find_checkpoint_dir, linear_scores, peek_config, split_scores,
                    tokenizer_dir, weight_files, weight_keys)
from .model_dir import assemble, read_model_dir

logger = logging.getLogger(__name__)

# The ``0.xx`` token SMP's to_mask.py takes from a path like ``.../mnli_0.10_mag_s1``.
_KEEP_IN_NAME = re.compile(r"(?<![\d.])0\.\d+")


def _smp_dict(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["smp"] if isinstance(cfg.get("smp"), dict) else {}


def _run_names(path: Path) -> list[str]:
    """Names the official heuristics look at: the directory (and its parent for checkpoint-N)."""
    path = Path(path).resolve()
    names = [path.name]
    if path.name.startswith("checkpoint"):
        names.append(path.parent.name)
    return names


def keep_from_dir_name(path: Path) -> float | None:
    """The ``0.xx`` token of the run directory's name, as SMP's to_mask.py reads it, else None."""
    for name in _run_names(path):
        match = _KEEP_IN_NAME.search(name)
        if match:
            return float(match.group(0))
    return None


def resolve_keep(path: Path, cfg: dict[str, Any], options: ReadOptions) -> tuple[float, str]:
    """Final keep ratio and where it came from: --keep, smp config, directory name, config."""
    candidates: list[tuple[Any, str]] = [(options.keep, "--keep"), (_smp_dict(cfg).get("keep"), "smp.keep"),
                                         (keep_from_dir_name(path), "directory name")]
    candidates += [(cfg.get(key), key) for key in ("keep_ratio", "final_keep")]
    for value, source in candidates:
        if value is not None:
            return check_keep_ratio(value, path=path, field=source), source
    raise MaskError("no final keep ratio: pass --keep (SMP's to_mask.py reads it from a '_0.xx_' token of "
                    "the directory name; there is none, nor keep_ratio/final_keep in config.json)",
                    path=path, field="--keep")


def use_smp_s(path: Path, cfg: dict[str, Any], options: ReadOptions) -> bool:
    """SMP-S when forced, when the config says so, or when the run name contains ``mag``."""
    if options.smp_s is not None:
        return options.smp_s
    method = _smp_dict(cfg).get("method") or cfg.get("smp_method")
    if method is not None:
        return str(method).lower() in ("smp-s", "smp_s", "s")
    return any("mag" in name for name in _run_names(path))


def _method(cfg: dict[str, Any]) -> str:
    return str(_smp_dict(cfg).get("method") or "").lower()


def prototype_head(weights: dict[str, torch.Tensor], config: Any, cfg: dict[str, Any], *, hidden: int,
                   path: Path) -> HeadSpec | None:
    """smp-train's prototype head when ``prototype.weight`` is present (classes from the config)."""
    if "prototype.weight" not in weights:
        return None
    proto = weights["prototype.weight"]
    if proto.ndim != 2 or proto.shape[1] != hidden:
        raise CheckpointError(f"prototype.weight has shape {tuple(proto.shape)}, expected "
                              f"[classes, {hidden}]", path=path, field="prototype.weight")
    classes = [str(c) for c in (_smp_dict(cfg).get("classes") or [])]
    if len(classes) != proto.shape[0]:
        classes = [f"LABEL_{i}" for i in range(proto.shape[0])]
    config.num_labels = len(classes)
    config.id2label = dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    return HeadSpec(kind="prototype", label_words=tuple(classes))


def _temperature(cfg: dict[str, Any], options: ReadOptions, path: Path) -> float:
    value = options.smp_s_temperature
    if value is None:
        value = _smp_dict(cfg).get("temperature", 1.0)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MaskError(f"SMP-S temperature must be a positive number, got {value!r}",
                        path=path, field="--smp-s-temperature")
    return float(value)


def _masks(path: Path, cfg: dict[str, Any], options: ReadOptions, scores: dict, keep: float):
    """(method, masks, metadata) by the rule the checkpoint or the options ask for."""
    if options.smp_s is None and _method(cfg) == "global-topk":
        return "global-topk", global_topk_masks(scores, keep), {}
    if use_smp_s(path, cfg, options):
        temperature = _temperature(cfg, options, path)
        return "smp-s", smp_s_masks(scores, keep, temperature), {
            "temperature": temperature, "keep_ratios": smp_s_ratio_map(scores, keep, temperature)}
    return "smp-l", smp_l_masks(scores, keep), {}


def granularity_of(cfg: dict[str, Any], path: Path) -> Granularity:
    """``smp.granularity`` of the config (``weight`` when absent); MaskError naming it if unknown."""
    value = _smp_dict(cfg).get("granularity") or "weight"
    try:
        return Granularity.parse(value)
    except MaskError as exc:
        raise MaskError(exc.message, path=path, field="smp.granularity") from exc


def split_unit_scores(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split off neuron / head / block scores: (weights, scores under ``smp_export.structure``'s keys)."""
    rest, units = {}, {}
    for name, tensor in weights.items():
        if name.endswith((f".{NEURON_SCORES}", f".{HEAD_SCORES}")):
            units[name] = tensor
        elif name.endswith(f".{BLOCK_SCORES}"):
            units[name.removesuffix(f".{BLOCK_SCORES}") + ".weight"] = tensor
        else:
            rest[name] = tensor
    return rest, units


def _structured(g: Granularity, path: Path, cfg: dict[str, Any], options: ReadOptions, model: Any,
                units: dict[str, torch.Tensor], keep: float):
    """(method, masks, metadata) of a checkpoint whose scores belong to neurons, heads, blocks or N:M."""
    method = "smp-s" if use_smp_s(path, cfg, options) else "smp-l"
    temperature = _temperature(cfg, options, path) if method == "smp-s" else 1.0
    budgets = {}
    for name in ("head_keep", "inner_keep"):
        value = _smp_dict(cfg).get(name)
        budgets[name] = None if value is None else check_keep_ratio(value, path=path, field=f"smp.{name}")
    try:
        masks = structured_masks(g, method, units, keep, model.dims, temperature, **budgets)
    except MaskError as exc:
        raise MaskError(exc.message, path=model.weight_file, field=exc.field) from exc
    return method, masks, {"granularity": str(g), **budgets}


class SmpReader:
    """Official SMP (masked_bert) and smp-train checkpoints with mask scores."""

    name = "smp"
    description = "SMP training output: BERT weights + *.mask_scores (SMP-L / SMP-S masks)"

    def detect(self, path: Path, options: ReadOptions) -> bool:
        cfg = peek_config(path)
        if cfg is None:
            return False
        if _smp_dict(cfg):
            return True
        if cfg.get("model_type") != "masked_bert":
            return False
        if "MaskedBertForSMP" in (cfg.get("architectures") or []) or "smp_method" in cfg:
            return True
        # SMP with a classifier head saves the same files as movement pruning's topK: SMP
        # options (--keep/--sparsity, --smp-s/--smp-l) without --threshold say which it is.
        if options.threshold is None and (options.keep is not None or options.smp_s is not None):
            return cfg.get("pruning_method", "topK") == "topK"
        weight_dir = path if weight_files(path) else find_checkpoint_dir(path)
        if weight_dir is None:
            return False
        keys = weight_keys(weight_dir)
        return "classifier.weight" not in keys and any(k.startswith("cls.predictions.") for k in keys)

    def read(self, path: Path, options: ReadOptions) -> PrunedCheckpoint:
        weight_dir = self._weight_dir(path)
        model = read_model_dir(path, weight_dir=weight_dir, limits=options.limits)
        weights, scores = split_scores(model.tensors)
        g = granularity_of(model.cfg, path)
        keep, keep_source = resolve_keep(path, model.cfg, options)
        metadata: dict[str, Any] = {"keep": keep, "keep_source": keep_source,
                                    "pruning_method": model.cfg.get("pruning_method")}
        if weight_dir != path:
            metadata["checkpoint"] = weight_dir.name
        names = model.linear_names(weights)                 # every linear present, named as in the file
        if g.unstructured:
            lin_scores = linear_scores(scores, weights, names, model.origin, path=model.weight_file)
            method, masks, extra = _masks(path, model.cfg, options, lin_scores, keep)
        else:
            weights, units = split_unit_scores(weights)
            if g.weight_scores:                          # N:M and hybrid: the *.mask_scores too
                units.update(scores)
            method, masks, extra = _structured(g, path, model.cfg, options, model, units, keep)
        metadata.update(extra)
        tok = tokenizer_dir(weight_dir, path)
        head = prototype_head(weights, model.config, model.cfg, hidden=model.dims.hidden, path=path)
        ckpt = assemble(model, weights, masks, options, source_format=self.name, method=method, metadata=metadata,
                        require_label_words=True, tokenizer=tok, head=head)
        logger.info("read %s checkpoint %s: keep %.4g (%s), density %.4f", method, path, keep,
                    keep_source, ckpt.metadata["density"])
        return ckpt

    @staticmethod
    def _weight_dir(path: Path) -> Path:
        """``path`` itself, or (like to_mask.py) its checkpoint-N with the smallest N."""
        if weight_files(path):
            return path
        chosen = find_checkpoint_dir(path)
        if chosen is None:
            raise CheckpointError(f"no weight file ({SAFETENSORS_FILE} or {BIN_FILE}) and no "
                                  "checkpoint-N subdirectory with one", path=path)
        logger.warning("%s has no weight file; using %s (the smallest step, as SMP's to_mask.py does)",
                       path, chosen.name)
        return chosen


register(SmpReader())
