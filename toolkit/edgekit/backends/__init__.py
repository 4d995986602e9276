"""Runtime backends: open a model file and run it, one module per runtime.

Every backend returns a :class:`~edgekit.backends.base.Session` that takes and returns numpy
arrays keyed by the model's own input names, whatever names the file uses internally, and
reports the execution provider or delegate that is really active. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

from .base import Session, SessionOptions


def open_session(path: str | Path, options: SessionOptions | None = None, model=None) -> Session:
    """Open ``path`` with the backend for its format. ``model`` (a loaded Model) supplies the
    input names a converter may have renamed (litert-torch calls them args_0, args_1...)."""
    from .. import formats

    path = Path(path)
    spec = formats.by_suffix(path) or formats.get("onnx")  # an unknown suffix: onnxruntime says what it is
    return spec.open_session(path, options or SessionOptions(), model)


__all__ = ["Session", "SessionOptions", "open_session"]
