"""The torch variants: ``torch-eager-dense`` (the masked / unpruned model in its transformers
classes, eager attention) and ``torch-csr@s`` (every pruned linear as a ``torch.sparse`` CSR matrix,
``formats.csr.CSRTensor``), the torch peer of the exports."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .config import BenchConfig, CheckpointCache
from .errors import BenchmarkError
from .harness import Runner
from .plan import LoadedVariant, VariantSpec

if TYPE_CHECKING:
    from torch import nn

    from smp_export.checkpoint import PrunedCheckpoint


def _csr_module(weight, bias, device: str):
    """An ``nn.Module`` computing ``x @ W^T + b`` with ``W`` as a torch.sparse CSR matrix."""
    import torch
    from torch import nn

    from smp_export.formats.csr import CSRTensor

    class CSRLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.csr = CSRTensor.from_dense(weight.detach().float())
            self.register_buffer("bias", bias.detach().float().clone() if bias is not None else None)
            self.sparse = None if device == "cpu" else self.csr.to_torch().to(device)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.sparse is None:
                return self.csr.linear(x, self.bias)
            x2d = x.reshape(-1, self.csr.shape[1])
            out = torch.sparse.mm(self.sparse, x2d.t().contiguous()).t() + self.bias
            return out.reshape(*x.shape[:-1], self.csr.shape[0])

    return CSRLinear()


def build_torch_model(ckpt: PrunedCheckpoint, *, csr: bool, device: str = "cpu") -> nn.Module:
    """The masked Hugging Face model (``reference.build_reference_model``); with ``csr`` every
    pruned linear is replaced by a torch.sparse CSR one. Returns the module on ``device``."""
    from smp_export.reference import build_reference_model

    model = build_reference_model(ckpt)
    if csr:
        modules = dict(model.named_modules())
        masked = ckpt.masked_weights()
        prefixes = ("model.", f"model.{ckpt.arch.model_prefix}")
        for name in ckpt.masks:
            module = ckpt.arch.own_name(name).removesuffix(".weight")
            path = next((p + module for p in prefixes if p + module in modules), None)
            if path is None:
                raise BenchmarkError("pruned linear not found in the torch model", field=name)
            parent_path, _, child = path.rpartition(".")
            setattr(modules[parent_path], child, _csr_module(masked[name], modules[path].bias, device))
    return model.to(device).eval()


def load_torch_variant(spec: VariantSpec, config: BenchConfig, feeds: dict[str, np.ndarray],
                       checkpoint: CheckpointCache) -> LoadedVariant:
    """A torch variant (``torch-eager-dense`` or ``torch-csr@s``) built from its source checkpoint."""
    import torch

    start = time.perf_counter()
    ckpt = checkpoint(spec.source)
    model = build_torch_model(ckpt, csr=spec.csr, device=config.backends.device)
    load_s = time.perf_counter() - start
    device = torch.device(config.backends.device)
    timed = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}

    def run() -> None:
        with torch.inference_mode():
            model(**timed)

    def outputs(f: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(np.asarray(v, dtype=np.int64)).to(device) for k, v in f.items()})
        return out.float().cpu().numpy()

    sync = torch.cuda.synchronize if config.backends.device == "cuda" else None
    id2label = {int(k): str(v) for k, v in (ckpt.config.id2label or {}).items()} if ckpt.head.kind != "none" else {}
    return LoadedVariant(spec, Runner(spec.name, run, sync), outputs, ckpt.head.output_name, load_s,
                 f"torch-{config.backends.device}", id2label)
