"""The measuring lab behind ``smp-bench``: what pruning buys, measured.

``run_benchmark(BenchConfig(...))`` builds whatever the run needs, times every variant
interleaved, evaluates accuracy against the dense model, measures memory and (optionally)
onnxruntime's per-operator profile, then writes ``results.json`` / ``results.md`` /
``results.png`` / ``timings.json`` into the output directory.

What is measured (the runners, in their interleaving order):

- ``torch-eager-dense``: the unpruned model in its transformers classes, eager attention;
- ``ort-dense``: the unpruned model exported dense, run by onnxruntime: the reference of every
  speed-up (``--backend torch`` alone: ``torch-eager-dense`` is the reference);
- one onnxruntime runner per export (each variant @ sparsity for the default model and sweeps;
  the directory name for EXPORT_DIRs);
- ``torch-csr@s`` (``--backend torch|all``): the masked model with every pruned linear as a
  ``torch.sparse`` CSR matrix, the torch peer of the exports.

The modules, bottom up: ``data`` (datasets: BBC News, tables, GLUE), ``stats`` (latency
summaries, speed-ups, memory readings, environment), ``harness`` (interleaved timing),
``accuracy`` (metrics on numpy outputs), ``records`` / ``plot`` (results files), ``profile``
(onnxruntime's per-operator split), ``memprobe`` (peak RSS of one export in its own process);
then the orchestration: ``config`` (options), ``plan`` (which variants, cached exports),
``loading`` / ``torch_runners`` (runners), ``evaluation``, ``memory``, ``report``, ``run``.

The lab sits above the exporter and the runtime and uses both; neither imports it. Names
are imported lazily, so ``smp_bench.data`` or ``smp_bench.memprobe`` load without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"BenchConfig": "config", "BenchResult": "run", "BenchmarkError": "errors", "DataError": "errors",
            "run_benchmark": "run", "checkpoint_from_manifest": "config", "load_eval_set": "evaluation",
            "build_torch_model": "torch_runners"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
