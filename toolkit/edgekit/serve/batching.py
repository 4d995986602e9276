"""Dynamic batching for the server: concurrent requests grouped into one forward pass.

Like Triton's dynamic batcher: a batch goes out when it holds ``max_batch`` rows or its first
request has waited ``max_delay_ms``; at most ``workers`` batches run at once (in threads: the
runtimes release the GIL), and while they run the next batch fills. The queue is bounded in rows:
beyond ``max_queue`` a request is refused at once (``Overloaded``, a 503 with Retry-After) instead
of joining a backlog whose latency nobody wants. A batch that fails is retried request by
request, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..errors import EdgekitError
from ..runtime.ragged import take


# A forward pass up to this long may run on the event loop for a lone request (see can_inline).
# Not longer: requests that arrive while the loop runs a model wait unread, where the latency
# budget cannot shed them (MiniLM inline, 20 ms: accepted p99 at 2x capacity went from 2x to
# 4.4x unloaded), and a sub-millisecond pass is where the 0.17 ms hop matters.
INLINE_MAX_MS = 0.5


class Overloaded(EdgekitError):
    """The queue is full: shed the request (503) and say when to come back."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message, "retry later; the server is at capacity")
        self.retry_after_s = retry_after_s


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future


class AsyncBatcher:
    def __init__(self, run: Callable[[dict], dict], executor: Executor, max_batch: int = 16,
                 max_delay_ms: float = 2.0, max_queue: int = 256, workers: int = 1,
                 on_batch: Optional[Callable[[int, int], None]] = None, joiner=None):
        self.run, self.executor = run, executor
        # Which requests may share a batch and how their rows join (runtime.ragged.Joiner): by
        # length bucket, padded to the longest, where sentences run at their own length
        self.key = joiner.key if joiner is not None else (lambda feeds: None)
        self.join = joiner.join if joiner is not None else join
        self.max_batch, self.max_delay, self.max_queue = max_batch, max_delay_ms / 1000, max_queue
        self.on_batch = on_batch or (lambda rows, requests: None)
        self._queue: deque[_Pending] = deque()
        self._rows = 0
        self._workers = workers
        self._slots: Optional[asyncio.Semaphore] = None
        self._more: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._running: set[asyncio.Task] = set()
        self.batches = self.requests = 0
        self.row_ms = 0.0  # moving average of forward-pass time per row: what a queued row will cost
        self.fastest_ms: Optional[float] = None  # the quickest forward pass yet: the unloaded time
        self._in_flight_rows = 0

    @property
    def queued_rows(self) -> int:
        return self._rows

    def expected_wait_ms(self) -> float:
        """How long a request arriving now would wait before its own forward pass starts."""
        return (self._rows + self._in_flight_rows) * self.row_ms / self._workers

    async def submit(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(feeds.values())))
        if self._task is None:
            self._start()
        if self._rows + rows > self.max_queue:
            # Each queued batch takes about one forward pass; say so rather than a fixed guess.
            raise Overloaded(f"{self._rows} rows already queued (limit {self.max_queue})",
                             retry_after_s=max(1.0, self.max_delay * 2))
        pending = _Pending(feeds, rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._rows += rows
        # A request given up while queued (client gone, timeout) leaves the queue at once: its
        # rows must not count against the limit, or an idle server would shed forever.
        pending.future.add_done_callback(lambda f, p=pending: self._forget(p) if f.cancelled() else None)
        self._more.set()
        return await pending.future

    def can_inline(self) -> bool:
        """True when a request may run on the event loop itself: nothing queued or running, and a
        forward pass measured under INLINE_MAX_MS."""
        return (not self._queue and not self._running and self.fastest_ms is not None
                and self.fastest_ms <= INLINE_MAX_MS and (self._slots is None or not self._slots.locked()))

    def run_inline(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A lone request to a quick model, without the hop to a worker thread and back (0.17 ms
        of a 0.57 ms request on the digits CNN, whose forward pass is 0.07 ms)."""
        rows = len(next(iter(feeds.values())))
        self.batches += 1
        self.requests += 1
        self.on_batch(rows, 1)
        outputs, took_ms = self._timed(feeds)
        self._observe(took_ms, rows)
        return outputs

    def _timed(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """The forward pass and its own time in ms, in the worker thread: the hops to the thread
        and back are not the model's (they would keep a quick model off the loop)."""
        started = time.perf_counter()
        outputs = self.run(feeds)
        return outputs, (time.perf_counter() - started) * 1000

    def _observe(self, took_ms: float, rows: int) -> None:
        per_row = took_ms / rows
        self.row_ms = per_row if not self.row_ms else 0.8 * self.row_ms + 0.2 * per_row
        self.fastest_ms = took_ms if self.fastest_ms is None else min(self.fastest_ms, took_ms)

    def _forget(self, pending: _Pending) -> None:
        try:
            self._queue.remove(pending)
        except ValueError:
            return  # already taken into a batch
        self._rows -= pending.rows

    def _start(self) -> None:
        self._slots = asyncio.Semaphore(self._workers)
        self._more = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._more.wait()
            self._more.clear()
            if not self._queue:
                continue
            await self._slots.acquire()  # while every worker is busy, the queue keeps filling
            # Wait for more only while another batch is running: an idle server answers a lone
            # request at once (no max_delay tax on a single client); a busy one fills batches.
            deadline = loop.time() + (self.max_delay if self._running else 0.0)
            while self._rows < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._more.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                self._more.clear()
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            if self._queue:
                self._more.set()

    def _take(self) -> list[_Pending]:
        """The oldest request and those queued after it in its length bucket, up to max_batch
        rows; requests given up while they waited (timed out, cancelled) are dropped."""
        batch, taken, dropped = take(self._queue, self.max_batch, lambda p: self.key(p.feeds), lambda p: p.rows,
                                     lambda p: p.future.done())
        self._rows -= taken + dropped
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        rows = sum(p.rows for p in batch)
        self._in_flight_rows += rows
        try:
            self.batches += 1
            self.requests += len(batch)
            self.on_batch(rows, len(batch))
            joined = self.join([p.feeds for p in batch])
            try:
                outputs, took_ms = await loop.run_in_executor(self.executor, self._timed, joined)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0], exception=exc)
                    return
                for pending in batch:  # one at a time: a bad request fails alone
                    try:
                        _settle(pending, await loop.run_in_executor(self.executor, self.run, pending.feeds))
                    except Exception as single:
                        _settle(pending, exception=single)
                return
            self._observe(took_ms, rows)
            start = 0
            for pending in batch:
                _settle(pending, {k: v[start:start + pending.rows] if isinstance(v, np.ndarray) else v
                                  for k, v in outputs.items()})
                start += pending.rows
        finally:
            self._in_flight_rows -= rows
            self._slots.release()

    async def drain(self) -> None:
        """Wait until everything queued has been answered (graceful shutdown)."""
        while self._queue or self._running:
            await asyncio.sleep(0.01)


def join(batch: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Requests of one shape as one batch: their rows, in order."""
    if len(batch) == 1:
        return batch[0]
    return {n: np.concatenate([feeds[n] for feeds in batch]) for n in batch[0]}


def _settle(pending: _Pending, result=None, exception: Optional[BaseException] = None) -> None:
    if pending.future.done():
        return
    if exception is not None:
        pending.future.set_exception(exception)
    else:
        pending.future.set_result(result)
