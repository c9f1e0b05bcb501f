"""Where the time goes: onnxruntime's per-operator profile, grouped by what the operator does.

``profile_model`` runs a model with ``SessionOptions.enable_profiling`` and ``parse_trace``
reads the Chrome-trace JSON onnxruntime writes: every ``<node>_kernel_time`` event is put in
one category (``categorize``) and summed per run. The categories:

- ``pruned_linears``: the encoder's prunable linears: the MatMul / Gemm / FusedMatMul reading an
  ``encoder.layer.N.*.weight_t`` initializer, their bias ``Add``, and custom sparse operators
  (domain ``ai.smp``);
- ``attention``: everything else inside ``attention/self`` (scores MatMul, scale, mask Add,
  Softmax, context MatMul, the head Reshape / Transpose) and the attention-mask preparation;
- ``layer_norm``: LayerNormalization (and onnxruntime's Skip/Simplified fusions);
- ``embeddings``: the embedding gathers and adds (EmbedLayerNormalization when fused);
- ``activation``: GELU / ReLU (BiasGelu when onnxruntime fuses it with the intermediate bias);
- ``other``: residual adds, the head, shape ops.

On CUDA the kernel events time the launches on the host, not the GPU kernels: read the CUDA
profile as an upper bound of dispatch cost, not as GPU time.
"""

from __future__ import annotations

import bisect
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from runtime.contract import select_inputs

CATEGORIES: tuple[str, ...] = ("pruned_linears", "attention", "layer_norm", "embeddings", "activation", "other")
SMP_DOMAINS = frozenset({"ai.smp"})
_MATMUL_OPS = frozenset({"MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "MatMulIntegerToFloat",
                         "MatMulNBits", "QGemm", "DynamicQuantizeMatMul"})
