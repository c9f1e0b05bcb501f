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
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from peer_deepsparse import DEFAULT_VENV, OWN_REFERENCE, deepsparse_rows  # noqa: E402
from peer_rows import (Row, export_bytes, file_bytes, missing, nncf_qdq_onnx, openvino_rows, ov_type_name,  # noqa: E402
                       optimum_rows, ort_int8_row, ort_row)

from runtime.contract import CONFIG_FILE, HIDDEN, MODEL_FILE  # noqa: E402
from runtime.errors import SmpError  # noqa: E402
from runtime.kernels import SPARSE_DOMAIN  # noqa: E402
from runtime.manifest import MANIFEST_NAME, Manifest  # noqa: E402
from runtime.tokenize import Tokenizer  # noqa: E402
from smp_bench import accuracy as acc  # noqa: E402
from smp_bench.config import BenchConfig  # noqa: E402
from smp_bench.harness import Runner, TimingPlan, time_interleaved  # noqa: E402
from smp_bench.peers import (EMBEDDINGS, LOGITS, REFERENCE, RowInfo, Skipped, add_index_row, build_rows,  # noqa: E402
                             chained_fields, cpu_snapshot, cpu_vector_flags, eval_vectors, fp32_twins, index_row,
                             other_cores, results_dir, score_rows, sections, speed_fields, table, twin_fields,
                             write_results)
from smp_bench.stats import cpu_isa, environment  # noqa: E402

logger = logging.getLogger("peers")
SHIPPED = ROOT / "checkpoints" / "minilm-bbc-smp-s-keep0.10"
GROUPS = ("shipped", "magnitude")
PEER_PACKAGES = ("openvino", "nncf", "optimum", "optimum-onnx")
PEER_FAMILIES = ("ort-int8", "optimum", "openvino")


