"""Runtimes a bundle variant can name, as openers: (path, variant, threads, specs) -> session.

A session has ``run(feeds) -> list[np.ndarray]`` and ``active_provider``. The artifact formats
(``edgekit.formats``) register theirs; tests and integrators register their own
(``register_runtime``), e.g. a vendor delegate or a fault injector.
"""

from __future__ import annotations

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


def _register_formats() -> None:
    from .. import formats

    for spec in formats.all_formats():
        register_runtime(spec.runtime, spec.open_variant, spec.available)


_register_formats()
