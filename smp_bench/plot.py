"""The results plot (matplotlib, Agg backend: no display needed): latency vs sparsity, speed-up bars."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import PlotError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotError("matplotlib is not installed: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_results(records: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Write a PNG with two panels.

    Left: p50 latency (with a bar up to p90) against sparsity, one line per family (``backend`` +
    ``family``); reference records (``is_reference``, sparsity 0) start every line of their backend.
    Right: speed-up over the reference per variant (ratio of medians; dots: pairwise).
    """
    timed = [r for r in records if r.get("p50_ms") is not None]
    if not timed:
        raise PlotError("no timed records to plot", path=path)
    plt = _pyplot()
    fig, (ax_lat, ax_spd) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.2]})
    _latency_panel(ax_lat, timed)
    _speedup_panel(ax_spd, timed)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_panel(ax: Any, timed: Sequence[Mapping[str, Any]]) -> None:
    families: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    baselines: dict[str, Mapping[str, Any]] = {}
    for r in timed:
        backend = str(r.get("backend", ""))
        if r.get("sparsity") in (None, 0.0) and r.get("family") in ("dense", "eager-dense", None):
            baselines.setdefault(backend, r)
        families[f"{backend} {r.get('family', r['name'])}"].append(r)
    for label, rows in sorted(families.items()):
        pts = sorted(rows, key=lambda r: r.get("sparsity") or 0.0)
        base = baselines.get(label.split(" ", 1)[0])
        if base is not None and base not in pts and all((r.get("sparsity") or 0) > 0 for r in pts):
            pts = [base, *pts]
        err = [[0.0] * len(pts), [max(p.get("p90_ms", p["p50_ms"]) - p["p50_ms"], 0.0) for p in pts]]
        ax.errorbar([p.get("sparsity") or 0.0 for p in pts], [p["p50_ms"] for p in pts], yerr=err, marker="o",
                    capsize=3, label=label)
    ax.set_xlabel("sparsity of the pruned linears")
    ax.set_ylabel("latency per batch, p50 ms (bar to p90)")
    ax.set_title("latency vs sparsity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_ylim(bottom=0)


def _speedup_panel(ax: Any, timed: Sequence[Mapping[str, Any]]) -> None:
    ratios = [r.get("speedup") or 0.0 for r in timed]
    colors = ["#888888" if r.get("is_reference") else "#1f77b4" if r.get("backend") == "onnxruntime"
              else "#ff7f0e" for r in timed]
    ypos = list(range(len(timed)))
    ax.barh(ypos, ratios, color=colors)
    pair = [(i, r["speedup_pairwise"]) for i, r in enumerate(timed) if r.get("speedup_pairwise")]
    if pair:
        ax.plot([p for _, p in pair], [i for i, _ in pair], "k.", label="pairwise (median of round ratios)")
        ax.legend(fontsize=8, loc="lower right")
    for i, (v, r) in enumerate(zip(ratios, timed)):
        ax.text(max(v, r.get("speedup_pairwise") or 0.0), i, f"  {v:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="k", linewidth=0.8)
    ax.set_yticks(ypos)
    ax.set_yticklabels([r["name"] for r in timed], fontsize=8)
    ax.invert_yaxis()
    ref = next((r.get("reference") for r in timed if r.get("reference")), "reference")
    ax.set_xlabel(f"speed-up vs {ref} (ratio of medians)")
    ax.set_title("speed-up (blue: onnxruntime, orange: torch, grey: reference)")
    ax.set_xlim(0, max(ratios + [p for _, p in pair] + [1.0]) * 1.3)
