"""DeepSparse's rows of one group of the peers suite (``benchmarks/peers.py``), in the suite's
process: which models DeepSparse runs (ort-dense's model and each pruned model stored dense: fp32,
the project's int8, NNCF's static int8 QDQ of the fp32 one), the worker's run in DeepSparse's own
venv (``peer_deepsparse.deepsparse_rows``), and its rows scored against the suite's ``ort-dense``
outputs, ``vs fastest dense`` chained through the worker's own onnxruntime reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from peer_deepsparse import OWN_REFERENCE, DeepSparseResult, deepsparse_rows
from peer_groups import Collected, Group
from peer_rows import file_bytes, missing, nncf_qdq_onnx

from runtime.contract import MODEL_FILE
from runtime.manifest import MANIFEST_NAME, Manifest
from smp_bench.peers import (REFERENCE, RowInfo, Skipped, build_rows, chained_fields, eval_vectors, fp32_twins,
                             score_rows, speed_fields, twin_fields)


def padded_to_chunks(feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``feeds`` with rows repeated at the end up to a multiple of ``batch`` (for static engines)."""
    n = len(next(iter(feeds.values())))
    extra = (-n) % batch
    return {k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) if extra else v for k, v in feeds.items()}


def _input_names(onnx_path: Path) -> list[str]:
    """The model's graph inputs in order (DeepSparse's engine takes a list in this order)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [v.name for v in graph.input if v.name not in initializers]


def _deepsparse_models(group: Group, args: argparse.Namespace, models: Sequence[tuple[RowInfo, Path]],
                       calibration: Sequence[Mapping[str, np.ndarray]], out: Collected) -> list[tuple[RowInfo, Path]]:
    """The (row, ONNX file) pairs DeepSparse runs: ort-dense's model and each pruned model stored
    dense, and for each fp32 one NNCF's static int8 QDQ of it (or a ``Skipped`` row in ``out``)."""
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
    return chosen


def _deepsparse_evals(context: Mapping[str, Any], result: DeepSparseResult) -> dict[str, dict[str, Any]]:
    """DeepSparse's outputs scored against ort-dense's, and each row against its fp32 twin."""
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
    return evals


def deepsparse_group(group: Group, args: argparse.Namespace, models: Sequence[tuple[RowInfo, Path]],
                     timing_feeds: Mapping[int, Mapping[str, np.ndarray]], context: Mapping[str, Any],
                     main_speeds: Mapping[int, Mapping[str, dict[str, Any]]],
                     calibration: Sequence[Mapping[str, np.ndarray]], out: Collected, *,
                     rounds: Mapping[int, int]) -> None:
    """DeepSparse on the unpruned model and on each pruned model stored dense: fp32, the project's
    int8 (dynamic quantization) and NNCF's static int8 QDQ of the fp32 one (DeepSparse's int8 form)."""
    chosen = _deepsparse_models(group, args, models, calibration, out)
    names = _input_names(models[0][1] / MODEL_FILE)
    feeds = padded_to_chunks(context["feeds"], args.eval_batch)
    result = deepsparse_rows(python=args.deepsparse_venv / "bin" / "python", reference_onnx=models[0][1] / MODEL_FILE,
                             models=chosen, input_names=names, timing_feeds=timing_feeds, eval_feeds=feeds,
                             eval_batch=args.eval_batch, rounds=rounds, warmup=args.warmup, threads=args.threads,
                             seq_len=args.seq_len, work=args.work_dir / group.name / "deepsparse")
    out.skipped += [Skipped(group.name, name, reason) for name, reason in result.skipped]
    if result.version:
        out.versions["deepsparse (own venv)"] = result.version
    if not result.infos:
        return
    evals = _deepsparse_evals(context, result)
    own = RowInfo(OWN_REFERENCE, "onnxruntime", "unpruned", "fp32",
                  "ort-dense's model.onnx (sequence axis fixed) on onnxruntime in the DeepSparse venv", True,
                  models[0][0].file_bytes, models[0][0].path, foreign=True)
    for batch, times in result.times.items():
        foreign = speed_fields(times, batch, reference=OWN_REFERENCE)
        foreign = chained_fields(foreign, main_speeds[batch])
        infos = [own] + [i for i in result.infos if i.name in times]
        out.rows += build_rows(group.name, batch, infos, foreign, evals)
        out.timings[f"{group.name}/batch{batch}/deepsparse"] = {k: [t * 1e3 for t in v] for k, v in times.items()}
