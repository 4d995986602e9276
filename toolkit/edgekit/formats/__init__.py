"""Artifact formats: one registry, one module per format (ONNX, TFLite).

Each format declares as data what it is (suffix, the device runtime that loads it, the profile
runtimes it serves, the precisions it can hold, which need calibration data, which sources it is
built from, the packages it needs) and opens its sessions. The device runtime, the bench runner
and the optimizer ask this registry. How the optimizer makes a format (reasons, settings,
conversion, build, repairs) is its recipe in ``edgekit.optimizer.recipes``, so this package
imports nothing of the optimizer: the device installs and imports it without the toolkit.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar, Optional

REGISTRY: dict[str, "ArtifactFormat"] = {}


class ArtifactFormat:
    """One artifact format. Subclasses register themselves by ``name`` (as Olive's passes do)."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    runtime: ClassVar[str]  # the manifest's runtime name: what loads it on the device
    runtime_modules: ClassVar[tuple[str, ...]]  # any one of these makes the runtime available
    serves: ClassVar[tuple[str, ...]]  # profile runtimes that run this format
    precisions: ClassVar[tuple[str, ...]]
    calibrated: ClassVar[frozenset[str]] = frozenset()  # precisions that need calibration data
    sources: ClassVar[tuple[str, ...]]  # Model.format values it can be built from
    needs: ClassVar[dict[str, tuple[str, str]]] = {}  # step -> (package, edgekit extra)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.name] = cls()

    # -- the device side ----------------------------------------------------------------------
    def available(self) -> bool:
        return any(importlib.util.find_spec(m) is not None for m in self.runtime_modules)

    def open_session(self, path: Path, options, model=None):
        raise NotImplementedError

    def open_variant(self, path: Path, variant: dict, threads, specs):
        """The runtime's opener: ``specs`` are (inputs, outputs) from the manifest."""
        raise NotImplementedError

    # -- what it is built from (the planner asks) ---------------------------------------------
    def can_build_from(self, model) -> bool:
        return model.format in self.sources

    def source_hint(self, model) -> str:
        return f"{self.name} is built from {', '.join(self.sources)} sources, and this one is {model.format}"


def get(name: str) -> ArtifactFormat:
    _load()
    return REGISTRY[name]


def all_formats() -> list[ArtifactFormat]:
    _load()
    return list(REGISTRY.values())


def by_suffix(path) -> Optional[ArtifactFormat]:
    suffix = Path(path).suffix.lower()
    return next((f for f in all_formats() if f.suffix == suffix), None)


def for_runtime(profile_runtime: str) -> ArtifactFormat:
    return next(f for f in all_formats() if profile_runtime in f.serves)


def open_session(path: str | Path, options=None, model=None):
    """Open ``path`` with the backend of its format. ``model`` (a loaded Model) supplies the
    input names a converter may have renamed (litert-torch calls them args_0, args_1...)."""
    from ..backends.base import SessionOptions

    path = Path(path)
    spec = by_suffix(path) or get("onnx")  # an unknown suffix: onnxruntime says what it is
    return spec.open_session(path, options or SessionOptions(), model)


def _load() -> None:
    if len(REGISTRY) < 2:  # a module imported on its own has registered only itself
        from . import onnx, tflite  # noqa: F401  (each module registers its format)


__all__ = ["REGISTRY", "ArtifactFormat", "all_formats", "by_suffix", "for_runtime", "get", "open_session"]
