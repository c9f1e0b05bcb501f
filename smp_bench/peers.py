"""The peers suite's arithmetic and report (``benchmarks/peers.py``): one row per model and
runtime, its speed against ``ort-dense`` and against the fastest dense peer, its accuracy, and
the results files. No runtime is imported here: rows arrive as timings and output arrays.

A *group* is one interleaved run: the dense reference (``ort-dense``: the unpruned model on
onnxruntime, fp32), the other runtimes on that same dense model (onnxruntime int8, optimum,
OpenVINO, ...) and the project's exports of the pruned model(s). A *dense peer* is any row
whose weights run as dense matrices (every runtime and precision, pruned or not; not the
``ai.smp`` kernel variants): the fastest of them, per batch, is the bar the sparse kernels
are held to (``vs_fastest_dense``).

Rows timed in another process (DeepSparse in its own virtualenv, with its own onnxruntime
dense reference timed interleaved beside it) are ``foreign``: their ``vs_reference`` is
against that process's ``ort-dense``, and ``vs_fastest_dense`` is chained through it
(``row.vs_reference / fastest.vs_reference``), which for in-process rows is the same number
as the direct ratio of medians.

The machine probes (``cpu_snapshot`` / ``other_cores``: cores other processes kept busy while
a section was timed; ``cpu_vector_flags``) are in ``smp_bench.peer_machine``, re-exported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import accuracy as acc
from . import stats
from .peer_machine import CpuSnapshot, cpu_snapshot, cpu_vector_flags, other_cores  # noqa: F401  (re-exported)
from .records import write_json

logger = logging.getLogger(__name__)

REFERENCE = "ort-dense"
EMBEDDINGS, LOGITS = "embeddings", "logits"
SCHEMA = "smp-peers/1"


@dataclass(frozen=True)
class RowInfo:
    """What one row is, before it is measured."""

    name: str                        # unique within its group
    runtime: str                     # onnxruntime | openvino | deepsparse
    model: str                       # e.g. "unpruned", "SMP-S 0.10 kept", "magnitude 0.90"
    precision: str                   # fp32 | bf16 | int8 | int8-weights ...
    method: str                      # how the model file was made
    dense_peer: bool                 # runs its weights as dense matrices (not the ai.smp kernels)
    file_bytes: int | None = None    # the model file(s) the runtime loads
    path: str | None = None
    sparsity: float = 0.0
    foreign: bool = False            # timed in another process, against its own ort-dense


@dataclass(frozen=True)
class Skipped:
    """A row that could not be built or run, and why (a sentence a reader can act on)."""

    group: str
    name: str
    reason: str


def fastest(times: Mapping[str, Sequence[float]], candidates: Collection[str]) -> str | None:
    """The candidate with the lowest median time (None when no candidate was timed)."""
    timed = [name for name in candidates if name in times and len(times[name])]
    if not timed:
        return None
    return min(timed, key=lambda name: (float(np.median(times[name])), name))


def speed_fields(times: Mapping[str, Sequence[float]], batch: int, *, reference: str = REFERENCE,
                 dense_peers: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Per row: the latency summary (``stats.summarize``), the speed-up against ``reference``
    (ratio of medians and pairwise) and against the fastest of ``dense_peers``.

    ``times`` are seconds per call of one interleaved run; ValueError when ``reference`` is
    not among them.
    """
    if reference not in times:
        raise ValueError(f"the reference {reference!r} was not timed (timed: {', '.join(times) or 'nothing'})")
    best = fastest(times, dense_peers)
    out: dict[str, dict[str, Any]] = {}
    for name, runs in times.items():
        against = stats.speedup(times[reference], runs)
        fields: dict[str, Any] = {**stats.summarize(runs, batch), "reference": reference,
                                  "vs_reference": against["ratio_of_medians"],
                                  "vs_reference_pairwise": against["pairwise"]}
        if best is not None:
            to_best = stats.speedup(times[best], runs)
            fields.update(fastest_dense_peer=best, vs_fastest_dense=to_best["ratio_of_medians"],
                          vs_fastest_dense_pairwise=to_best["pairwise"])
        out[name] = fields
    return out


