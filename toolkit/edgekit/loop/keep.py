"""The always-keep set: representative examples every data set must include (rare classes,
known hard cases, a customer's reference images), managed explicitly as files in the loop's
work folder, never sampled away."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from ..errors import EdgekitError
from ..tables import known_labels, load_columns, model_columns
from .._io import sha256_file


def _folder(work: Path) -> Path:
    return Path(work) / "keep"


def add_keep(work: Path, data: str | Path) -> dict:
    """Copy ``data``'s inputs and labels in as keep/<name>-<hash>.npz (every row must be labelled)."""
    columns = load_columns(data)
    labels, known = known_labels(columns, str(data))
    if not known.all():
        raise EdgekitError(f"{int((~known).sum())} rows of {data} have no label", "the always-keep set needs labels")
    inputs = {k: v for k, v in model_columns(columns).items() if k not in ("labels", "label")}
    if not inputs:
        raise EdgekitError(f"{data} holds no model inputs", "give an .npz with the inputs and 'labels'")
    buffer = io.BytesIO()
    np.savez(buffer, **inputs, labels=labels)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    target = _folder(work) / f"{Path(data).stem}-{digest}.npz"
    atomic_write_bytes(target, buffer.getvalue())
    return {"file": target.name, "rows": int(len(labels))}


def list_keep(work: Path) -> list[dict]:
    out = []
    for path in sorted(_folder(work).glob("*.npz")):
        with np.load(path) as f:
            labels = f["labels"]
        out.append({"file": path.name, "rows": int(len(labels)), "sha256": sha256_file(path),
                    "classes": dict(sorted(Counter(labels.tolist()).items()))})
    return out


def remove_keep(work: Path, name: str) -> None:
    path = _folder(work) / Path(name).name
    if not path.is_file():
        raise EdgekitError(f"{name} is not in the always-keep set", "see the list: edgekit loop keep --config loop.toml")
    path.unlink()
