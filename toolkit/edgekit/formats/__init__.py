"""Artifact formats: one registry, one module per format (ONNX, TFLite).

Each format declares as data what it is (suffix, the device runtime that loads it, the profile
runtimes it serves, the precisions it can build, which need calibration data, which sources it is
built from, the packages it needs) and provides, in its own module, its reason for a precision on
a target, its settings, its build, its repairs and its session. The planner, the builder, the
repair loop, the report, the bench runner, the session opener and the device runtime all ask
this registry; adding a format is one new module here.

Importing this package is cheap and torch-free: the device runtime uses it to open variants.
Heavy imports happen inside the methods that need them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar, Iterator, Optional

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

    # -- planning and building (workstation side) ---------------------------------------------
    def can_build_from(self, model) -> bool:
        return model.format in self.sources

    def source_hint(self, model) -> str:
        return f"{self.name} is built from {', '.join(self.sources)} sources, and this one is {model.format}"

    def reason(self, precision: str, arch: str, profile, explicit: set[str]) -> Optional[tuple[bool, str]]:
        """(worth building?, why) for ``precision`` on ``profile``; None when it does not apply.
        Subclasses add their own exceptions first and fall back to this, which holds for any
        format: what int8 and fp32 mean does not depend on the file."""
        if precision not in self.precisions:
            return None
        if precision == "fp32":
            return True, "fp32 reference conversion: the accuracy baseline and the safe fallback"
        if precision == "int8-dynamic":
            gain = "dot-product int8" if profile.cpu.int8_dot_product else "int8 without dot-product (small gain)"
            return True, f"dynamic int8 (weights int8, activations quantised at run time): {gain}"
        if precision == "int8-static":
            if profile.constraints.full_int8_required:
                return True, "full-integer int8 (calibrated): the only thing this accelerator runs"
            if arch == "transformer" and "int8-static" not in explicit:
                return False, "static int8 of attention and LayerNorm loses accuracy; dynamic suits transformers"
            return True, "static int8 with calibration: integer activations too, fastest for CNNs"
        return None

    def settings(self, precision: str, arch: str, profile, runtime: str) -> tuple[dict, str]:
        """Candidate fields for this format and precision, and why (appended to the reason)."""
        return {}, ""

    def base(self, builder) -> Path:
        """The fp32 artifact every precision of this format starts from (built once)."""
        return self._converted(builder)

    def convert(self, model, dst: Path) -> dict:
        """Convert ``model`` to this format at ``dst``; returns what the converter did."""
        raise NotImplementedError

    def _converted(self, builder) -> Path:
        """The source converted once per optimize run, or copied when it already is this format."""
        def make():
            dst = builder.workdir / f"base-fp32{self.suffix}"
            if builder.model.format == self.name:
                return dst, self.from_source(builder, dst)
            from ..convert.export_cache import reuse_or_make

            return dst, reuse_or_make(builder.model, self.name, dst, lambda: self.convert_for(builder, dst))

        return builder.cached(self.name, make)

    def from_source(self, builder, dst: Path) -> dict:
        """The base when the source already is this format: a copy, unless the format cleans it."""
        import shutil

        shutil.copyfile(builder.model.path, dst)
        return {"exporter": "source file"}

    def convert_for(self, builder, dst: Path) -> dict:
        """``convert`` with what this optimize run knows (its data, its time left)."""
        return self.convert(builder.model, dst)

    def build(self, builder, candidate, dst: Path) -> dict:
        raise NotImplementedError

    def repairs(self, candidate, opt) -> Iterator[tuple[str, object]]:
        return iter(())

    def settings_label(self, candidate) -> str:
        return ""


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


def _load() -> None:
    if len(REGISTRY) < 2:  # a module imported on its own has registered only itself
        from . import onnx, tflite  # noqa: F401  (each module registers its format)


__all__ = ["REGISTRY", "ArtifactFormat", "all_formats", "by_suffix", "for_runtime", "get"]
