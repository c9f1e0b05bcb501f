"""Suite "peers" (issue #17): the project's exports against other CPU runtimes, one harness, one
process, one interleaved run per group and batch.

    python benchmarks/peers.py [--quick] [--groups shipped,magnitude] [--runs 10] [--batch 32 1]
    make peers                   # installs the peer packages first (benchmarks/peers_setup.sh)

Groups (each a dense reference and its pruned models):

- ``shipped``: the SMP-S checkpoint in ``checkpoints/`` (10% of the encoder's linear weights
  kept, prototype head: logits) exported in every variant x precision of the variant table
  (``smp_export.variants.WEIGHTS_VARIANTS`` x ``smp_export.options.PRECISIONS``, as each variant
  allows); the reference is the unpruned MiniLM with the same head (smp-bench's baseline);
- ``magnitude``: the packaged MiniLM magnitude-pruned to ``--sparsity`` (0.90 0.97), every
  variant x precision, from smp-bench's own export cache (``build/bench-cache``); the
  reference is the unpruned encoder (last_hidden_state).

Rows of each group: ``ort-dense`` (onnxruntime fp32, the reference), the same dense model as
``ort-int8`` (the project's quantize_dynamic path), ``optimum-avx2`` / ``optimum-avx512-vnni``
(optimum's ORTQuantizer), ``openvino-fp32`` / ``-bf16`` / ``-int8`` (NNCF PTQ on BBC train texts) /
``-int8-weights`` (NNCF weight compression), then every project export loaded by path, and
DeepSparse 1.8.0 (its own venv and process, ``peer_deepsparse.py``). Every row is scored on the
same held-out BBC News texts against ``ort-dense``'s outputs. Writes
``benchmarks/results/<stamp>-peers-<machine>/results.{json,md}`` and ``timings.json`` and adds a
line to ``benchmarks/results/INDEX.md``.

The groups are built by ``peer_groups.py``, the peers' rows by ``peer_rows.py``, DeepSparse's by
``peer_deepsparse_group.py`` (its worker: ``peer_deepsparse.py``); the arithmetic and the report
are ``smp_bench.peers``.
"""

from __future__ import annotations

import os

# torch (imported by the exporter) must not spin OpenMP threads between the timed calls.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from peer_deepsparse import DEFAULT_VENV  # noqa: E402
from peer_deepsparse_group import deepsparse_group  # noqa: E402
from peer_groups import Collected, Group, magnitude_group, shipped_group  # noqa: E402
from peer_rows import Row, export_bytes, openvino_rows, ov_type_name, optimum_rows, ort_int8_row, ort_row  # noqa: E402

from runtime.contract import CONFIG_FILE, HIDDEN, MODEL_FILE  # noqa: E402
from runtime.errors import SmpError  # noqa: E402
from runtime.tokenize import Tokenizer  # noqa: E402
from smp_bench import accuracy as acc  # noqa: E402
from smp_bench.config import BenchConfig  # noqa: E402
from smp_bench.harness import Runner, TimingPlan, time_interleaved  # noqa: E402
from smp_bench.peers import (EMBEDDINGS, LOGITS, REFERENCE, RowInfo, Skipped, add_index_row, build_rows,  # noqa: E402
                             cpu_snapshot, cpu_vector_flags, eval_vectors, fp32_twins, index_row, other_cores,
                             results_dir, score_rows, sections, speed_fields, table, twin_fields, write_results)
from smp_bench.stats import cpu_isa, environment  # noqa: E402

logger = logging.getLogger("peers")
GROUPS = ("shipped", "magnitude")
PEER_PACKAGES = ("openvino", "nncf", "optimum", "optimum-onnx")
PEER_FAMILIES = ("ort-int8", "optimum", "openvino")


# ---------------------------------------------------------------------------- rows and inputs

def chunked(infer: Callable[[Mapping[str, np.ndarray]], np.ndarray], feeds: Mapping[str, np.ndarray],
            batch: int) -> np.ndarray:
    """``infer`` over ``feeds`` in chunks of exactly ``batch`` rows (the last padded by repeating
    its final row, the padding dropped from the outputs)."""
    n = len(next(iter(feeds.values())))
    outs = []
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in feeds.items()}
        real = len(next(iter(chunk.values())))
        if real < batch:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - real, axis=0)]) for k, v in chunk.items()}
        outs.append(np.asarray(infer(chunk))[:real])
    return np.concatenate(outs)


