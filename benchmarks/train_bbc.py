"""smp-train on BBC News with the packaged MiniLM: the accuracy table of issue #5.

    python benchmarks/train_bbc.py                          # every row (hours on 2 CPU cores)
    python benchmarks/train_bbc.py --rows dense,magnitude-0.10,smp-s-0.10
    python benchmarks/train_bbc.py --reuse                  # keep rows already run in --out

Rows: the dense model with the same head; SMP-L and SMP-S at keep 0.50 / 0.10 / 0.03;
magnitude pruning (per matrix, no training) at the same keeps. Every row is one
``python -m cli.train`` command (recorded verbatim with its wall time); the frozen prototype
head (the paper keeps the head frozen) is the same for all rows. Accuracy is on the held-out
BBC split (smp_bench.data.load_bbc_news, seed 13, 446 articles). Results:
benchmarks/results/train_bbc.{json,md}; runs (checkpoints, logs, plots) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEPS = ("0.50", "0.10", "0.03")
ROWS = ("dense", "dense-linear", *(f"{m}-{k}" for m in ("smp-s", "smp-l", "magnitude") for k in KEEPS))
TEMPLATE = "This is a news article about {label}."   # chosen on the train split (see results .md)
GOALS = {"0.10": 2.0, "0.03": 5.0}                    # SMP-S within N points of dense
NOTES = (
    "- The dense row is the frozen prototype head on the unpruned encoder (zero-shot); SMP never "
    "changes a weight or the head, yet its masks learn the task, which is why SMP-S can beat it.",
    "- Label text chosen on 400 *training* articles (seq 128, dense): `{label}` 77.5%, "
    "`This is a news article about {label}.` 84.3%, `{label} news` 79.8%.",
    "- max_seq_len 64 (not 128) and 2 epochs (224 steps of batch 16) to fit the CPU budget of a 2-core "
    "machine shared with other jobs (dense, seq 128 vs 64 on the same 400 training articles: 84.3% vs 83.0%).",
    "- SMP rows use `--score-init-from magnitude`. With the official constant init 0 the same SMP-S 0.10 run "
    "collapsed: as soon as pruning started the cross-entropy rose above chance (5.3 at keep 0.88) and the "
    "held-out accuracy after epoch 1 (keep 0.18) was 23.1% (chance 20%); magnitude init reached 91.5% at the "
    "same point. A few hundred steps are too few for sign-like Adam updates from 0 to rank weights: the "
    "first weights removed are the ones whose gradient says 'shrink', a correlated set whose joint removal "
    "is worse than random. Log: train_bbc-smp-s-0.10-constant-init.csv (run stopped after epoch 1).",
    "- `dense-linear` is a stronger reference than the paper's: the dense encoder with a *trained* linear "
    "classifier on BERT's frozen pooler (`--method dense --head linear --head-lr 0.02`, same epochs and batch). "
    "With smp-train's default head lr 1e-3 the loss only fell from 1.60 to 1.46 in 224 steps and the accuracy "
    "was 56.95%. Every other row keeps the frozen prototype head.",
)
NOT_RUN = ("- Rows marked 'not run' did not fit the CPU budget; `python benchmarks/train_bbc.py --reuse` runs them "
           "and keeps the others.")


def row_args(row: str, args: argparse.Namespace) -> list[str]:
    """smp-train arguments of one row (its method and keep from the row name)."""
    method, _, keep = row.rpartition("-") if not row.startswith("dense") else ("dense", "", "1.0")
    common = ["--label-template", TEMPLATE, "--max-seq-len", str(args.max_seq_len), "--seed", str(args.seed),
              "--eval-batch-size", "64"]
    if row == "dense-linear":
        return ["--method", "dense", "--keep", keep, "--head", "linear", "--head-lr", str(args.head_lr),
                "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), *common]
    if method in ("dense", "magnitude"):
        return ["--method", method, "--keep", keep, *common]
    extra = ["--ship", args.ship] if args.ship and row == args.ship_row else []
    return ["--method", method, "--keep", keep, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--score-init-from", args.score_init_from, *common, *extra]


def run_row(row: str, args: argparse.Namespace, train_args: list[str] | None = None) -> dict:
    """Run (or, with --reuse, read back) one row (its smp-train arguments: ``train_args``, else
    ``row_args``); return its record."""
    out = Path(args.out) / row
    results = out / "eval_results.json"
    train_args = row_args(row, args) if train_args is None else train_args
    cmd = [sys.executable, "-m", "cli.train", "-o", str(out), *train_args, "--overwrite"]
    shown = f"OMP_NUM_THREADS={args.threads} nice -n 10 python -m cli.train " + shlex.join(cmd[3:])
    if args.reuse and results.is_file():
        record = json.loads(results.read_text())
        return {"row": row, "command": shown, "status": "reused", **record}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    start = time.time()
    proc = subprocess.run(["nice", "-n", "10", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"row": row, "command": shown, "status": f"failed ({proc.returncode})", "wall_s": wall}
    record = json.loads(results.read_text())
    return {"row": row, "command": shown, "status": "ran", **record, "wall_s": round(wall, 1)}


def _pct(value: float | None) -> str:
    return "not run" if value is None else f"{100 * value:.2f}"


def markdown(records: dict[str, dict], args: argparse.Namespace) -> str:
    """The accuracy table, the goal checks and the commands."""
    dense = records.get("dense", {}).get("accuracy")
    lines = [f"# smp-train on BBC News, packaged all-MiniLM-L6-v2 ({datetime.now(timezone.utc):%Y-%m-%d})", "",
             "Held-out accuracy (446 articles, `load_bbc_news('test', seed=13)`), frozen prototype head "
             f"(label text `{TEMPLATE}`), max_seq_len {args.max_seq_len}. Keep = final keep ratio of the "
             "36 encoder linears; density = kept fraction actually exported.", "",
             "| keep | SMP-S | SMP-L | magnitude | SMP-S density |", "| --- | --- | --- | --- | --- |",
             f"| 1.00 (dense) | {_pct(dense)} | | | 1.0000 |",
             f"| 1.00 (dense, trained linear head) | {_pct(records.get('dense-linear', {}).get('accuracy'))} "
             "| | | 1.0000 |"]
    for keep in KEEPS:
        acc = {m: records.get(f"{m}-{keep}", {}).get("accuracy") for m in ("smp-s", "smp-l", "magnitude")}
        density = records.get(f"smp-s-{keep}", {}).get("density")
        lines.append(f"| {keep} | {_pct(acc['smp-s'])} | {_pct(acc['smp-l'])} | {_pct(acc['magnitude'])} | "
                     f"{'' if density is None else f'{density:.4f}'} |")
    lines += ["", "## Goals", ""]
    for keep in KEEPS:
        smp_s = records.get(f"smp-s-{keep}", {}).get("accuracy")
        mag = records.get(f"magnitude-{keep}", {}).get("accuracy")
        if keep in GOALS:
            ok = None if smp_s is None or dense is None else (dense - smp_s) * 100 <= GOALS[keep]
            lines.append(f"- SMP-S {keep} within {GOALS[keep]:g} points of dense: "
                         f"{'not run' if ok is None else ('yes' if ok else 'NO')}"
                         + ("" if ok is None else f" ({100 * (smp_s - dense):+.2f} points)"))
        above = None if smp_s is None or mag is None else smp_s > mag
        lines.append(f"- SMP-S {keep} above magnitude: {'not run' if above is None else ('yes' if above else 'NO')}")
    trained = records.get("dense-linear", {}).get("accuracy")
    if trained is not None:
        gaps = ", ".join(f"{keep} {100 * (records[f'smp-s-{keep}']['accuracy'] - trained):+.2f}" for keep in KEEPS
                         if records.get(f"smp-s-{keep}", {}).get("accuracy") is not None)
        lines.append(f"- Against the stronger reference (dense, trained linear head, {100 * trained:.2f}): SMP-S {gaps} "
                     "points")
    missing = any(records.get(row, {}).get("accuracy") is None for row in ROWS)
    lines += ["", "## Notes", "", *NOTES, *([NOT_RUN] if missing else []), "", "## Runs", "", "| row | status | accuracy | steps | wall s | command |", "| --- | --- | --- | --- | --- | --- |"]
    for row in ROWS:
        r = records.get(row)
        if r is None:
            lines.append(f"| {row} | not run | | | | |")
            continue
        lines.append(f"| {row} | {r.get('status')} | {_pct(r.get('accuracy'))} | {r.get('steps', '')} | "
                     f"{r.get('wall_s', '')} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--out", default="build/train_bbc")
    parser.add_argument("--results", default="benchmarks/results/train_bbc")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--head-lr", type=float, default=2e-2,
                        help="lr of the dense-linear row's head (the scores' lr; 1e-3 left it at 56.95%%)")
    parser.add_argument("--score-init-from", default="magnitude", choices=["constant", "magnitude"],
                        help="score init of the SMP rows (constant 0 fails at this budget: see the .md)")
    parser.add_argument("--ship", default=None, help="write the shipped form of --ship-row here")
    parser.add_argument("--ship-row", default="smp-s-0.10")
    parser.add_argument("--reuse", action="store_true", help="read back rows that already have eval_results.json")
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    results = Path(args.results)
    previous = json.loads(results.with_suffix(".json").read_text())["rows"] if results.with_suffix(".json").is_file() else {}
    records = dict(previous)
    results.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        print(f"[train_bbc] {row} ...", flush=True)
        records[row] = run_row(row, args)
        print(f"[train_bbc] {row}: {records[row].get('status')} accuracy {records[row].get('accuracy')}", flush=True)
        write_results(results, records, args)   # after every row: an interrupted suite keeps what it ran
    print(markdown(records, args))


def write_results(results: Path, records: dict[str, dict], args: argparse.Namespace) -> None:
    """benchmarks/results/train_bbc.{json,md} from the records so far."""
    payload = {"suite": "train_bbc", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "settings": vars(args), "rows": records}
    results.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    results.with_suffix(".md").write_text(markdown(records, args))


if __name__ == "__main__":
    main()
