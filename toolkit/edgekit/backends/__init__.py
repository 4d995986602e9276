"""Runtime backends: open a model file and run it, one module per runtime.

Every backend returns a :class:`~edgekit.backends.base.Session` that takes and returns numpy
arrays keyed by the model's own input names, whatever names the file uses internally, and
reports the execution provider or delegate that is really active. Nothing here imports torch.
Which backend opens a file is the format's business: ``edgekit.formats.open_session``.
"""

from __future__ import annotations

from .base import Session, SessionOptions


__all__ = ["Session", "SessionOptions"]
