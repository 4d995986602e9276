"""A :class:`Dataset`: arrays whose first axis is the sample axis, plus optional ``labels``.

The sample axis maps onto each input's batch axis (``TensorSpec.batch_axis``: 0 for most, 1 for an
RNN state); inputs with a fixed value or a fed-back state are not data and are added by
:meth:`Dataset.feeds`, which gives what the model takes. It is iterable in batches and also offers
``get_next()``, the protocol onnxruntime's calibrators use, so it can feed them directly.
``sequences`` (one id per sample, consecutive) marks the streams a stateful model runs through.
``lengths`` (one per sample) marks padded samples of a model with a dynamic axis (token rows
along their sequence, text-line images along their width): the arrays named in ``ragged`` are cut
along their axis to the longest sample of each batch, and :meth:`grouped` runs every sample at its
own length, so calibration and the accuracy guard see the real length distribution instead of
padding.
Readers of every data format (edgekit.data, edgekit.datafiles) and the built-in models build it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from .errors import DataError
from .spec import TensorSpec

LABELS = "labels"
SEQUENCE = "sequence"  # an optional array in a data file: the stream each sample belongs to
LENGTHS = "lengths"  # an optional array in a data file: each padded sample's own size along the dynamic axis


@dataclass
class Dataset:
    arrays: dict[str, np.ndarray]
    labels: Optional[np.ndarray] = None
    source: str = ""
    synthetic: bool = False
    # the model's input specs once checked against it (check_against): how samples are fed
    layout: Optional[list[TensorSpec]] = field(default=None, repr=False, compare=False)
    sequences: Optional[np.ndarray] = None
    fixed: dict[str, np.ndarray] = field(default_factory=dict)  # 0-d arrays of a data file: fixed inputs
    lengths: Optional[np.ndarray] = None  # each sample's own length along the ragged arrays' axis
    ragged: dict[str, int] = field(default_factory=dict)  # padded array -> its padded axis (1: token rows)
    _cursor: Iterator = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        scalars = [name for name, a in self.arrays.items() if np.ndim(a) == 0]
        if scalars:
            raise DataError(f"data array {scalars[0]!r} is a scalar (0-d); the first axis must be the sample axis",
                            "save one row per sample, e.g. shape N x 1 x 8 x 8")
        if self.labels is not None and np.ndim(self.labels) == 0:
            raise DataError("labels are a scalar (0-d)", "give one label per sample")
        sizes = {name: len(a) for name, a in self.arrays.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(
                f"data arrays have different sample counts: {sizes}",
                "every input array needs the same first dimension (the sample axis)",
            )
        if self.lengths is not None and len(self.lengths) != len(self):
            raise DataError(f"{len(self.lengths)} lengths for {len(self)} samples", "give one length per sample")
        if self.labels is not None and len(self.labels) != len(self):
            raise DataError(
                f"{len(self.labels)} labels for {len(self)} samples", "give one label per sample"
            )

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def feeds(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` as the model takes them: each on its batch axis, fixed values as
        they are, states at zero (the start of a sequence)."""
        if self.lengths is not None:  # cut the padding every row of this batch has
            width = int(self.lengths[start:stop].max(initial=1))
            arrays = {k: (first_along(v[start:stop], self.ragged[k], width) if k in self.ragged else v[start:stop])
                      for k, v in self.arrays.items()}
            return _cut(self, arrays).feeds(0, stop - start)
        if self.layout is None:
            return {k: v[start:stop] for k, v in self.arrays.items()}
        count = min(stop, len(self)) - start
        feeds = {}
        for spec in self.layout:
            if spec.value is not None:
                feeds[spec.name] = spec.fixed_value()
            elif spec.state_of is not None:
                shape = [count if i == spec.batch_axis else (d if isinstance(d, int) else 1)
                         for i, d in enumerate(spec.shape)]
                feeds[spec.name] = np.zeros(shape, spec.dtype)
            elif spec.batch_axis is None:
                feeds[spec.name] = self.arrays[spec.name][0]
            else:
                feeds[spec.name] = np.moveaxis(self.arrays[spec.name][start:stop], 0, spec.batch_axis)
        return feeds

    def batches(self, batch_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield self.feeds(start, start + batch_size)

    def __iter__(self):
        return self.batches(1)

    def head(self, n: int) -> "Dataset":
        return self.subset(slice(0, n))

    def subset(self, index) -> "Dataset":
        """The samples at ``index`` (an index array or a slice), in that order."""
        def take(a):
            return None if a is None else a[index]

        return Dataset({k: v[index] for k, v in self.arrays.items()}, take(self.labels), self.source, self.synthetic,
                       self.layout, take(self.sequences), self.fixed, take(self.lengths), self.ragged)

    def grouped(self, run, batch_size: int = 32) -> list[np.ndarray]:
        """``run(feeds)`` (sample-first outputs) over every sample at its own length: samples of one
        length run together, in batches of ``batch_size``, and the outputs come back in the
        dataset's order. Without lengths, plain batches."""
        if self.lengths is None:
            chunks = [run(self.feeds(i, i + batch_size)) for i in range(0, len(self), batch_size)]
            return [np.concatenate(parts) for parts in zip(*chunks)]
        order = np.argsort(self.lengths, kind="stable")
        bounds = np.flatnonzero(np.diff(self.lengths[order])) + 1
        pieces, chunks = [], []
        for same in np.split(order, bounds):
            for i in range(0, len(same), batch_size):
                index = same[i:i + batch_size]
                part = self.subset(index)
                chunks.append(run(part.feeds(0, len(part))))
                pieces.append(index)
        where = np.argsort(np.concatenate(pieces), kind="stable")
        return [_joined(parts)[where] for parts in zip(*chunks)]

    def length_range(self) -> Optional[tuple[int, int]]:
        """The shortest and longest sample (None without lengths)."""
        return None if self.lengths is None else (int(self.lengths.min()), int(self.lengths.max()))

    # onnxruntime.quantization.CalibrationDataReader protocol
    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._cursor is None:
            self._cursor = self.batches(1)
        return next(self._cursor, None)

    def rewind(self) -> None:
        self._cursor = None

    def describe(self) -> str:
        kind = self.source or "synthetic inputs"
        labelled = ", labelled" if self.labels is not None else ""
        span = self.length_range()
        lengths = f", lengths {span[0]}-{span[1]} (mean {self.lengths.mean():.0f})" if span else ""
        return f"{len(self)} samples from {kind}{labelled}{lengths}"


def _cut(dataset: Dataset, arrays: dict) -> Dataset:
    """``dataset``'s layout over ``arrays`` already cut to one batch (feeds without lengths)."""
    return Dataset(arrays, None, dataset.source, dataset.synthetic, dataset.layout)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """Outputs of groups of different lengths in one array: an output that follows the length (a
    recogniser's [samples, steps, classes]) is padded with zeros to the longest group's. A row of
    zeros is never a softmax's or log-softmax's, so a decoder can tell padding from output
    (optimizer.accuracy.ctc_decode skips it), and fp32 and a candidate are padded alike."""
    shape = np.max([p.shape for p in parts], axis=0)
    return np.concatenate([np.pad(p, [(0, 0)] + [(0, int(m) - n) for m, n in zip(shape[1:], p.shape[1:])])
                           for p in parts])


def first_along(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` cut to its first ``size`` entries along ``axis`` (a view): a padded sample to its own
    length, a bucket's output to a line's own steps."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, size)
    return array[tuple(index)]


def row_lengths(mask: np.ndarray) -> np.ndarray:
    """Each row's length in a padded [samples, positions] mask: up to its last non-zero (at least 1)."""
    flags = np.asarray(mask).reshape(len(mask), mask.shape[1] if np.ndim(mask) > 1 else 1, -1).any(axis=2)
    last = flags.shape[1] - np.argmax(flags[:, ::-1], axis=1)
    return np.where(flags.any(axis=1), last, 1).astype(np.int64)
