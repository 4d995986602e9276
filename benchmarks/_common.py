"""Helpers shared by the benchmark scripts: side-by-side timing and a plain table."""

from __future__ import annotations

import os

# torch's OpenMP threads spin-wait after each op by default, stealing cores from onnxruntime and
# LiteRT when they are timed side by side; passive waiting keeps the comparison fair. Set before
# torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from edgekit.optimizer.timing import interleaved, summary  # noqa: E402


def cosine_rows(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    r, o = reference.reshape(len(reference), -1), output.reshape(len(output), -1)
    return (r * o).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1))


def side_by_side(runs: dict, budget_s: float = 30.0, min_rounds: int = 30) -> dict[str, dict]:
    return {k: summary(v) for k, v in interleaved(runs, warmup=5, min_rounds=min_rounds,
                                                   max_rounds=2000, budget_s=budget_s).items()}


def print_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
