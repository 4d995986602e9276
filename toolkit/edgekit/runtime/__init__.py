"""The on-device runtime: load a bundle and predict with fallbacks, caching and batching.

    from edgekit.runtime import load
    model = load("model.ekb", fallback=my_rule, cache_size=1024)
    outputs = model.predict({"input": x})

Imports numpy and the runtimes only (onnxruntime and/or ai-edge-litert or tflite_runtime).
"""

from .model import InputError, PredictionFailed, RuntimeModel
from .registry import register_runtime


def load(bundle, fallback=None, cache_size: int = 0, timeout_ms=None, demote_after: int = 3, threads=None,
         public_key=None, log_store=None, retry_demoted_s: float = 30.0, limits=None, spin: bool = True) -> RuntimeModel:
    """Load ``bundle`` (.ekb or unpacked directory); see :class:`RuntimeModel`.

    ``demote_after`` consecutive failures on inputs another variant could answer demote a
    variant; it gets another try after ``retry_demoted_s`` (doubling while it keeps failing).
    ``limits`` (:class:`edgekit.bundle.Limits`) caps what unpacking may write. ``spin``: let
    onnxruntime's threads spin between runs (its default; off where other work shares the cores)."""
    return RuntimeModel(bundle, fallback=fallback, cache_size=cache_size, timeout_ms=timeout_ms,
                        demote_after=demote_after, threads=threads, public_key=public_key, log_store=log_store,
                        retry_demoted_s=retry_demoted_s, limits=limits, spin=spin)


__all__ = ["InputError", "PredictionFailed", "RuntimeModel", "load", "register_runtime"]