@dataclass
class Group:
    """One interleaved run's models: the dense reference export and the project's exports."""

    name: str
    description: str
    reference: Path
    exports: list[tuple[RowInfo, Path]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Collected:
    """Everything the run measured, for the report."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    other_cores: dict[str, float | None] = field(default_factory=dict)   # others' busy cores while timing


# ---------------------------------------------------------------------------- the project's exports

def _bench_config(args: argparse.Namespace, **options: Any) -> BenchConfig:
    """smp-bench's config for the builds: ``auto`` tuned at the largest batch x seq-len and --threads."""
    return BenchConfig.from_flat(batch=max(args.batch), seq_len=args.seq_len, threads=args.threads,
                                 cache_dir=args.cache_dir, torch_eager=False, **options)


def _builds(config: BenchConfig, notes: list[str]) -> list[tuple[str, str]]:
    """Every (variant, precision) of the variant table that runs on the CPU, as smp-bench builds them."""
    from smp_bench.plan import export_builds

    return export_builds(config, notes)


def _current(out: Path, options: Any, source: Path) -> bool:
    """``out`` is a validated export of ``source`` made by this exporter code with ``options``."""
    from smp_export.export import export_options_record
    from smp_export.versions import SOURCE_DIGEST_KEY, source_digest

    try:
        manifest = Manifest.read(out)
        same_source = Path(manifest.source_path).resolve() == source.resolve()
    except (SmpError, OSError):
        return False
    return (same_source and (out / MODEL_FILE).is_file() and manifest.validation.passed
            and manifest.weights == options.weights and manifest.precision == options.precision
            and manifest.versions.get(SOURCE_DIGEST_KEY) == source_digest()
            and manifest.export_options == export_options_record(options))


def project_info(name: str, export_dir: Path, model: str, sparsity: float) -> RowInfo:
    """A project export as a row: what its manifest says it is; a dense peer unless it needs ai.smp."""
    manifest = Manifest.read(export_dir)
    kernels = SPARSE_DOMAIN in manifest.custom_op_domains
    method = f"smp-export --weights {manifest.weights} --precision {manifest.precision}"
    return RowInfo(name, "onnxruntime", model, manifest.precision, method + (" (ai.smp kernels)" if kernels else ""),
                   not kernels, export_bytes(export_dir), str(export_dir), sparsity)


def _reference_of(export_dirs: Sequence[Path], config: BenchConfig) -> Path:
    """smp-bench's ort-dense for these exports: the unpruned model of their source (cached)."""
    from smp_bench.plan import plan_variants

    specs, _, _ = plan_variants(BenchConfig.from_flat(**{**_flat(config), "export_dirs": tuple(export_dirs)}),
                                lambda message: logger.info("%s", message))
    return next(s.export_dir for s in specs if s.is_reference)


def _flat(config: BenchConfig) -> dict[str, Any]:
    return {k: v for group in config.to_dict().values() for k, v in group.items()}


def shipped_group(args: argparse.Namespace) -> Group:
    """The shipped SMP-S checkpoint in every variant x precision, exported into ``--work-dir``."""
    from smp_bench.plan import export_options, family_of
    from smp_export.export import export_onnx
    from smp_export.readers import read_checkpoint

    config = _bench_config(args, precisions=tuple(_precisions()))
    group = Group("shipped", "", SHIPPED)
    ckpt = None
    built: list[tuple[str, Path]] = []
    for weights, precision in _builds(config, group.notes):
        family = family_of(weights, precision)
        out = args.work_dir / "shipped" / family
        options = export_options(config, weights, precision)
        try:
            if args.rebuild or not _current(out, options, SHIPPED):
                ckpt = ckpt or read_checkpoint(SHIPPED)
                logger.info("exporting %s --weights %s --precision %s -> %s", SHIPPED, weights, precision, out)
                export_onnx(ckpt, out, options=options)
        except SmpError as exc:
            group.skipped.append(Skipped(group.name, f"{family}@shipped", f"smp-export failed: {exc}"))
            continue
        built.append((family, out))
    if not built:
        raise SystemExit(f"error: no export of {SHIPPED} could be built: "
                         + "; ".join(f"{s.name}: {s.reason}" for s in group.skipped))
    group.reference = _reference_of([out for _, out in built], config)
    density = float(Manifest.read(built[0][1]).totals.get("density", 1.0)) if built else 1.0
    for family, out in built:
        group.exports.append((project_info(f"{family}@{1 - density:.2f}", out, f"SMP-S {density:.2f} kept",
                                           1 - density), out))
    group.description = (f"The shipped SMP-S checkpoint ({SHIPPED.relative_to(ROOT)}, {density:.0%} of the encoder's "
                         "linear weights kept, prototype head: logits) in every variant x precision; ort-dense and "
                         f"the peers run the unpruned MiniLM with the same head ({group.reference}). task acc: the "
                         "head's accuracy; cosine: of the logit rows.")
    return group


def magnitude_group(args: argparse.Namespace) -> Group:
    """The packaged MiniLM magnitude-pruned to each ``--sparsity``, every variant x precision, via
    smp-bench's own export cache (one plan per build, so one failing build skips only itself)."""
    from smp_bench.plan import plan_variants

    group = Group("magnitude", "", Path())
    for level in args.sparsity:
        config = _bench_config(args, sweep=(level,), precisions=tuple(_precisions()))
        for weights, precision in _builds(config, group.notes):
            one = _bench_config(args, sweep=(level,), variants=(weights,), precisions=(precision,))
            try:
                specs, _, _ = plan_variants(one, lambda message: logger.info("%s", message))
            except SmpError as exc:
                name = f"{weights}-{precision}@{level:.2f}"
                group.skipped.append(Skipped(group.name, name, f"smp-export failed: {exc}"))
                continue
            group.reference = next(s.export_dir for s in specs if s.is_reference)
            for spec in specs:
                if not spec.is_reference:
                    group.exports.append((project_info(spec.name, spec.export_dir, f"magnitude {level:.2f}",
                                                       spec.sparsity), spec.export_dir))
    if not group.exports:
        raise SystemExit("error: no magnitude-pruned export could be built: "
                         + "; ".join(f"{s.name}: {s.reason}" for s in group.skipped))
    levels = ", ".join(f"{s:.2f}" for s in args.sparsity)
    group.description = (f"The packaged MiniLM magnitude-pruned per matrix to {levels} sparsity (smp-bench's "
                         "export cache), every variant x precision; ort-dense and the peers run the unpruned "
                         f"encoder ({group.reference}). task acc: nearest centroid with ort-dense's centroids; "
                         "cosine: of the mean-pooled embeddings.")
    return group


def _precisions() -> tuple[str, ...]:
    from smp_export.options import PRECISIONS

    return tuple(PRECISIONS)


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


def padded_to_chunks(feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``feeds`` with rows repeated at the end up to a multiple of ``batch`` (for static engines)."""
    n = len(next(iter(feeds.values())))
    extra = (-n) % batch
    return {k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) if extra else v for k, v in feeds.items()}


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
        _deepsparse(group, args, models, timing_feeds, context, main_speeds, calibration, out)


def _input_names(onnx_path: Path) -> list[str]:
    """The model's graph inputs in order (DeepSparse's engine takes a list in this order)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [v.name for v in graph.input if v.name not in initializers]


def _deepsparse(group: Group, args: argparse.Namespace, models: Sequence[tuple[RowInfo, Path]],
                timing_feeds: Mapping[int, Mapping[str, np.ndarray]], context: Mapping[str, Any],
                main_speeds: Mapping[int, Mapping[str, dict[str, Any]]],
                calibration: Sequence[Mapping[str, np.ndarray]], out: Collected) -> None:
    """DeepSparse on the unpruned model and on each pruned model stored dense: fp32, the project's
    int8 (dynamic quantization) and NNCF's static int8 QDQ of the fp32 one (DeepSparse's int8 form)."""
    from dataclasses import replace

    chosen = []
    for info, path in models:
        stored_dense = info.runtime == "onnxruntime" and (path / MANIFEST_NAME).is_file() \
            and Manifest.read(path).weights == "dense"
        if info.name != REFERENCE and not stored_dense:
            continue
        name = "deepsparse unpruned" if info.name == REFERENCE else f"deepsparse {info.name}"
        chosen.append((replace(info, name=name, runtime="deepsparse", foreign=True, dense_peer=info.name == REFERENCE,
                               method=f"DeepSparse on {info.name}'s model.onnx (sequence axis fixed)"),
                       path / MODEL_FILE))
        if info.name == REFERENCE or info.precision != "fp32":
            continue
        qdq_name = f"deepsparse {info.name.replace('@', '-int8-qdq@', 1)}"
        if not calibration:
            out.skipped.append(Skipped(group.name, qdq_name, "no calibration texts (--calib-samples 0)"))
            continue
        try:
            qdq = nncf_qdq_onnx(path / MODEL_FILE, args.work_dir / group.name / "qdq" / info.name, calibration)
        except ImportError as exc:
            out.skipped.append(Skipped(group.name, qdq_name, missing("nncf", exc)))
            continue
        chosen.append((replace(info, name=qdq_name, runtime="deepsparse", foreign=True, dense_peer=False,
                               precision="int8 (static QDQ)", file_bytes=file_bytes(qdq), path=str(qdq),
                               method=f"DeepSparse on nncf.quantize (ONNX backend, QDQ, {len(calibration)} BBC train "
                                      f"texts) of {info.name}'s model.onnx"), qdq))
    names = _input_names(models[0][1] / MODEL_FILE)
    feeds = padded_to_chunks(context["feeds"], args.eval_batch)
    result = deepsparse_rows(python=args.deepsparse_venv / "bin" / "python", reference_onnx=models[0][1] / MODEL_FILE,
                             models=chosen, input_names=names, timing_feeds=timing_feeds, eval_feeds=feeds,
                             eval_batch=args.eval_batch, rounds={b: _rounds(args, b) for b in args.batch},
                             warmup=args.warmup, threads=args.threads, seq_len=args.seq_len,
                             work=args.work_dir / group.name / "deepsparse")
    out.skipped += [Skipped(group.name, name, reason) for name, reason in result.skipped]
    if result.version:
        out.versions["deepsparse (own venv)"] = result.version
    if not result.infos:
        return
    n = len(context["feeds"]["input_ids"])
    vectors = {REFERENCE: context["vectors"][REFERENCE]}
    for info in result.infos:
        if info.name in result.outputs:
            vectors[info.name] = eval_vectors(context["kind"], result.outputs[info.name][:n],
                                              context["feeds"]["attention_mask"])
    evals = score_rows(context["kind"], vectors, labels=context["labels"], centroid_model=context["centroid_model"],
                       label_map=context["label_map"])
    every = {**context["vectors"], **vectors}
    for name, fields in twin_fields(every, fp32_twins([*context["infos"], *result.infos])).items():
        if name in evals:
            evals[name].update(fields)
    own = RowInfo(OWN_REFERENCE, "onnxruntime", "unpruned", "fp32",
                  "ort-dense's model.onnx (sequence axis fixed) on onnxruntime in the DeepSparse venv", True,
                  models[0][0].file_bytes, models[0][0].path, foreign=True)
    for batch, times in result.times.items():
        foreign = speed_fields(times, batch, reference=OWN_REFERENCE)
        foreign = chained_fields(foreign, main_speeds[batch])
        infos = [own] + [i for i in result.infos if i.name in times]
        out.rows += build_rows(group.name, batch, infos, foreign, evals)
        out.timings[f"{group.name}/batch{batch}/deepsparse"] = {k: [t * 1e3 for t in v] for k, v in times.items()}


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
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "peers")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "build" / "bench-cache")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-record", dest="record", action="store_false", help="do not add a line to INDEX.md")
    args = parser.parse_args(argv)
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
