"""Bounded loopback load test of smp-serve: throughput and p50/p99 latency per export and concurrency.

For each ``--export LABEL=DIR`` it starts ``smp-serve`` in a subprocess on 127.0.0.1 (a port
the OS picks), warms it up, then runs closed-loop clients (each sends one request, waits for
the answer, sends the next) at every ``--concurrency`` level for ``--duration`` seconds or
``--max-requests`` requests, whichever comes first, and stops the server with SIGTERM.
Requests are one text each to /v1/embed (encoders) or /v1/classify (classifiers), so the
server's dynamic batching does the merging. Results: JSON + Markdown in ``--out``.

    python benchmarks/serve_load.py --export dense=build/demo/minilm-dense \\
        --export compact=build/demo/minilm-compact --concurrency 1,8,32 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smp_bench.stats import environment  # noqa: E402

log = logging.getLogger("serve_load")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A pruned transformer can be both smaller and faster when its zeros are really removed.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "The film was long, but the last half hour made up for it.",
    "How do I reset my password?",
    "Researchers found that static model pruning keeps accuracy with three percent of the weights.",
    "The football club announced the signing of a new striker for a record fee.",
    "It rained all day.",
    "Please send the quarterly report to the finance team before Friday noon.",
    "Dynamic batching merges concurrent requests into a single inference run on the server.",
    "The new phone's battery lasts two days, but the camera is disappointing in low light.",
    "Where is the nearest train station?",
]


def _server_cmd(export: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "cli.serve", str(export), "--port", "0", "--log-format", "json",
            "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
            "--max-queue", str(args.max_queue)] + (["--threads", str(args.threads)] if args.threads else [])


def _wait_for_port(proc: subprocess.Popen, log_path: Path, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and '"port"' in line:
                return int(json.loads(line)["port"])
        if proc.poll() is not None:
            raise RuntimeError(f"smp-serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError("smp-serve did not report its port in time")


async def _closed_loop(url: str, path: str, concurrency: int, duration_s: float,
                       max_requests: int) -> dict[str, Any]:
    """``concurrency`` workers, each one request at a time, until time or the request budget ends."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    budget = [max_requests]
    stop_at = time.perf_counter() + duration_s
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(session: aiohttp.ClientSession, index: int) -> None:
        i = index
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            body = {"texts": [SENTENCES[i % len(SENTENCES)]]}
            i += concurrency
            start = time.perf_counter()
            try:
                async with session.post(url + path, json=body) as response:
                    await response.read()
                    key = str(response.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - start)
            statuses[key] = statuses.get(key, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session, k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    ok = statuses.get("200", 0)
    ms = np.array(latencies) * 1e3
    return {"concurrency": concurrency, "requests": len(latencies), "ok": ok,
            "failed": len(latencies) - ok, "statuses": statuses, "seconds": round(elapsed, 3),
            "throughput_rps": round(ok / elapsed, 2),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)},
            "max_ms": round(float(ms.max()), 2)}


SERVER_SUMS = ("smp_serve_batch_size_sum", "smp_serve_batch_size_count", "smp_serve_inference_seconds_sum")


def _server_sums(metrics_text: str) -> dict[str, float]:
    values = dict.fromkeys(SERVER_SUMS, 0.0)
    for line in metrics_text.splitlines():
        key, _, value = line.rpartition(" ")
        if key in values:
            values[key] = float(value)
    return values


