"""The benchmark harness behind ``smp-bench``: interleaved timing, accuracy metrics, records,
writers, plots and onnxruntime profiles.

Imports only numpy, the standard library and ``runtime`` (onnxruntime when profiling,
matplotlib when plotting); never ``smp_export``, ``smp_train`` or torch. The orchestration
that builds models lives in ``smp_export.bench``.
"""

from .harness import Runner, TimingPlan, TimingResult, time_interleaved

__all__ = ["Runner", "TimingPlan", "TimingResult", "time_interleaved"]
