"""What monitoring measures on one prediction, defined once for the device and the collector.

Input features describe a tensor in a few numbers per row: mean, spread, range and the share of
non-finite values; for pictures also the ink per quadrant (a rotated or shifted picture moves it)
and per channel; for token ids the length and the id statistics. A device that keeps no raw
inputs ships exactly these numbers as its per-record summary, and the collector computes the
same numbers from raw inputs where they were kept: drift and data quality then work the same
from either, and raw data need not leave a device.

Output signals are the model's own view of a prediction: top class, confidence (top-1
probability), margin (top-1 minus top-2), normalised entropy, the output's norm and two fixed
random projections (embeddings), non-finite outputs, and a hash that exposes identical outputs
for different inputs. numpy only: this module runs on devices.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Optional

import numpy as np

from .metrics import probabilities

# Output features sketched per row; out.class is categorical, the rest numeric.
CATEGORICAL = frozenset({"out.class"})
NEAR_ONE = frozenset({"out.confidence", "out.margin"})  # probabilities that crowd near 1


def _finite_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values with non-finite entries masked as NaN, share of non-finite entries per row)."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, np.zeros(len(x))
    return np.where(bad, np.nan, x), bad.mean(axis=1)


def _image_layout(shape: tuple[int, ...]) -> Optional[tuple[int, int, int]]:
    """(channel axis or -1, height axis, width axis) of one row's shape, or None if not a picture."""
    if len(shape) == 2 and min(shape) >= 4:
        return -1, 0, 1
    if len(shape) == 3:
        if shape[0] <= 4 and min(shape[1:]) >= 4:
            return 0, 1, 2  # CHW
        if shape[2] <= 4 and min(shape[:2]) >= 4:
            return 2, 0, 1  # HWC
    return None


def input_features(name: str, array) -> dict[str, np.ndarray]:
    """Per-row features of one input (first axis = rows), keyed ``<name>.<stat>``. A row with no
    finite value gets NaN features (and nonfinite 1), without numpy's warnings about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _input_features(name, array)


def _input_features(name: str, array) -> dict[str, np.ndarray]:
    a = np.asarray(array)
    if a.ndim == 0:
        a = a.reshape(1)
    rows = len(a)
    if rows == 0 or a.dtype.kind not in "biuf":
        return {}
    flat = a.reshape(rows, -1)
    out: dict[str, np.ndarray] = {}
    if a.dtype.kind in "biu":  # token ids, masks, class ids
        flat = flat.astype(np.float64)
        out[f"{name}.length"] = np.count_nonzero(flat, axis=1).astype(np.float64)
        out[f"{name}.mean"] = flat.mean(axis=1)
        out[f"{name}.max"] = flat.max(axis=1) if flat.shape[1] else np.zeros(rows)
        return out
    flat = flat.astype(np.float64, copy=False)
    values, nonfinite = _finite_rows(flat)
    with np.errstate(all="ignore"):
        nan_aware = values is not flat
        mean = np.nanmean(values, axis=1) if nan_aware else values.mean(axis=1)
        out[f"{name}.mean"] = mean
        out[f"{name}.std"] = np.nanstd(values, axis=1) if nan_aware else values.std(axis=1)
        out[f"{name}.min"] = np.nanmin(values, axis=1) if nan_aware else values.min(axis=1)
        out[f"{name}.max"] = np.nanmax(values, axis=1) if nan_aware else values.max(axis=1)
    out[f"{name}.nonfinite"] = nonfinite
    layout = _image_layout(a.shape[1:])
    if layout is not None:
        c, h, w = layout
        img = np.where(np.isfinite(a), a, np.nan).astype(np.float32, copy=False)
        if c >= 0:
            channels = np.moveaxis(img, c + 1, 1)  # rows x C x H x W
            if channels.shape[1] > 1:
                for i in range(channels.shape[1]):
                    out[f"{name}.c{i}"] = np.nanmean(channels[:, i].reshape(rows, -1), axis=1).astype(np.float64)
            img = channels.mean(axis=1)
        hh, ww = img.shape[1] // 2, img.shape[2] // 2
        with np.errstate(all="ignore"):
            for i, (ys, xs) in enumerate(((slice(0, hh), slice(0, ww)), (slice(0, hh), slice(ww, None)),
                                          (slice(hh, None), slice(0, ww)), (slice(hh, None), slice(ww, None)))):
                out[f"{name}.q{i}"] = np.nanmean(img[:, ys, xs].reshape(rows, -1), axis=1).astype(np.float64)
    return out


RECORD = "__record__"  # the summary's entry for the record as a whole (not an input)


def input_hash(inputs: dict) -> int:
    """A 52-bit digest of a record's inputs, exact in a JSON number: the same on the device (in
    the summary of inputs that do not ship) and the collector (over inputs that do). Identical
    outputs for different inputs mean a stuck model; for the same input resent, they do not."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(inputs):
        value = np.ascontiguousarray(inputs[name])
        digest.update(f"{name}\0{value.dtype.str}\0{value.shape}\0".encode())
        digest.update(value.tobytes())
    return int.from_bytes(digest.digest(), "big") >> 12


