"""Runtimes a bundle variant can name, as openers: (path, variant, threads, specs) -> session.

A session has ``run(feeds) -> list[np.ndarray]`` and ``active_provider``. Tests and
integrators register their own (``register_runtime``), e.g. a vendor delegate or a fault injector.
"""

from __future__ import annotations

import importlib.util
from typing import Callable

_OPENERS: dict[str, Callable] = {}
_AVAILABLE: dict[str, Callable[[], bool]] = {}


def register_runtime(name: str, opener: Callable, available: Callable[[], bool] = lambda: True) -> None:
    _OPENERS[name] = opener
    _AVAILABLE[name] = available


def available(name: str) -> bool:
    return name in _OPENERS and _AVAILABLE[name]()


def open_variant(name: str, path, variant: dict, threads, specs):
    """``specs``: (inputs, outputs) from the manifest, so files with converter-made tensor names
    are fed and read by the model's own names."""
    return _OPENERS[name](path, variant, threads, specs)


def _open_onnx(path, variant, threads, specs):
    from ..backends import SessionOptions
    from ..backends.onnxruntime import OrtSession

    return OrtSession(path, SessionOptions(threads=threads, provider=variant.get("provider", "cpu")))


def _open_litert(path, variant, threads, specs):
    from types import SimpleNamespace

    from ..backends import SessionOptions
    from ..backends.litert import LiteRTSession
    from ..models.spec import TensorSpec

    inputs, outputs = ([TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in group] for group in specs)
    return LiteRTSession(path, SessionOptions(threads=threads), SimpleNamespace(inputs=inputs, outputs=outputs))


def _has(*modules: str) -> Callable[[], bool]:
    return lambda: any(importlib.util.find_spec(m) is not None for m in modules)


register_runtime("onnxruntime", _open_onnx, _has("onnxruntime"))
register_runtime("litert", _open_litert, _has("ai_edge_litert", "tflite_runtime"))