def build_group_rows(group: Group, args: argparse.Namespace, calibration: list[dict[str, np.ndarray]],
                     skipped: list[Skipped]) -> list[Row]:
    """ort-dense first, then the peers on the same dense model, then the project's exports."""
    work = args.work_dir / group.name / "peers"
    work.mkdir(parents=True, exist_ok=True)
    model = "unpruned"
    reference = RowInfo(REFERENCE, "onnxruntime", model, "fp32", "smp-export --weights dense of the unpruned model",
                        True, export_bytes(group.reference), str(group.reference))
    rows: list[Row] = [ort_row(reference, group.reference, args.threads)]
    built: list[Row | Skipped] = []
    flags = cpu_isa().split(":")[-1].split()
    peers: dict[str, Callable[[], list[Row | Skipped]]] = {
        "ort-int8": lambda: [ort_int8_row(group.reference, work, args.threads, model)],
        "optimum": lambda: optimum_rows(group.reference, work, args.threads, model, flags, group.name),
        "openvino": lambda: openvino_rows(group.reference / MODEL_FILE, work, args.threads, model, calibration,
                                          group.name)}
    for family in args.peers:
        try:
            built += peers[family]()
        except Exception as exc:  # a peer's own failure (quantizer, compiler): recorded, the others go on
            logger.exception("peer %s failed", family)
            built.append(Skipped(group.name, family, f"{type(exc).__name__}: {exc}"))
    for info, export_dir in group.exports:
        try:
            built.append(ort_row(info, export_dir, args.threads))
        except SmpError as exc:
            built.append(Skipped(group.name, info.name, f"onnxruntime cannot load it: {exc}"))
    for item in built:
        (skipped.append(item) if isinstance(item, Skipped) else rows.append(item))
    return rows


def _encode(tokenizer: Tokenizer, texts: Sequence[str], seq_len: int) -> dict[str, np.ndarray]:
    return tokenizer.encode(list(texts), max_length=seq_len, pad_to=seq_len)


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _rounds(args: argparse.Namespace, batch: int) -> int:
    return args.runs if batch >= 8 else args.runs * 4


def _check_load(args: argparse.Namespace, where: str) -> float:
    one = os.getloadavg()[0]
    if one > args.max_load:
        logger.warning("load average %.2f > --max-load %.2f %s: other work on this machine may skew the timings",
                       one, args.max_load, where)
    return one


# ---------------------------------------------------------------------------- one group

def evaluate_rows(rows: Sequence[Row], tokenizer: Tokenizer, eval_set: Any, args: argparse.Namespace,
                  skipped: list[Skipped], group: str) -> tuple[list[Row], dict[str, dict[str, Any]], str, dict]:
    """Outputs of every row on the held-out texts, scored against ort-dense; rows that fail are skipped."""
    feeds = _encode(tokenizer, eval_set.texts, args.seq_len)
    reference = rows[0]
    kind = EMBEDDINGS if reference.output == HIDDEN else LOGITS
    vectors, kept = {}, []
    for row in rows:
        start = time.perf_counter()
        try:
            outputs = chunked(row.infer, feeds, args.eval_batch)
            vectors[row.info.name] = eval_vectors(kind, outputs, feeds["attention_mask"])
        except Exception as exc:  # a peer runtime's own error types: skip the row, with the message
            if row is reference:
                raise
            skipped.append(Skipped(group, row.info.name, f"failed on the eval texts: {type(exc).__name__}: {exc}"))
            continue
        kept.append(row)
        logger.info("eval %-28s %.1f s", row.info.name, time.perf_counter() - start)
    centroid_model, label_map = None, None
    if kind == EMBEDDINGS and eval_set.train_texts:
        train = _encode(tokenizer, eval_set.train_texts, args.seq_len)
        pooled = eval_vectors(kind, chunked(reference.infer, train, args.eval_batch), train["attention_mask"])
        centroid_model = acc.centroids(pooled, eval_set.train_labels)
    if kind == LOGITS:
        label_map = acc.label_index(_id2label(Path(reference.info.path)), sorted(set(eval_set.labels)))
    evals = score_rows(kind, vectors, labels=eval_set.labels, centroid_model=centroid_model, label_map=label_map)
    infos = [row.info for row in kept]
    for name, fields in twin_fields(vectors, fp32_twins(infos)).items():
        evals[name].update(fields)
    context = {"kind": kind, "vectors": vectors, "labels": eval_set.labels, "centroid_model": centroid_model,
               "label_map": label_map, "feeds": feeds, "infos": infos}
    return kept, evals, kind, context


