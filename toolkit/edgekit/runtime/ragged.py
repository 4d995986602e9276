"""Requests of different lengths in one batch: which may share it and how they are joined.

A bundle whose sequence axis varies (``manifest.axes``) runs each sentence at its own length. A
batch of sentences needs one width: the rows are padded to the longest of the batch, and only the
inputs the text processing pads (token ids, attention mask, type ids) are padded, because the mask
tells the model to ignore what was added. So that padding stays small, requests share a batch only
within one length bucket (Triton's dynamic batcher pads to the longest too, but batches any
lengths together: a 9-token sentence batched with a 120-token one pays for 120). An input that
varies without a mask (a text line's width) is never padded: only equal shapes share a batch.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Callable, Optional

import numpy as np

from ..backends.base import pad_sequence

# Bucket edges where the bundle names none: a batch pads at most to about 1.5x its shortest row.
DEFAULT_BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class Joiner:
    def __init__(self, manifest):
        text = manifest.processing.text if manifest.processing is not None else None
        padded_names = {n for n in ((text.ids, text.mask, text.type_ids) if text else ()) if n}
        self.padded: set[str] = set()
        self.buckets: tuple[int, ...] = ()
        for spec in manifest.inputs:
            if spec.name not in padded_names or spec.batch_axis != 0 or len(spec.shape) < 2:
                continue
            axis = manifest.axes.get(spec.shape[1]) if isinstance(spec.shape[1], str) else None
            if axis is not None:
                self.padded.add(spec.name)
                self.buckets = tuple(axis.buckets) or DEFAULT_BUCKETS
        self.varies = any(isinstance(d, str) for s in manifest.inputs for d in s.shape[1:])

    def bucket(self, width: int) -> int:
        """The smallest bucket edge that holds ``width`` (the width itself beyond the last)."""
        at = bisect.bisect_left(self.buckets, width)
        return self.buckets[at] if at < len(self.buckets) else width

    def key(self, feeds: dict[str, np.ndarray]) -> Optional[tuple]:
        """Requests with the same key may share a batch (None: any may, the shapes never vary)."""
        if not self.varies:
            return None
        return tuple((name, self.bucket(v.shape[1]) if name in self.padded else v.shape[1:])
                     for name, v in feeds.items())

    def join(self, batch: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One feed dict of every request's rows, in order; padded inputs to the longest row."""
        if len(batch) == 1:
            return batch[0]
        joined = {}
        for name in batch[0]:
            parts = [feeds[name] for feeds in batch]
            if name in self.padded:
                width = max(p.shape[1] for p in parts)
                parts = [pad_sequence(p, width) for p in parts]
            joined[name] = np.concatenate(parts)
        return joined


def take(queue: deque, limit: int, key: Callable, rows: Callable, stale: Callable = lambda item: False):
    """The oldest item of ``queue`` and those queued after it with the same ``key`` (one length
    bucket), up to ``limit`` rows, looking at most 4 x ``limit`` items deep; the others keep their
    places, and ``stale`` items (given up while they waited) are dropped. Both batchers (the
    runtime's and the server's) take their batches with it. Returns (batch, rows taken, rows
    dropped)."""
    batch, taken, dropped, passed, first = [], 0, 0, [], None
    for _ in range(min(len(queue), 4 * limit)):
        item = queue.popleft()
        if stale(item):
            dropped += rows(item)
            continue
        mine = key(item)
        if batch and mine != first:
            passed.append(item)
            continue
        if batch and taken + rows(item) > limit:
            passed.append(item)
            break
        first = mine
        batch.append(item)
        taken += rows(item)
        if taken >= limit:
            break
    queue.extendleft(reversed(passed))
    return batch, taken, dropped
