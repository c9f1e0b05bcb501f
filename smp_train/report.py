"""The training log as JSON, CSV and an SVG plot (no plotting library needed)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

LOG_JSON = "training_log.json"
LOG_CSV = "training_log.csv"
LOG_SVG = "training_log.svg"
COLUMNS = ("step", "epoch", "loss", "ce", "reg", "keep", "density", "lambda", "reg_weight",
           "learning_rate", "eval_loss", "eval_accuracy")


def write_log_files(history: Sequence[dict], directory: Path, *, title: str = "smp-train") -> list[Path]:
    """``training_log.json`` (all records), ``training_log.csv`` (COLUMNS) and ``training_log.svg``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOG_JSON).write_text(json.dumps(list(history), indent=1) + "\n", encoding="utf-8")
    with open(directory / LOG_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in history:
            if any(k in record for k in COLUMNS[2:]):
                writer.writerow({k: record.get(k, "") for k in COLUMNS})
    (directory / LOG_SVG).write_text(plot_svg(history, title=title), encoding="utf-8")
    return [directory / LOG_JSON, directory / LOG_CSV, directory / LOG_SVG]


def _series(history: Sequence[dict], key: str) -> list[tuple[float, float]]:
    out = []
    for record in history:
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in record:
            out.append((float(record["step"]), float(value)))
    return out


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")


def _panel(x0: float, y0: float, w: float, h: float, title: str,
           lines: list[tuple[str, list[tuple[float, float]]]], x_max: float) -> list[str]:
    """One framed panel with a polyline (and dots) per series and min / max labels."""
    out = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>',
           f'<text x="{x0}" y="{y0 - 6}" font-size="12" font-weight="bold">{escape(title)}</text>']
    values = [v for _, pts in lines for _, v in pts]
    if not values:
        return out + [f'<text x="{x0 + 8}" y="{y0 + h / 2}" font-size="11">no data</text>']
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    sx = (lambda x: x0 + w * (x / x_max if x_max > 0 else 0.0))
    sy = (lambda v: y0 + h - h * (v - lo) / (hi - lo))
    out.append(f'<text x="{x0 - 4}" y="{y0 + 10}" font-size="10" text-anchor="end">{hi:.4g}</text>')
    out.append(f'<text x="{x0 - 4}" y="{y0 + h}" font-size="10" text-anchor="end">{lo:.4g}</text>')
    for i, (label, pts) in enumerate(lines):
        color = _COLORS[i % len(_COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        if len(pts) <= 30:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{color}"/>' for x, v in pts]
        out.append(f'<text x="{x0 + w - 4}" y="{y0 + 14 + 13 * i}" font-size="11" text-anchor="end" '
                   f'fill="{color}">{escape(label)}</text>')
    return out


def plot_svg(history: Sequence[dict], *, title: str = "smp-train") -> str:
    """Three panels against the optimizer step: CE and R, keep ratio / density / lambda, eval accuracy."""
    steps = [float(r["step"]) for r in history if "step" in r]
    x_max = max(steps) if steps else 1.0
    width, panel_h, left = 720, 150, 60
    lambda_pts = _series(history, "lambda")
    lam_max = max((v for _, v in lambda_pts), default=0.0)
    panels = [
        ("training cross-entropy and regularizer R (the loss is CE + lambda_t v_t / v_f R)",
         [("cross-entropy", _series(history, "ce")), ("R = mean sigmoid(S)", _series(history, "reg"))]),
        (f"keep ratio, density, lambda / {lam_max:g}",
         [("keep v_t", _series(history, "keep")), ("density", _series(history, "density")),
          ("lambda (scaled)", [(x, v / lam_max) for x, v in lambda_pts] if lam_max > 0 else [])]),
        ("held-out accuracy", [("eval accuracy", _series(history, "eval_accuracy"))]),
    ]
    height = 40 + len(panels) * (panel_h + 40) + 20
    body = [f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, (name, lines) in enumerate(panels):
        body += _panel(left, 50 + i * (panel_h + 40), width - left - 20, panel_h, name, lines, x_max)
    body.append(f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">'
                f'optimizer step (0 .. {x_max:g})</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")
