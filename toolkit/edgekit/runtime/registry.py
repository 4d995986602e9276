"""Runtimes a bundle variant can name, as openers: (path, variant, threads, specs) -> session.

A session has ``run(feeds) -> list[np.ndarray]`` and ``active_provider``. The artifact formats
(``edgekit.formats``) register theirs; tests and integrators register their own
(``register_runtime``), e.g. a vendor delegate or a fault injector.
"""

from __future__ import annotations

from typing import Callable

from .. import formats
from ..errors import EdgekitError

_OPENERS: dict[str, Callable] = {}
_AVAILABLE: dict[str, Callable[[], bool]] = {}


def register_runtime(name: str, opener: Callable, available: Callable[[], bool] = lambda: True) -> None:
    _OPENERS[name] = opener
    _AVAILABLE[name] = available


def available(name: str) -> bool:
    _load_plugins()
    return name in _OPENERS and _AVAILABLE[name]()


def open_variant(name: str, path, variant: dict, threads, specs):
    """``specs``: (inputs, outputs) from the manifest, so files with converter-made tensor names
    are fed and read by the model's own names. ``variant`` holds the manifest's fields for it, plus
    ``allow_spinning``: whether the runtime's thread pool may spin between runs."""
    return _OPENERS[name](path, variant, threads, specs)


def _register_formats() -> None:
    for spec in formats.all_formats():
        register_runtime(spec.runtime, spec.open_variant, spec.available)


_PLUGINS_LOADED = False


def _load_plugins() -> None:
    """EDGEKIT_RUNTIME_PLUGINS=pkg.mod,other.mod: modules imported once, when the first bundle
    loads (not at import: they import edgekit.runtime themselves), which register runtimes of
    their own (a vendor delegate, an NPU SDK) in any process that loads bundles, such as
    ``edgekit serve``."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import importlib
    import os

    for name in filter(None, (m.strip() for m in os.environ.get("EDGEKIT_RUNTIME_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise EdgekitError(f"runtime plugin {name!r} cannot be imported: {exc}",
                               "check EDGEKIT_RUNTIME_PLUGINS and PYTHONPATH") from None


_register_formats()
