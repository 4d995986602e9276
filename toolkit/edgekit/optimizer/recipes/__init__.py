"""How the optimizer makes each artifact format: one recipe per format, registered by its name.

``edgekit.formats`` holds what a format *is* (suffix, the device runtime that loads it, the
precisions it can hold, its session opener): the device imports it. What the workstation does
with a format lives here: its reason for a precision on a target, its settings, its conversion
from the source, its build per precision and its repairs. The planner, the builder and the
repair loop ask this registry; adding a format is a module in ``edgekit.formats`` and one here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar, Iterator, Optional

from ... import formats
from ...errors import ConversionError

REGISTRY: dict[str, "Recipe"] = {}


class Recipe:
    """What the optimizer does with one format. Subclasses register themselves by ``format``."""

    format: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.format] = cls()

    @property
    def spec(self) -> formats.ArtifactFormat:
        return formats.get(self.format)

    # -- planning ---------------------------------------------------------------------------------
    def reason(self, precision: str, arch: str, profile, explicit: set[str]) -> Optional[tuple[bool, str]]:
        """(worth building?, why) for ``precision`` on ``profile``; None when it does not apply.
        Subclasses add their own exceptions first and fall back to this, which holds for any
        format: what int8 and fp32 mean does not depend on the file."""
        if precision not in self.spec.precisions:
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

    def settings_label(self, candidate) -> str:
        return ""

    # -- building ---------------------------------------------------------------------------------
    def base(self, builder) -> Path:
        """The fp32 artifact every precision of this format starts from (built once)."""
        return self._converted(builder)

    def convert(self, model, dst: Path) -> dict:
        """Convert ``model`` to this format at ``dst``; returns what the converter did."""
        raise NotImplementedError

    def _converted(self, builder) -> Path:
        """The source converted once per optimize run, or copied when it already is this format."""
        def make():
            dst = builder.workdir / f"base-fp32{self.spec.suffix}"
            if builder.model.format == self.format:
                return dst, self.from_source(builder, dst)
            from ...convert.export_cache import reuse_or_make

            return dst, reuse_or_make(builder.model, self.format, dst, lambda: self.convert_for(builder, dst))

        return builder.cached(self.format, make)

    def from_source(self, builder, dst: Path) -> dict:
        """The base when the source already is this format: a copy, unless the format cleans it."""
        shutil.copyfile(builder.model.path, dst)
        return {"exporter": "source file"}

    def convert_for(self, builder, dst: Path) -> dict:
        """``convert`` with what this optimize run knows (its data, its time left)."""
        return self.convert(builder.model, dst)

    def build(self, builder, candidate, dst: Path) -> dict:
        raise NotImplementedError

    def repairs(self, candidate, opt) -> Iterator[tuple[str, object]]:
        return iter(())


EXCLUDE_STEPS = (1, 2, 4, 8, 16)


def exclusion_steps(ranked: list) -> list[int]:
    """How many nodes to keep in float at each try: a few, never most of the model (that would
    just be the fp32 model under another name)."""
    cap = max(1, len(ranked) // 2)
    return [k for k in EXCLUDE_STEPS if k <= cap]


def guard(tool: str, func, builder=None) -> dict:
    """Quantiser failures become ConversionErrors naming the tool, so the plan goes on; with a
    builder, the quantiser is stopped at the run's deadline."""
    try:
        return builder.bounded(tool, func) if builder is not None else func()
    except ConversionError:
        raise
    except Exception as exc:
        from ...convert.onnx_export import _first_line

        raise ConversionError(f"{tool} failed: {_first_line(exc)}", tool, detail=str(exc)[:2000]) from None


def get(name: str) -> Recipe:
    if name not in REGISTRY:
        from . import onnx, tflite  # noqa: F401  (each module registers its recipe)
    return REGISTRY[name]


__all__ = ["EXCLUDE_STEPS", "REGISTRY", "Recipe", "exclusion_steps", "get", "guard"]
