"""Flat benchmark records and their writers: results.json, a Markdown table, the terminal table.

A record is one variant: a flat ``{str: scalar}`` dict (strings, numbers, booleans, None), so
``results.json`` loads straight into a data frame. Every record repeats the environment
(``env_*``, ``version_*``) and the command, so a single row says what produced it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

Scalar = (str, int, float, bool, type(None))
SCHEMA_VERSION = 2        # 2: "config" nested by option group (smp_bench.config), was flat


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``prefix_key_subkey``; lists and tuples become comma-joined strings."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}".replace("-", "_").replace(" ", "_")
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}_"))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, Scalar):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def environment_fields(environment: Mapping[str, Any]) -> dict[str, Any]:
    """``smp_bench.stats.environment()`` (plus extras) flattened: ``env_*`` and ``version_*``."""
    env = dict(environment)
    versions = env.pop("versions", {}) or {}
    out = flatten(env, "env_")
    out.update(flatten(versions, "version_"))
    return out


def build_record(name: str, *, info: Mapping[str, Any], summary: Mapping[str, Any] | None = None,
                 speedup: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                 environment: Mapping[str, Any] | None = None, command: str = "") -> dict[str, Any]:
    """One flat record: identity (``info``), latency summary, speed-up, extras, environment."""
    record: dict[str, Any] = {"name": name}
    record.update(flatten(info))
    if summary is not None:
        record.update(flatten(summary))
    if speedup is not None:
        record["speedup"] = speedup.get("ratio_of_medians")
        record["speedup_pairwise"] = speedup.get("pairwise")
        record["speedup_n_pairs"] = speedup.get("n_pairs")
    if extra:
        record.update(flatten(extra))
    if environment is not None:
        record.update(environment_fields(environment))
    record["command"] = command
    return record


def is_flat(record: Mapping[str, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, Scalar) for k, v in record.items())


def _clean(value: Any) -> Any:
    """NaN / inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, records: Sequence[Mapping[str, Any]], **extra: Any) -> Path:
    """``{"schema_version", "records": [...flat...], **extra}`` (extra: environment, skipped, ...)."""
    bad = [r.get("name") for r in records if not is_flat(r)]
    if bad:
        raise ValueError(f"records are not flat: {bad}")
    path = Path(path)
    payload = {"schema_version": SCHEMA_VERSION,
               "records": [{k: _clean(v) for k, v in r.items()} for r in records], **extra}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def read_json(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results.json."""
    data = json.loads(Path(path).read_text())
    return list(data["records"])


# ---------------------------------------------------------------------------- tables

def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if spec == "x":
        return f"{value:.2f}x"
    if spec == "mib":
        return f"{value / 2**20:.1f}"
    if spec == "pct":
        return f"{100 * value:.1f}%"
    if spec == "s":
        return str(value)
    return format(value, spec)


def _agreement(record: Mapping[str, Any]) -> str:
    if record.get("cosine_mean") is not None:
        return f"cos {record['cosine_mean']:.4f} (min {record['cosine_min']:.3f})"
    if record.get("argmax_agreement") is not None:
        return (f"argmax {100 * record['argmax_agreement']:.1f}% "
                f"(max|d| {record['max_abs_logit_diff']:.2g})")
    return "-"


# (header, key or callable, format)
COLUMNS: tuple[tuple[str, Any, str], ...] = (
    ("variant", "name", "s"),
    ("backend", "backend", "s"),
    ("sparsity", "sparsity", ".2f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("p90 ms", "p90_ms", ".1f"),
    ("p99 ms", "p99_ms", ".1f"),
    ("mean ms", "mean_ms", ".1f"),
    ("seq/s", "throughput_seq_s", ".1f"),
    ("speed-up", "speedup", "x"),
    ("pairwise", "speedup_pairwise", "x"),
    ("peak RSS MiB", "peak_rss_mb", ".0f"),
    ("load s", "load_s", ".2f"),
    ("ONNX MiB", "onnx_bytes", "mib"),
    ("agreement vs dense", _agreement, "s"),
    ("task acc", "task_accuracy", "pct"),
)


def table_rows(records: Iterable[Mapping[str, Any]],
               columns: Sequence[tuple[str, Any, str]] = COLUMNS) -> tuple[list[str], list[list[str]]]:
    headers = [c[0] for c in columns]
    rows = []
    for record in records:
        rows.append([key(record) if callable(key) else _fmt(record.get(key), spec)
                     for _, key, spec in columns])
    return headers, rows


def terminal_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table for the terminal."""
    headers, rows = table_rows(records)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    left = {0, 1, len(headers) - 2}
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(records: Sequence[Mapping[str, Any]]) -> str:
    headers, rows = table_rows(records)
    align = ["---" if i in (0, 1, len(headers) - 2) else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where and how the numbers were measured, from the first record's env fields."""
    if not records:
        return []
    r = records[0]
    versions = ", ".join(f"{k.removeprefix('version_')} {v}" for k, v in r.items()
                         if k.startswith("version_") and v)
    lines = [
        f"- date: {r.get('env_timestamp', '-')}",
        f"- CPU: {r.get('env_cpu_model', '-')} [{r.get('env_cpu_isa') or '-'}] "
        f"({r.get('env_logical_cores', '-')} logical cores, "
        f"{r.get('env_usable_cores', '-')} usable; load average 1/5/15 min "
        f"{r.get('env_load_average_start', '-')} at start, {r.get('env_load_average', '-')} at end)",
        f"- device: {r.get('device', '-')}" + (f" ({r['env_cuda_device']})" if r.get("env_cuda_device") else ""),
        f"- threads: onnxruntime intra-op {r.get('env_ort_intra_op_threads', '-')} "
        f"(spinning {'on' if r.get('env_ort_spinning') else 'off'}), "
        f"torch {r.get('env_torch_threads', '-')}",
        f"- shape: batch {r.get('batch_size', '-')} x seq-len {r.get('seq_len', '-')}; "
        f"{r.get('n', '-')} timed runs after {r.get('warmup', '-')} warm-up, interleaved",
        f"- reference for speed-up: {r.get('reference', '-')} (ratio of medians; pairwise: median of "
        "per-round ratios)",
        f"- eval: {r.get('eval_source', '-')} ({r.get('eval_n', '-')} texts"
        + (f"; centroids from {r['eval_centroid_n']} train texts" if r.get("eval_centroid_n") else "") + ")",
        f"- versions: {versions}",
        f"- command: `{r.get('command', '')}`",
    ]
    task = next((x.get("task_metric") for x in records if x.get("task_metric")), None)
    if task:
        lines.insert(7, f"- task accuracy: {task}")
    return lines


def write_markdown(path: str | Path, records: Sequence[Mapping[str, Any]], *, title: str = "smp-bench results",
                   plot: str | None = None, notes: Sequence[str] = ()) -> Path:
    """results.md: the table, where it was measured, and the plot when there is one."""
    parts = [f"# {title}", "", markdown_table(records), "", *environment_lines(records)]
    if notes:
        parts += ["", *[f"- {n}" for n in notes]]
    if plot:
        parts += ["", f"![latency vs sparsity and speed-up]({plot})"]
    path = Path(path)
    path.write_text("\n".join(parts) + "\n")
    return path
