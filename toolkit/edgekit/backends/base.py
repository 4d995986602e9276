"""The small interface every runtime backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..spec import TensorSpec


def pad_sequence(value: np.ndarray, width: int, axis: int = 1) -> np.ndarray:
    """``value`` zero-padded on ``axis`` (1: a token sequence) to ``width``: ids and mask, where
    the mask's zeros hide what was added; a text line's width, where zeros are background."""
    if value.shape[axis] >= width:
        return value
    pads = [(0, 0)] * value.ndim
    pads[axis] = (0, width - value.shape[axis])
    return np.pad(value, pads)


@dataclass(frozen=True)
class SessionOptions:
    threads: Optional[int] = None  # None: the runtime's default (all cores)
    provider: str = "cpu"  # cpu, cuda, tensorrt (onnxruntime); cpu or xnnpack (LiteRT)
    # onnxruntime's intra-op threads spin after each run by default; when several sessions (or
    # torch) share the cores, the spinning steals them from each other. Off unless asked for.
    allow_spinning: bool = False


class Session:
    format: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    requested_provider: str = "cpu"
    active_provider: str = "cpu"  # read back from the runtime, never assumed

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def bind(self, feeds: dict[str, np.ndarray]):
        """A zero-argument callable running these feeds: conversions happen once, here, so that
        a timing loop measures the runtime and nothing else."""
        return lambda: self.run(feeds)

    def run_batched(self, feeds: dict[str, np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
        """Run many samples (first axis) in chunks, concatenating each output."""
        sized = [v for v in feeds.values() if np.ndim(v)]
        total = len(sized[0]) if sized else 1
        fixed = [s.shape[0] for s in self.inputs if s.shape and isinstance(s.shape[0], int)]
        if fixed:  # a model exported with a fixed batch runs in chunks of exactly that size
            batch_size = fixed[0]
        if total <= batch_size or len(sized) != len(feeds):  # a scalar input (a sample rate): one call
            return self.run(feeds)
        chunks = [self.run({k: v[i:i + batch_size] for k, v in feeds.items()})
                  for i in range(0, total, batch_size)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    @property
    def fell_back(self) -> bool:
        return self.active_provider != self.requested_provider
