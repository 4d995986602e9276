"""Exports of a PyTorch model kept across runs, keyed by what they are made of.

A torch export is the slowest step of ``optimize`` (MiniLM's dynamo export: 20 s idle, 408 s on a
loaded machine), and the loop's gate re-exports the same model every time it runs. The key hashes
everything the export depends on: the weights and buffers, the source files of every module class
in the model (its forward code and what sits beside it), the example inputs, the interface, the
versions of torch, the exporter and edgekit, and the target format. A model whose code cannot be
read (defined in a notebook cell, say) is not cached: an export is never reused on a guess.

Entries live in ``<edgekit cache>/exports/<key>/`` (``EDGEKIT_EXPORT_CACHE=off`` turns it off), are
written into a temporary folder and renamed into place whole, and the oldest are removed past
``EDGEKIT_EXPORT_CACHE_MB`` (default 2048).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from .._io import cache_dir, installed_versions
from ..spec import Model
from .. import __version__

_EXPORTERS = {"onnx": ("onnx", "onnxscript"), "tflite": ("litert-torch", "ai-edge-litert")}


def enabled() -> bool:
    return os.environ.get("EDGEKIT_EXPORT_CACHE", "on").lower() not in ("off", "0", "no", "false")


def key(model: Model, fmt: str) -> Optional[str]:
    """The content hash of ``model``'s export to ``fmt``, or None where it cannot be trusted."""
    if not model.is_torch or not enabled():
        return None
    try:
        return _key(model, fmt)
    except Exception:  # a tensor or an input that does not hash: export, do not guess
        return None


def _key(model: Model, fmt: str) -> Optional[str]:
    import numpy as np
    import torch

    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(part if isinstance(part, bytes) else repr(part).encode())
            digest.update(b"\0")

    add(fmt, __version__, torch.__version__, sorted(installed_versions(_EXPORTERS.get(fmt, ())).items()))
    add(model.meta.get("sequence_buckets"))  # a TFLite's signature lengths
    if fmt == "onnx":  # which exporter goes first is part of what the export is made of
        from .onnx_export import exporters

        add(exporters(model))
    add([(s.name, s.shape, s.dtype, s.batch_axis, s.value, s.state_of) for s in model.inputs + model.outputs])
    for name, tensor in sorted(model.module.state_dict(keep_vars=False).items()):
        array = tensor.detach().cpu().contiguous()
        add(name, str(array.dtype), tuple(array.shape), array.reshape(-1).view(torch.uint8).numpy().tobytes()
            if array.numel() else b"")
    for example in model.example_inputs or ():
        array = np.ascontiguousarray(example.detach().cpu().numpy()) if hasattr(example, "detach") else example
        add(getattr(array, "dtype", type(array)), getattr(array, "shape", None),
            array.tobytes() if hasattr(array, "tobytes") else repr(array))
    files = set()
    for module in model.module.modules():
        source = _source_file(type(module))
        if source is None:
            return None
        files.add(source)
    for path in sorted(files):
        add(path, Path(path).read_bytes())
    return digest.hexdigest()


def reuse_or_make(model: Model, fmt: str, dst: Path, make: Callable[[], dict]) -> dict:
    """The export at ``dst``: copied from the cache when an identical one was made before, else
    ``make()``d and kept for next time. Returns what the exporter did (``cached`` when reused)."""
    digest = key(model, fmt)
    try:
        entry = None if digest is None else _root() / digest
    except OSError:  # a cache folder that cannot be made (a read-only home): export, keep nothing
        entry = None
    if entry is None:
        return make()
    info_file = entry / "info.json"
    if info_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(info_file.read_text())
            for name in info["files"]:
                shutil.copyfile(entry / name, dst.parent / name.replace("ARTIFACT", dst.name, 1))
            os.utime(entry)  # recently used: kept longest
            return info["info"] | {"cached": digest[:12]}
    info = make()
    with contextlib.suppress(OSError, TypeError, ValueError):  # a cache that cannot be written is no cache
        _store(entry, dst, info)
    return info


def _store(entry: Path, dst: Path, info: dict) -> None:
    partial = entry.with_name(f"{entry.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        # the artifact and what the exporter wrote beside it (ONNX external data: model.onnx.data)
        names = [p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name) and p.is_file()]
        stored = [name.replace(dst.name, "ARTIFACT", 1) for name in names]
        for name, as_name in zip(names, stored):
            shutil.copyfile(dst.parent / name, partial / as_name)
        (partial / "info.json").write_text(json.dumps({"files": stored, "info": info}))
        partial.rename(entry)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _prune()


def _prune() -> None:
    """Oldest entries out past the size limit; only folders of this cache are ever removed."""
    limit = float(os.environ.get("EDGEKIT_EXPORT_CACHE_MB", "2048")) * 1e6
    entries = []
    for entry in _root().iterdir():
        if entry.is_dir() and (entry / "info.json").is_file():
            size = sum(p.stat().st_size for p in entry.iterdir())
            entries.append((entry.stat().st_mtime, size, entry))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries):
        if total <= limit:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= size


def _root() -> Path:
    root = cache_dir() / "exports"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _source_file(cls) -> Optional[str]:
    """The file that defines ``cls`` (the whole file: forward may call its neighbours)."""
    try:
        path = inspect.getsourcefile(cls)
    except (TypeError, OSError):  # a built-in, or a class whose module is not on record
        return None
    return path if path and os.path.isfile(path) else None

