"""Micro-batching: concurrent single requests grouped into one forward pass.

Callers block on their own slot; a background thread takes up to ``max_batch_size`` queued rows
(waiting at most ``max_delay_ms`` for the batch to fill), concatenates them along the batch
dimension, runs once, and hands each caller its own rows, in order. The hand-off uses a plain
lock per request and one condition variable: on a small model, per-request Python overhead is
what batching must beat, so the machinery itself has to be cheap.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from .ragged import take


class _Slot:
    __slots__ = ("inputs", "rows", "done", "result", "error")

    def __init__(self, inputs: dict, rows: int):
        self.inputs, self.rows = inputs, rows
        self.done = threading.Lock()
        self.done.acquire()  # released by the batcher when the result is in
        self.result = self.error = None


class MicroBatcher:
    def __init__(self, model, max_batch_size: int = 16, max_delay_ms: float = 5.0, workers: int = 1):
        self.model, self.max_batch_size, self.max_delay = model, max_batch_size, max_delay_ms / 1000
        self._pending: deque[_Slot] = deque()
        self._rows = 0
        self._cv = threading.Condition(threading.Lock())
        self._closed = False
        self.batches = self.requests = 0
        # More than one worker lets one batch run while the next one fills (with single-threaded
        # sessions, each worker keeps one core busy).
        self._threads = [threading.Thread(target=self._loop, name=f"edgekit-batcher-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError("this batcher is closed")
        checked = self.model.validate(inputs)
        slot = _Slot(checked, len(next(iter(checked.values()))))
        with self._cv:
            self._pending.append(slot)
            self._rows += slot.rows
            if len(self._pending) == 1 or self._rows >= self.max_batch_size:
                self._cv.notify()
        slot.done.acquire()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _take(self) -> list[_Slot]:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if self._closed and not self._pending:
                return []
            deadline = time.perf_counter() + self.max_delay
            while self._rows < self.max_batch_size and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            # the oldest request and those after it in its length bucket
            batch, taken, _ = take(self._pending, self.max_batch_size, lambda s: self.model.joiner.key(s.inputs),
                                   lambda s: s.rows)
            self._rows -= taken
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._run(batch)

    def _run(self, batch: list[_Slot]) -> None:
        self.batches += 1
        self.requests += len(batch)
        try:
            joined = self.model.joiner.join([s.inputs for s in batch])
            outputs = self.model.predict(joined, _validated=True)
            start = 0
            for slot in batch:
                slot.result = {k: v[start:start + slot.rows] for k, v in outputs.items()}
                start += slot.rows
        except BaseException as exc:  # every waiting caller gets the error; nobody hangs
            for slot in batch:
                slot.error = exc
        for slot in batch:
            slot.done.release()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
