"""smp-bench's library: what pruning buys, measured.

``run_benchmark(BenchConfig(...))`` builds whatever the run needs, times every variant
interleaved, evaluates accuracy against the dense model, measures memory and (optionally)
onnxruntime's per-operator profile, then writes ``results.json`` / ``results.md`` /
``results.png`` / ``timings.json`` into ``config.output_dir``.

What is measured (the runners, in their interleaving order):

- ``torch-eager-dense``: the unpruned model in Hugging Face's eager BERT (``--backend ort|all``
  with ``torch_eager``; always with ``--backend torch``);
- ``ort-dense``: the unpruned model exported dense, run by onnxruntime: the reference of every
  speed-up (``--backend torch`` alone: ``torch-eager-dense`` is the reference);
- one onnxruntime runner per export (``dense``/``sparse-initializer``/``compact``@sparsity for
  the default model and sweeps; the directory name for EXPORT_DIRs);
- ``torch-csr@s`` (``--backend torch|all``): the masked model with every pruned linear as a
  ``torch.sparse`` CSR matrix (``formats.csr.CSRTensor``), the torch peer of the exports.

Where the models come from: see ``variants``. The modules: ``config`` (options, errors,
checkpoint sources), ``variants`` (the plan, cached exports), ``loading`` / ``torch_runners``
(runners), ``evaluation`` (accuracy), ``memory`` (isolated-process probes), ``report``
(records, files), ``run`` (the orchestration).

The harness itself (timing, accuracy metrics, records, plot, profile) is ``runtime.bench``;
this package only adds what needs torch and the exporter.
"""

from .config import BACKENDS, BenchConfig, BenchmarkError, CheckpointSource, checkpoint_from_manifest
from .evaluation import EvalSet, load_eval_set
from .loading import _check_device
from .memory import _probe_argv, _probe_main
from .run import BenchResult, run_benchmark
from .torch_runners import build_torch_model
from .variants import _Spec

__all__ = ["BACKENDS", "BenchConfig", "BenchResult", "BenchmarkError", "CheckpointSource", "EvalSet",
           "build_torch_model", "checkpoint_from_manifest", "load_eval_set", "run_benchmark",
           "_check_device", "_probe_argv", "_probe_main", "_Spec"]
