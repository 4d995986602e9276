"""Loading models of every supported format into one :class:`Model` record.

Names are resolved lazily: the on-device runtime imports ``edgekit.spec`` for tensor specs
without pulling in the loader (and what the loader may reach for).
"""

from __future__ import annotations

_LAZY = {"DEFAULT_MODEL": "edgekit.models.loader", "describe": "edgekit.models.loader",
         "load_model": "edgekit.models.loader",
         "Model": "edgekit.spec", "TensorSpec": "edgekit.spec", "parse_input_spec": "edgekit.spec"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