async def _measure(url: str, path: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    await _closed_loop(url, path, 8, args.warmup, args.max_requests)
    rows = []
    async with aiohttp.ClientSession() as session:
        for concurrency in args.concurrency:
            before = _server_sums(await (await session.get(url + "/metrics")).text())
            row = await _closed_loop(url, path, concurrency, args.duration, args.max_requests)
            after = _server_sums(await (await session.get(url + "/metrics")).text())
            delta = {k: after[k] - before[k] for k in SERVER_SUMS}
            runs = delta["smp_serve_batch_size_count"]
            row["batches"] = int(runs)
            runs = max(runs, 1.0)
            row["mean_batch_rows"] = round(delta["smp_serve_batch_size_sum"] / runs, 2)
            row["mean_run_ms"] = round(delta["smp_serve_inference_seconds_sum"] / runs * 1e3, 2)
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            log.info("c=%-3d %7.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failed %d  mean batch %s  run %s ms",
                     concurrency, row["throughput_rps"], row["p50_ms"], row["p99_ms"], row["failed"],
                     row["mean_batch_rows"], row["mean_run_ms"])
            rows.append(row)
    return rows


def _path_for(export: Path) -> str:
    config = json.loads((export / "config.json").read_text()) if (export / "config.json").is_file() else {}
    return "/v1/embed" if "BertModel" in (config.get("architectures") or []) else "/v1/classify"


def run_export(label: str, export: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Serve ``export``, load it, stop it; rows tagged with ``label``."""
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as err:
            proc = subprocess.Popen(_server_cmd(export, args), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=err)
        try:
            url = f"http://127.0.0.1:{_wait_for_port(proc, log_path)}"
            path = _path_for(export)
            log.info("%s: %s%s (pid %d)", label, url, path, proc.pid)
            rows = asyncio.run(_measure(url, path, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    size = (export / "model.onnx").stat().st_size
    return [{"variant": label, "export": str(export), "endpoint": path, "model_bytes": size, **row}
            for row in rows]


def _markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    s = result["settings"]
    lines = [f"# smp-serve loopback load test ({result['date']})", "",
             f"- machine: {env['cpu_model']}, {env['usable_cores']} usable cores "
             "(client and server share them)",
             f"- versions: python {env['python']}, onnxruntime {env['versions'].get('onnxruntime')}",
             f"- 1-minute load average before / after: {result['load_average_1m']['before']} / "
             f"{result['load_average_1m']['after']} (other work on the machine inflates latencies)",
             f"- command: `{result['command']}`",
             f"- server: max-batch {s['max_batch']}, max-delay-ms {s['max_delay_ms']}, max-queue "
             f"{s['max_queue']}, onnxruntime threads {s['threads'] or 'default'}; endpoint "
             f"{result['rows'][0]['endpoint'] if result['rows'] else '-'}; closed-loop clients, one text "
             f"per request, {s['duration']} s per level "
             f"(at most {s['max_requests']} requests) after {s['warmup']} s warm-up", "",
             "| variant | model.onnx MiB | concurrency | requests | failed | req/s | p50 ms | p99 ms "
             "| mean batch rows | mean onnxruntime run ms | load avg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['model_bytes'] / 2**20:.1f} | {r['concurrency']} | "
                     f"{r['requests']} | {r['failed']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['mean_batch_rows']} | {r['mean_run_ms']} | "
                     f"{r['load_average_1m']} |")
    return "\n".join(lines) + "\n"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per level (max 60)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=20000, help="per level")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="minilm")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.duration = min(args.duration, 60.0)
    if max(args.concurrency) >= args.max_queue:
        parser.error("keep every concurrency below --max-queue (failures are expected past it)")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = _args(argv)
    rows = []
    load_before = os.getloadavg()
    for spec in args.export:
        label, _, directory = spec.partition("=")
        rows += run_export(label, Path(directory), args)
    now = datetime.now(timezone.utc)
    settings = {k: getattr(args, k) for k in ("max_batch", "max_delay_ms", "max_queue", "duration",
                                              "warmup", "max_requests", "threads")}
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"date": now.isoformat(timespec="seconds"), "command": command, "settings": settings,
              "environment": environment(), "load_average_1m": {"before": round(load_before[0], 2),
                                                                 "after": round(os.getloadavg()[0], 2)},
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{now:%Y-%m-%d}-serve-load-{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(_markdown(result))
    log.info("wrote %s.json and .md", stem)
    failed = sum(r["failed"] for r in rows)
    if failed:
        log.error("%d requests failed below the queue limit", failed)
        sys.exit(1)


if __name__ == "__main__":
    main()
