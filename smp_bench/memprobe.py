"""Peak memory of one variant, measured alone in a fresh process.

``ru_maxrss`` is a per-process high-water mark: in the benchmark process, which holds every
variant at once, it cannot say which variant needed what. So each variant is loaded and run
once in its own interpreter, which prints one JSON line::

    python -m smp_bench.memprobe EXPORT_DIR --batch 32 --seq-len 128 [--device cpu]

``import_rss_mb`` is the resident size after the imports (the interpreter and libraries),
``peak_rss_mb`` the high-water mark after loading the model and running one batch; their
difference is what the model itself costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from runtime.contract import CONFIG_FILE, random_inputs

from . import stats


def probe_in_subprocess(argv: Sequence[str], *, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``python <argv>`` and return the JSON object its last stdout line holds."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"memory probe failed (exit {proc.returncode}): {' | '.join(tail)}")
    return json.loads(lines[-1])


def _feeds(directory: Path, batch: int, seq_len: int) -> dict[str, Any]:
    config = directory / CONFIG_FILE
    vocab = int(json.loads(config.read_text()).get("vocab_size", 100)) if config.is_file() else 100
    return random_inputs(batch, seq_len, vocab_size=max(vocab, 2))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--custom-op-library", action="append", default=[])
    args = parser.parse_args(argv)

    from runtime.session import ModelSession, SessionConfig

    import_rss = stats.current_rss_mb()
    start = time.perf_counter()
    session = ModelSession.load(args.export_dir, SessionConfig(
        device=args.device, intra_op_threads=args.threads,
        custom_op_libraries=tuple(args.custom_op_library)))
    loaded_rss = stats.current_rss_mb()
    session.run(_feeds(args.export_dir, args.batch, args.seq_len))
    print(json.dumps({"import_rss_mb": import_rss, "loaded_rss_mb": loaded_rss,
                      "peak_rss_mb": stats.peak_rss_mb(), "load_s": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