_BIAS_OPS = frozenset({"Add", "BiasAdd"})
_LN_OPS = frozenset({"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                     "SkipSimplifiedLayerNormalization"})
_ACT_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf", "Relu", "Tanh", "Sigmoid"})
_ATTN_OPS = frozenset({"Attention", "MultiHeadAttention", "Softmax", "GroupQueryAttention"})
_LINEAR_PATH = re.compile(r"/encoder/layer\.\d+/(attention/self/(query|key|value)|attention/output/dense"
                          r"|intermediate/dense|output/dense)/")
_PRUNED_WEIGHT = re.compile(r"^encoder\.layer\.\d+\..+\.weight_t$")


@dataclass(frozen=True)
class NodeInfo:
    op_type: str
    domain: str = ""
    inputs: tuple[str, ...] = ()


def categorize(name: str, op_type: str, info: NodeInfo | None = None) -> str:
    """The category of one executed node (see the module docstring)."""
    domain = info.domain if info else ""
    inputs = info.inputs if info else ()
    if domain in SMP_DOMAINS:
        # SparseLinear / SparseFFN (with their folded GELU / residual / LayerNorm) or the Attention kernel.
        return "attention" if op_type in _ATTN_OPS else "pruned_linears"
    if op_type == "EmbedLayerNormalization":
        return "embeddings"
    if op_type in _LN_OPS or "LayerNorm" in name:
        return "layer_norm"
    if name.startswith("/embeddings/"):
        return "embeddings"
    if op_type in _MATMUL_OPS and any(_PRUNED_WEIGHT.match(i) for i in inputs):
        return "pruned_linears"
    if _LINEAR_PATH.search(name + "/") and (op_type in _MATMUL_OPS or op_type in _BIAS_OPS):
        return "pruned_linears"
    if op_type in _ACT_OPS and "/attention/" not in name and "/pooler/" not in name:
        return "activation"
    if "act_fn" in name:
        return "activation"
    if op_type in _ATTN_OPS or "/attention/self/" in name or name.startswith("/mask/"):
        return "attention"
    return "other"


@dataclass
class ProfileSummary:
    """Per-run milliseconds by category and by operator type, from one profiled session."""

    runs: int
    run_ms: float                                   # mean wall time of a profiled run
    category_ms: dict[str, float] = field(default_factory=dict)
    op_ms: dict[str, float] = field(default_factory=dict)
    trace: str | None = None
    placement: dict[str, list[str]] = field(default_factory=dict)   # provider -> the nodes it ran

    def nodes_off(self, providers: set[str]) -> list[str]:
        """The nodes that ran on a provider not in ``providers`` (a GPU run's CPU fallbacks)."""
        return sorted(n for p, nodes in self.placement.items() if p not in providers for n in nodes)

    @property
    def node_ms(self) -> float:
        return sum(self.category_ms.values())

    def fractions(self) -> dict[str, float]:
        total = self.node_ms
        return {c: (self.category_ms.get(c, 0.0) / total if total else 0.0) for c in CATEGORIES}

    def to_fields(self) -> dict[str, Any]:
        """Flat record fields: ``profile_<category>_ms`` / ``_pct``, run and node totals."""
        out: dict[str, Any] = {"profile_run_ms": self.run_ms, "profile_node_ms": self.node_ms,
                               "profile_runs": self.runs}
        for provider, nodes in sorted(self.placement.items()):      # profile_nodes_cpu, profile_nodes_cuda
            out[f"profile_nodes_{provider.removesuffix('ExecutionProvider').lower()}"] = len(nodes)
        for cat, frac in self.fractions().items():
            out[f"profile_{cat}_ms"] = self.category_ms.get(cat, 0.0)
            out[f"profile_{cat}_pct"] = 100.0 * frac
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "run_ms": self.run_ms, "category_ms": self.category_ms,
                "op_ms": dict(sorted(self.op_ms.items(), key=lambda kv: -kv[1])), "trace": self.trace,
                "placement": self.placement}


def load_trace(source: str | Path | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(source, (str, Path)):
        data = json.loads(Path(source).read_text())
    else:
        data = source
    if isinstance(data, Mapping):                      # {"traceEvents": [...]} form
        data = data.get("traceEvents", [])
    return list(data)


def parse_trace(source: str | Path | Sequence[Mapping[str, Any]], *,
                node_info: Mapping[str, NodeInfo] | None = None, skip_runs: int = 0) -> ProfileSummary:
    """Group the kernel times of an onnxruntime profile by category, per run.

    Node events are assigned to the ``model_run`` whose time window holds them; the first
    ``skip_runs`` runs (warm-up) are dropped.
    """
    events = load_trace(source)
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) <= skip_runs:
        raise ValueError(f"the trace holds {len(runs)} model_run event(s); need more than {skip_runs}")
    starts = [r["ts"] for r in runs]
    kept = runs[skip_runs:]
    category: dict[str, float] = {c: 0.0 for c in CATEGORIES}
    ops: dict[str, float] = {}
    placement: dict[str, set[str]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        index = bisect.bisect_right(starts, e["ts"]) - 1
        if index < skip_runs or index < 0 or e["ts"] > runs[index]["ts"] + runs[index]["dur"]:
            continue
        node = name[: -len("_kernel_time")]
        op_type = (e.get("args") or {}).get("op_name", "")
        placement.setdefault((e.get("args") or {}).get("provider", "unknown"), set()).add(node)
        info = (node_info or {}).get(node)
        cat = categorize(node, op_type, info)
        category[cat] += e["dur"] / 1e3
        ops[op_type] = ops.get(op_type, 0.0) + e["dur"] / 1e3
    n = len(kept)
    return ProfileSummary(runs=n, run_ms=sum(r["dur"] for r in kept) / n / 1e3,
                          category_ms={c: v / n for c, v in category.items()},
                          op_ms={o: v / n for o, v in ops.items()},
                          placement={p: sorted(nodes) for p, nodes in placement.items()})


def model_node_info(model_path: str | Path) -> dict[str, NodeInfo]:
    """Node name -> (op type, domain, inputs) of the saved model; {} without the onnx package.

    Nodes onnxruntime fuses get new names and fall back to the name rules of ``categorize``.
    """
    try:
        import onnx
    except ImportError:
        return {}
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:   # noqa: BLE001 - a best-effort hint only
        return {}
    return {n.name: NodeInfo(n.op_type, n.domain, tuple(n.input)) for n in model.graph.node if n.name}


def profile_model(model_path: str | Path, feeds: Mapping[str, Any], *, runs: int = 3, warmup: int = 1,
                  providers: Sequence[Any] = ("CPUExecutionProvider",), intra_op_threads: int | None = None,
                  custom_op_libraries: Iterable[str] = (), trace_dir: str | Path | None = None,
                  name: str = "model") -> ProfileSummary:
    """Run ``model_path`` ``warmup + runs`` times with profiling on and summarise the trace.

    The trace is written into ``trace_dir`` (kept, named after ``name``) or a temporary folder.
    """
    from runtime.providers import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    if intra_op_threads is not None:
        opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    for lib in custom_op_libraries:
        opts.register_custom_ops_library(str(lib))
    tmp = None
    if trace_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="smp-profile-")
        trace_dir = tmp.name
    Path(trace_dir).mkdir(parents=True, exist_ok=True)
    opts.profile_file_prefix = str(Path(trace_dir) / f"profile-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}")
    try:
        session = ort.InferenceSession(str(model_path), sess_options=opts, providers=list(providers))
        inputs = select_inputs(feeds, (i.name for i in session.get_inputs()))
        for _ in range(warmup + runs):
            session.run(None, inputs)
        trace = session.end_profiling()
        summary = parse_trace(trace, node_info=model_node_info(model_path), skip_runs=warmup)
        summary.trace = None if tmp is not None else trace
        return summary
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_profile(summaries: Mapping[str, ProfileSummary]) -> str:
    """A terminal table: per variant, ms per run and share of node time per category."""
    headers = ["variant", "run ms", *CATEGORIES]
    rows = []
    for name, s in summaries.items():
        fr = s.fractions()
        rows.append([name, f"{s.run_ms:.1f}",
                     *[f"{s.category_ms.get(c, 0.0):.1f} ({100 * fr[c]:.0f}%)" for c in CATEGORIES]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    lines = ["per-operator time per run, ms (share of kernel time), onnxruntime profile:",
             fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    top = {}
    for name, s in summaries.items():
        top[name] = ", ".join(f"{op} {ms:.1f}" for op, ms in sorted(s.op_ms.items(), key=lambda kv: -kv[1])[:5])
    lines += ["top operator types (ms per run):", *(f"  {n}: {t}" for n, t in top.items())]
    return "\n".join(lines)
