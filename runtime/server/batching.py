"""Dynamic batching: concurrent requests merged into one onnxruntime run, off the event loop.

A request's feeds (``[rows, seq]`` int64 arrays) wait in a bounded queue. The worker takes
the oldest request, waits at most ``max_delay_s`` from its arrival for more rows, merges up
to ``max_batch`` rows (padding every request to the longest sequence: pad id for input_ids,
0 elsewhere), runs the model in a single inference thread and slices each request's rows
back out (and its own sequence length, for outputs shaped ``[batch, seq, ...]``).

::

    req A [2, 7] ─┐                      ┌─> A: rows 0-1, seq :7
    req B [1, 9] ─┼─ pad to [4, 9] ─ run ┼─> B: row 2,    seq :9
    req C [1, 5] ─┘                      └─> C: row 3,    seq :5
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import QueueFullError, RequestError
from .metrics import Metrics

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Mapping[str, np.ndarray]]


class InferenceFailed(RuntimeError):
    """onnxruntime failed on a merged batch; every request in it gets this error."""


@dataclass
class _Item:
    feeds: Feeds
    rows: int
    seq: int
    future: asyncio.Future
    arrived: float


class DynamicBatcher:
    """Merge concurrent requests into batched runs of ``run_fn`` on one inference thread."""

    def __init__(self, run_fn: RunFn, *, max_batch: int, max_delay_s: float, max_queue: int,
                 pad_values: Mapping[str, int], metrics: Metrics, retry_after_s: int = 1):
        self._run_fn = run_fn
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._pad = dict(pad_values)
        self._metrics = metrics
        self._retry_after_s = retry_after_s
        self._pending: deque[_Item] = deque()
        self._inflight = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._flushing = False

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet answered (waiting or running)."""
        return self._inflight

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smp-serve-infer")
        self._worker = asyncio.create_task(self._work(), name="smp-serve-batcher")

    def flush(self) -> None:
        """Shutdown has begun: stop waiting for company, run what comes as soon as it comes."""
        self._flushing = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def stop(self) -> None:
        """Refuse new requests, run everything already queued, then stop the worker."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, feeds: Feeds) -> Feeds:
        """Queue ``feeds`` (same-shape ``[rows, seq]`` arrays) and wait for this request's outputs."""
        if self._stopping or self._worker is None:
            raise RequestError("the server is shutting down", status=503)
        if self._inflight >= self.max_queue:
            self._metrics.rejected.inc()
            raise QueueFullError(f"queue full ({self.max_queue} requests waiting or running); "
                                 "retry later", retry_after_s=self._retry_after_s)
        rows, seq = next(iter(feeds.values())).shape
        future = asyncio.get_running_loop().create_future()
        self._inflight += 1
        self._metrics.inflight.set(self._inflight)
        self._pending.append(_Item(feeds, rows, seq, future, time.monotonic()))
        self._metrics.queue_depth.set(len(self._pending))
        self._wakeup.set()
        try:
            return await future
        finally:
            self._inflight -= 1
            self._metrics.inflight.set(self._inflight)

    async def _work(self) -> None:
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_company()
            batch = self._take_batch()
            self._metrics.queue_depth.set(len(self._pending))
            await self._run(batch)

    async def _wait_for_company(self) -> None:
        """Wait until max_batch rows are queued or the oldest request's delay ran out."""
        deadline = self._pending[0].arrived + self.max_delay_s
        while not (self._stopping or self._flushing) and self._pending_rows() < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _pending_rows(self) -> int:
        return sum(item.rows for item in self._pending)

    def _take_batch(self) -> list[_Item]:
        batch = [self._pending.popleft()]       # a request larger than max_batch runs alone
        rows = batch[0].rows
        while self._pending and rows + self._pending[0].rows <= self.max_batch:
            item = self._pending.popleft()
            batch.append(item)
            rows += item.rows
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]   # drop cancelled requests
        if not live:
            return
        rows = sum(item.rows for item in live)
        self._metrics.batch_rows.observe(rows)
        self._metrics.batch_requests.observe(len(live))
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_merged, live)
        except Exception as exc:  # onnxruntime raises plain Exceptions; each request gets a 500
            log.error("inference failed on a batch of %d rows: %s", rows, exc,
                      extra={"rows": rows, "requests": len(live)})
            for item in live:
                if not item.future.done():
                    item.future.set_exception(InferenceFailed(f"inference failed: {exc}"))
            return
        finally:
            self._metrics.inference.observe(time.perf_counter() - start)
        for item, result in zip(live, outputs):
            if not item.future.done():
                item.future.set_result(result)

    def _run_merged(self, batch: list[_Item]) -> list[Feeds]:
        """Pad, merge, run, split (on the inference thread)."""
        if len(batch) == 1:
            return [dict(self._run_fn(batch[0].feeds))]
        merged, seq = merge_feeds([item.feeds for item in batch], self._pad)
        outputs = self._run_fn(merged)
        return split_outputs(outputs, [(item.rows, item.seq) for item in batch], seq)


def merge_feeds(requests: list[Feeds], pad_values: Mapping[str, int]) -> tuple[Feeds, int]:
    """Stack ``[rows_i, seq_i]`` feeds into ``[sum rows, max seq]``, right-padded."""
    seq = max(next(iter(f.values())).shape[1] for f in requests)
    rows = sum(next(iter(f.values())).shape[0] for f in requests)
    merged = {}
    for name in requests[0]:
        out = np.full((rows, seq), pad_values.get(name, 0), dtype=np.int64)
        offset = 0
        for feeds in requests:
            arr = feeds[name]
            out[offset:offset + arr.shape[0], :arr.shape[1]] = arr
            offset += arr.shape[0]
        merged[name] = out
    return merged, seq


def split_outputs(outputs: Mapping[str, np.ndarray], shapes: list[tuple[int, int]],
                  seq: int) -> list[Feeds]:
    """Each request's rows of every output; ``[batch, seq, ...]`` outputs lose the padding too."""
    total = sum(rows for rows, _ in shapes)
    results: list[Feeds] = [{} for _ in shapes]
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise InferenceFailed(f"output {name!r} has shape {list(arr.shape)}: no batch axis of "
                                  f"{total} rows to split")
        offset = 0
        for result, (rows, own_seq) in zip(results, shapes):
            part = arr[offset:offset + rows]
            if arr.ndim >= 3 and arr.shape[1] == seq:
                part = part[:, :own_seq]
            result[name] = part
            offset += rows
    return results