def _id2label(export_dir: Path) -> dict[int, str]:
    config = json.loads((export_dir / CONFIG_FILE).read_text())
    return {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}


def run_group(group: Group, args: argparse.Namespace, eval_set: Any, calibration_texts: Sequence[str],
              out: Collected) -> None:
    """Build, evaluate and time one group at every batch; DeepSparse after it."""
    tokenizer = Tokenizer.from_dir(group.reference)
    calibration = [tokenizer.encode([text], max_length=args.seq_len) for text in calibration_texts]
    skipped = out.skipped
    skipped.extend(group.skipped)
    out.notes.extend(f"{group.name}: {note}" for note in dict.fromkeys(group.notes))
    out.descriptions[group.name] = group.description
    rows = build_group_rows(group, args, calibration, skipped)
    rows, evals, kind, context = evaluate_rows(rows, tokenizer, eval_set, args, skipped, group.name)
    infos = [row.info for row in rows]
    main_speeds: dict[int, dict[str, dict[str, Any]]] = {}
    timing_feeds: dict[int, dict[str, np.ndarray]] = {}
    for batch in args.batch:
        texts = [eval_set.texts[i % len(eval_set.texts)] for i in range(batch)]
        feeds = timing_feeds[batch] = _encode(tokenizer, texts, args.seq_len)
        load = os.getloadavg()[0]
        plan = TimingPlan(runs=_rounds(args, batch), warmup=args.warmup)
        logger.info("timing %s batch %d x %d: %d rows, %d + %d rounds", group.name, batch, args.seq_len,
                    len(rows), plan.warmup, plan.runs)
        before = cpu_snapshot()
        timing = time_interleaved([Runner(row.info.name, row.bind(feeds)) for row in rows], plan, batch_size=batch)
        others = other_cores(before, cpu_snapshot())
        if others is not None and others > args.max_load:
            logger.warning("other processes kept %.2f cores busy while %s batch %d was timed (> --max-load %.2f): "
                           "its timings may be skewed", others, group.name, batch, args.max_load)
        speeds = main_speeds[batch] = speed_fields(timing.times_s, batch,
                                                   dense_peers=[i.name for i in infos if i.dense_peer])
        for fields in speeds.values():
            fields.update(load_1min_before=load, other_cores_during=others, seq_len=args.seq_len,
                          warmup=args.warmup)
        out.other_cores[f"{group.name} batch {batch}"] = others
        out.rows += build_rows(group.name, batch, infos, speeds, evals)
        out.timings[f"{group.name}/batch{batch}"] = timing.to_dict()
    models = [(row.info, Path(row.info.path)) for row in rows]
    del rows
    gc.collect()
    if args.deepsparse:
        deepsparse_group(group, args, models, timing_feeds, context, main_speeds, calibration, out,
                         rounds={b: _rounds(args, b) for b in args.batch})


# ---------------------------------------------------------------------------- main

