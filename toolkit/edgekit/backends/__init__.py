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
    path = Path(path)
    options = options or SessionOptions()
    if path.suffix == ".tflite":
        from .litert import LiteRTSession

        return LiteRTSession(path, options, model)
    from .onnxruntime import OrtSession

    return OrtSession(path, options)


__all__ = ["Session", "SessionOptions", "open_session"]