def summarise(inputs: dict) -> dict:
    """A record's per-input summary as the device ships it: the features averaged over the
    record's rows (one row for a single prediction), the shape, and null for what is not finite;
    and under ``RECORD`` the inputs' hash."""
    out: dict = {RECORD: {"hash": input_hash(inputs)}}
    for name, value in inputs.items():
        value = np.asarray(value)
        stats: dict = {"shape": list(value.shape)}
        batch = value if value.ndim >= 2 else value.reshape(1, -1)
        for key, column in input_features(name, batch).items():
            finite = column[np.isfinite(column)]
            number = float(finite.mean()) if len(finite) else math.nan
            stats[key[len(name) + 1:]] = number if math.isfinite(number) else None
        out[name] = stats
    return out


def summary_features(summary: dict) -> dict[str, float]:
    """The shipped summary as features named like the collector's own (``in.<name>.<stat>``)."""
    out = {}
    for name, stats in summary.items():
        if name == RECORD:
            continue
        for key, value in stats.items():
            if key != "shape" and value is not None:
                out[f"in.{name}.{key}"] = float(value)
    return out


_PROJECTIONS: dict[int, np.ndarray] = {}


def _projections(width: int) -> np.ndarray:
    """Two fixed random unit directions per output width: the same on every device and release."""
    p = _PROJECTIONS.get(width)
    if p is None:
        p = np.random.default_rng(width).normal(size=(width, 2))
        p = _PROJECTIONS.setdefault(width, p / np.linalg.norm(p, axis=0))
    return p


def output_signals(outputs: dict) -> dict[str, np.ndarray]:
    """Per-row signals of the first output: ``out.*`` features plus ``nonfinite`` and ``hash``."""
    first = next(iter(outputs.values()), None)
    if first is None:
        return {}
    a = np.asarray(first)
    if a.ndim == 0:
        a = a.reshape(1)
    rows = len(a)
    flat = a.reshape(rows, -1).astype(np.float64) if a.dtype.kind in "biuf" else None
    if flat is None or rows == 0:
        return {}
    finite = np.isfinite(flat).all(axis=1)
    out: dict[str, np.ndarray] = {"nonfinite": (~finite).astype(np.int64)}
    # identical outputs for different inputs: rounding to float16 forgives last-bit noise
    half = np.nan_to_num(flat).astype(np.float16)
    out["hash"] = np.asarray([hashlib.blake2b(r.tobytes(), digest_size=8).hexdigest() for r in half])
    safe = np.where(np.isfinite(flat), flat, 0.0)
    width = flat.shape[1]
    if width == 1:
        out["out.value"] = safe[:, 0]
        return out
    out["out.norm"] = np.linalg.norm(safe, axis=1)
    if a.ndim == 2 and width <= 1000:
        probs = probabilities(safe)
        top2 = np.sort(probs, axis=1)[:, -2:]
        out["out.class"] = np.where(finite, probs.argmax(axis=1), -1).astype(np.int64)
        out["out.confidence"] = top2[:, 1]
        out["out.margin"] = top2[:, 1] - top2[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
        out["out.entropy"] = ent / math.log(width)
    if width >= 16:  # embeddings: where in the space the outputs point
        unit = safe / np.maximum(out["out.norm"], 1e-12)[:, None]
        proj = unit @ _projections(width)
        out["out.proj0"], out["out.proj1"] = proj[:, 0], proj[:, 1]
    for key in ("out.confidence", "out.margin", "out.entropy", "out.norm", "out.proj0", "out.proj1", "out.value"):
        if key in out:
            out[key] = np.where(finite, out[key], np.nan)
    return out
