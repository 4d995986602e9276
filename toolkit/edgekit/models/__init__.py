"""Loading models of every supported format into one :class:`Model` record.

Names are resolved lazily: the on-device runtime imports ``edgekit.models.spec`` for tensor specs
without pulling in the loader (and what the loader may reach for).
"""

from __future__ import annotations

_LAZY = {"DEFAULT_MODEL": "loader", "describe": "loader", "load_model": "loader",
         "Model": "spec", "TensorSpec": "spec", "parse_input_spec": "spec"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