def chained_fields(foreign: Mapping[str, dict[str, Any]],
                   main: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows timed in another process, with ``vs_fastest_dense`` chained through the references:
    ``row.vs_reference / fastest.vs_reference`` (``fastest`` from ``main``'s fields)."""
    best = next((f.get("fastest_dense_peer") for f in main.values() if f.get("fastest_dense_peer")), None)
    best_ratio = main[best]["vs_reference"] if best in main else None
    out = {}
    for name, fields in foreign.items():
        fields = dict(fields)
        if best is not None and best_ratio and fields.get("vs_reference") is not None:
            fields.update(fastest_dense_peer=best, vs_fastest_dense=fields["vs_reference"] / best_ratio,
                          vs_fastest_dense_pairwise=None)
        out[name] = fields
    return out


def eval_vectors(kind: str, outputs: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """What accuracy compares: mean-pooled unit embeddings (``embeddings``, from [B,S,H] hidden
    states) or the logits as they are (``logits``)."""
    if kind == EMBEDDINGS:
        return acc.mean_pool(np.asarray(outputs), attention_mask)
    if kind == LOGITS:
        return np.asarray(outputs, dtype=np.float32)
    raise ValueError(f"kind must be {EMBEDDINGS!r} or {LOGITS!r}, got {kind!r}")


def score_rows(kind: str, outputs: Mapping[str, np.ndarray], *, reference: str = REFERENCE,
               labels: Sequence[str] | None = None, centroid_model: tuple[list[str], np.ndarray] | None = None,
               label_map: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy of every row's ``eval_vectors`` against the reference's, by ``smp_bench.accuracy``:
    cosine agreement (of the pooled embeddings, or of the logit rows), nearest-centroid
    accuracy with the reference's centroids (``embeddings``), argmax agreement and the head's
    accuracy (``logits``). A row whose outputs have another shape gets an ``eval_note``."""
    if reference not in outputs:
        raise ValueError(f"no outputs of the reference {reference!r}")
    ref = outputs[reference]
    scored: dict[str, dict[str, Any]] = {}
    for name, out in outputs.items():
        if out.shape != ref.shape:
            scored[name] = {"eval_note": f"outputs {list(out.shape)} differ from the reference's {list(ref.shape)}"}
            continue
        metrics = acc.evaluate(kind, ref, out, labels=labels, centroid_model=centroid_model, label_map=label_map)
        if kind == LOGITS:
            metrics.update(acc.cosine_agreement(ref, out))
        scored[name] = metrics
    return scored


def fp32_twins(infos: Sequence[RowInfo]) -> dict[str, str]:
    """Each row's fp32 twin: the first in-process onnxruntime fp32 row of the same model (for
    the unpruned model, ``ort-dense``), the model the row's precision or runtime is compared to."""
    twins = {}
    for info in infos:
        same = [i.name for i in infos if i.model == info.model and i.runtime == "onnxruntime"
                and i.precision == "fp32" and not i.foreign]
        if same:
            twins[info.name] = REFERENCE if REFERENCE in same else same[0]
    return twins


def twin_fields(vectors: Mapping[str, np.ndarray], twins: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Cosine agreement of each row with its fp32 twin (``fp32_twins``): what the precision or
    runtime alone changed, where ``cosine to dense`` also holds what pruning changed."""
    out: dict[str, dict[str, Any]] = {}
    for name, twin in twins.items():
        if name in vectors and twin in vectors and vectors[name].shape == vectors[twin].shape:
            cosine = acc.cosine_agreement(vectors[twin], vectors[name])
            out[name] = {"fp32_twin": twin, "twin_cosine_mean": cosine["cosine_mean"],
                         "twin_cosine_min": cosine["cosine_min"]}
    return out


def build_rows(group: str, batch: int, infos: Sequence[RowInfo], speeds: Mapping[str, Mapping[str, Any]],
               evals: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat records (``smp_bench.records`` style) of the rows that were timed, in ``infos`` order."""
    rows = []
    for info in infos:
        if info.name not in speeds:
            continue
        row: dict[str, Any] = {"group": group, "batch_size": batch, **asdict(info)}
        row.update(speeds[info.name])
        row.update(evals.get(info.name, {}))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- the report

def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if spec == "x":
        return f"{value:.2f}x"
    if spec == "pct":
        return f"{100 * value:.1f}%"
    if spec == "mib":
        return f"{value / 2**20:.1f}"
    return format(value, spec)


def _cosine(row: Mapping[str, Any]) -> str:
    if row.get("cosine_mean") is None:
        return row.get("eval_note", "-")
    return f"{row['cosine_mean']:.4f} / {row['cosine_min']:.3f}"


def _twin(row: Mapping[str, Any]) -> str:
    if row.get("twin_cosine_mean") is None:
        return "-"
    return f"{row['twin_cosine_mean']:.4f} / {row['twin_cosine_min']:.3f}"


def _mark(row: Mapping[str, Any]) -> str:
    return f"{row['name']} †" if row.get("foreign") else row["name"]


COLUMNS: tuple[tuple[str, Any, str], ...] = (
    ("row", _mark, ""), ("runtime", "runtime", ""), ("model", "model", ""), ("precision", "precision", ""),
    ("p50 ms", "p50_ms", ".1f"), ("p90 ms", "p90_ms", ".1f"), ("seq/s", "throughput_seq_s", ".1f"),
    ("vs ort-dense", "vs_reference", "x"), ("vs fastest dense", "vs_fastest_dense", "x"),
    ("task acc", "task_accuracy", "pct"), ("cosine to dense (mean / min)", _cosine, ""),
    ("cosine to own fp32", _twin, ""), ("file MiB", "file_bytes", "mib"),
)
_LEFT = {0, 1, 2, 3, 10, 11}


def table(rows: Sequence[Mapping[str, Any]], *, markdown: bool = True) -> str:
    """The rows as a Markdown table (or fixed-width text for the terminal)."""
    headers = [c[0] for c in COLUMNS]
    cells = [[key(r) if callable(key) else (str(r.get(key, "-")) if not spec else _fmt(r.get(key), spec))
              for _, key, spec in COLUMNS] for r in rows]
    if markdown:
        align = ["---" if i in _LEFT else "---:" for i in range(len(headers))]
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells])
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i in _LEFT else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def sections(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, list[Mapping[str, Any]]]]:
    """(group, batch, rows) in the order the rows came, one per interleaved run."""
    order: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        order.setdefault((row["group"], row["batch_size"]), []).append(row)
    return [(group, batch, part) for (group, batch), part in order.items()]


def _section_lines(group: str, batch: int, part: Sequence[Mapping[str, Any]], meta: Mapping[str, Any],
                   first: bool) -> list[str]:
    seq = meta.get("seq_len", "?")
    best = next((r.get("fastest_dense_peer") for r in part if r.get("fastest_dense_peer")), None)
    best_row = next((r for r in part if r["name"] == best), None)
    lines = [f"## {group}: batch {batch} x {seq} tokens", ""]
    description = (meta.get("groups") or {}).get(group)
    if description and first:
        lines += [description, ""]
    if best_row is not None:
        lines += [f"Fastest dense peer: `{best}` ({best_row['runtime']}, {best_row['precision']}, "
                  f"{best_row['p50_ms']:.1f} ms, {best_row['vs_reference']:.2f}x ort-dense).", ""]
    lines += [table(part), ""]
    return lines


def markdown(rows: Sequence[Mapping[str, Any]], *, skipped: Sequence[Skipped] = (), notes: Sequence[str] = (),
             meta: Mapping[str, Any] | None = None) -> str:
    """results.md: one table per group and batch, then where and how it was measured."""
    meta = meta or {}
    env = meta.get("environment", {})
    lines = ["# Peers: one interleaved run per group and batch", ""]
    seen: set[str] = set()
    for group, batch, part in sections(rows):
        lines += _section_lines(group, batch, part, meta, group not in seen)
        seen.add(group)
    lines += ["Columns: p50 / p90 of the timed calls; seq/s = batch / p50; `vs ort-dense` and `vs fastest dense` "
              "are ratios of medians (> 1: faster) in the same interleaved run; task acc and cosine on the "
              "held-out texts, against ort-dense's outputs (centroids from ort-dense's embeddings); "
              "cosine to own fp32: against the same model's first fp32 onnxruntime row (the precision's or "
              "runtime's own error, without what pruning changed); file MiB: the model file(s) the runtime loads."]
    if any(r.get("foreign") for r in rows):
        lines += ["", "† timed in its own process (own virtualenv) interleaved with that process's onnxruntime "
                      "dense fp32: `vs ort-dense` is against that one; `vs fastest dense` is chained through it."]
    lines += ["", "## How each row was made", ""]
    made: dict[tuple[str, str], str] = {}
    for row in rows:
        made.setdefault((row["group"], row["name"]), row.get("method") or "-")
    lines += [f"- {group} `{name}`: {method}" for (group, name), method in made.items()]
    lines += ["", "## Where and how", ""]
    load = meta.get("load_average", {})
    lines += [f"- date: {env.get('timestamp', '-')}",
              f"- CPU: {env.get('cpu_model', '-')} [{env.get('cpu_isa') or '-'}] ({env.get('logical_cores', '-')} "
              f"logical cores, {env.get('usable_cores', '-')} usable)",
              f"- vector flags: {' '.join(meta.get('cpu_vector_flags') or []) or '-'}",
              *([f"- OpenVINO CPU plugin: {meta['openvino_cpu']}"] if meta.get("openvino_cpu") else []),
              f"- load average (1/5/15 min): {load.get('start', '-')} at start, {load.get('end', '-')} at end",
              "- cores kept busy by other processes while each section was timed (/proc/stat less this process): "
              + (", ".join(f"{k} {_fmt(v, '.2f')}" for k, v in (meta.get("other_cores_while_timing") or {}).items())
                 or "-"),
              f"- threads: {meta.get('threads', '-')} per runtime (onnxruntime intra-op, spinning off; "
              f"OpenVINO INFERENCE_NUM_THREADS, one stream; DeepSparse num_cores)",
              f"- timing: {meta.get('timing', '-')}",
              f"- eval: {meta.get('eval', '-')}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in (meta.get('versions') or {}).items())}",
              f"- command: `{meta.get('command', '')}`"]
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    if skipped:
        lines += ["", "## Not measured", "", "| group | row | why |", "| --- | --- | --- |"]
        lines += [f"| {s.group} | {s.name} | {s.reason.replace('|', '/')} |" for s in skipped]
    return "\n".join(lines) + "\n"


def results_dir(root: Path, stamp: str, cpu_model: str) -> Path:
    """``<root>/<stamp>-peers-<machine>``."""
    return Path(root) / f"{stamp}-peers-{stats.machine_slug(cpu_model)}"


def write_results(out_dir: Path, rows: Sequence[Mapping[str, Any]], *, skipped: Sequence[Skipped] = (),
                  notes: Sequence[str] = (), meta: Mapping[str, Any] | None = None,
                  timings: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """results.json (flat records plus ``meta``, ``skipped``, ``notes``), results.md and, with
    ``timings``, timings.json (every timed call in ms). Returns the paths by file name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    files = {"results.json": write_json(out_dir / "results.json", rows, schema=SCHEMA, meta=meta,
                                        skipped=[asdict(s) for s in skipped], notes=list(notes))}
    md = out_dir / "results.md"
    md.write_text(markdown(rows, skipped=skipped, notes=notes, meta=meta))
    files["results.md"] = md
    if timings is not None:
        files["timings.json"] = write_json(out_dir / "timings.json", [], timings=timings)
    logger.info("wrote %s", ", ".join(str(p) for p in files.values()))
    return files


def index_row(stamp: str, cpu_model: str, cores: int | None, command: str, out_dir: Path) -> str:
    """The line benchmarks/results/INDEX.md gets for a run."""
    return (f"| {stamp} | peers | {cpu_model} | {cores if cores is not None else '-'} | `{command}` | "
            f"[{out_dir.name}]({out_dir.name}/results.md) |")


def add_index_row(index: Path, row: str) -> None:
    """Insert ``row`` after the last table row of INDEX.md (notes may follow the table), as
    benchmarks/_record.sh does; a new INDEX.md gets the header first."""
    header = "| date (UTC) | suite | CPU | cores | command | results |\n| --- | --- | --- | ---: | --- | --- |\n"
    lines = index.read_text().splitlines() if index.is_file() else header.splitlines()
    at = max((i for i, line in enumerate(lines) if line.startswith("| ")), default=len(lines) - 1)
    lines.insert(at + 1, row)
    index.write_text("\n".join(lines) + "\n")