def _versions() -> dict[str, str]:
    from smp_export.versions import collect_versions

    found = dict(collect_versions())
    for name in PEER_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _openvino_cpu() -> str | None:
    """What the OpenVINO CPU plugin reports of this CPU (None without openvino)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    return (f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}, capabilities "
            f"{' '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}, default inference precision "
            f"{ov_type_name(core.get_property('CPU', 'INFERENCE_PRECISION_HINT'))}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated: shipped, magnitude")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.97], help="magnitude group's levels")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15, help="timed rounds at batch >= 8 (4x that below)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=256, help="held-out BBC News test texts")
    parser.add_argument("--centroid-samples", type=int, default=256, help="BBC train texts for the centroids")
    parser.add_argument("--calib-samples", type=int, default=128, help="BBC train texts calibrating NNCF int8")
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--peers", default="ort-int8,optimum,openvino",
                        help="comma-separated peer families: ort-int8, optimum, openvino")
    parser.add_argument("--no-deepsparse", dest="deepsparse", action="store_false")
    parser.add_argument("--deepsparse-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--quick", action="store_true",
                        help="shipped group only, 4 rounds, 64 eval texts, 32 calibration texts")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="warn when the 1-min load average at start, or the cores other processes keep busy "
                             "while a section is timed, is above this")
    parser.add_argument("--rebuild", action="store_true", help="re-export the shipped checkpoint")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the shipped group's checkpoint [default: checkpoints/minilm-bbc-smp-s-keep0.10]")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="exports and peer models [default: build/peers, build/peers-<name> with --checkpoint]")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "build" / "bench-cache")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-record", dest="record", action="store_false", help="do not add a line to INDEX.md")
    args = parser.parse_args(argv)
    if args.work_dir is None:        # another checkpoint has another head: its own peer models too
        args.work_dir = ROOT / "build" / ("peers" if args.checkpoint is None else f"peers-{args.checkpoint.name}")
    if args.quick:
        args.groups, args.runs, args.eval_samples, args.calib_samples = "shipped", 4, 64, 32
    args.groups = [g for g in args.groups.split(",") if g]
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown or not args.groups:
        parser.error(f"--groups: unknown {unknown}; choose from {', '.join(GROUPS)}")
    unknown = [p for p in args.peers if p not in PEER_FAMILIES]
    if unknown:
        parser.error(f"--peers: unknown {unknown}; choose from {', '.join(PEER_FAMILIES)}")
    if min(args.batch) < 1 or args.runs < 1 or args.threads < 1 or args.eval_batch < 1:
        parser.error("--batch, --runs, --threads and --eval-batch must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The quantizers log every tensor they skip on the root logger: root at WARNING, ours at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("peers", "peer_rows", "peer_deepsparse", "smp_bench", "smp_export", "runtime"):
        logging.getLogger(name).setLevel(logging.INFO)
    from smp_bench.data import load_bbc_news
    from smp_bench.evaluation import load_eval_set

    started, load_start = time.perf_counter(), _load()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    command = ("python benchmarks/peers.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))).strip()
    _check_load(args, "at start")
    eval_set = load_eval_set(BenchConfig.from_flat(batch=args.eval_batch, eval_samples=args.eval_samples,
                                                   centroid_samples=args.centroid_samples))
    train = load_bbc_news("train", seed=13)
    calibration_texts = list(train.texts[-args.calib_samples:]) if args.calib_samples else []
    out = Collected()
    builders = {"shipped": shipped_group, "magnitude": magnitude_group}
    for name in args.groups:
        run_group(builders[name](args), args, eval_set, calibration_texts, out)
    out.versions = {**_versions(), **out.versions}
    env = environment()
    meta = {"command": command, "environment": env, "versions": out.versions, "threads": args.threads,
            "cpu_vector_flags": cpu_vector_flags(), "openvino_cpu": _openvino_cpu(),
            "seq_len": args.seq_len, "groups": out.descriptions,
            "load_average": {"start": load_start, "end": _load()}, "other_cores_while_timing": out.other_cores,
            "timing": f"{args.warmup} warm-up + {args.runs} timed rounds at batch >= 8, {args.runs * 4} below; every "
                      "row once per round in a fixed order (time_interleaved); ratios of medians",
            "eval": f"{eval_set.source} ({len(eval_set.texts)} texts; centroids from {len(eval_set.train_texts or [])} "
                    f"train texts; NNCF calibration on the last {len(calibration_texts)} train texts), padded to "
                    f"{args.seq_len} tokens, batches of {args.eval_batch}",
            "elapsed_s": round(time.perf_counter() - started, 1)}
    directory = results_dir(args.out_dir, stamp, env["cpu_model"])
    write_results(directory, out.rows, skipped=out.skipped, notes=out.notes, meta=meta, timings=out.timings)
    for group, batch, part in sections(out.rows):
        print(f"\n{group}: batch {batch} x {args.seq_len}\n{table(part, markdown=False)}")
    for item in out.skipped:
        print(f"not measured: {item.group} {item.name}: {item.reason}")
    if args.record:
        add_index_row(args.out_dir / "INDEX.md", index_row(stamp, env["cpu_model"], env.get("usable_cores"), command,
                                                           directory))
    print(f"\nrecorded in {directory} ({meta['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
