"""Produce a candidate's artifact with the real converters; intermediate files are shared.

What each format does lives in its recipe (``edgekit.optimizer.recipes``); the builder only caches the
base conversions (the fp32 export is made once per format and reused by every precision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from .. import formats as registry
from ..data import Dataset
from ..errors import ConversionError
from ..spec import Model
from . import recipes
from .plan import Candidate


class Builder:
    """Builds candidates into ``workdir``; base conversions are made once and reused."""

    def __init__(self, model: Model, workdir: Path, calibration: Optional[Dataset], probe: Optional[Dataset] = None,
                 budget=None, measure_here: bool = False):
        self.model, self.workdir, self.calibration = model, workdir, calibration
        # the target is this host: what runs faster can be measured here (graph fusions)
        self.measure_here = measure_here
        self.probe = probe  # evaluation samples converters check their result on
        self.budget = budget  # the run's --time-budget (optimizer.budget.Budget), if any
        self._base: dict[str, tuple[Optional[Path], Optional[ConversionError], dict]] = {}
        self.exports: dict[str, dict] = {}  # what each base conversion did, for the report

    def cached(self, key: str, make: Callable[[], tuple[Path, dict]]) -> Path:
        """``make()`` once per key, within the time budget; its ConversionError is remembered and
        raised again."""
        if key not in self._base:
            try:
                path, info = self.bounded(f"the {key} conversion", make)
                self._base[key] = (path, None, info)
            except ConversionError as exc:
                self._base[key] = (None, exc, {})
            self.exports[key] = self._base[key][2] or {"error": str(self._base[key][1])}
        path, error, _ = self._base[key]
        if error is not None:
            raise error
        return path

    def seconds_left(self) -> float:
        """What a converter subprocess may take: the budget's rest, an hour without one."""
        return 3600.0 if self.budget is None else max(min(self.budget.left(), 3600.0), 0.0)

    def bounded(self, what: str, func: Callable):
        """``func()`` stopped at the --time-budget's deadline (edgekit.optimizer.child); the step
        that was stopped is listed in the report with what the budget left out."""
        from .child import Stopped, bounded

        if self.budget is None or self.budget.seconds is None:
            return func()
        try:
            return bounded(what, func, self.budget.left())
        except Stopped:
            self.budget.skip(f"{what} (stopped at the deadline)")
            raise

    def base(self, fmt: str, **kw) -> Path:
        return recipes.get(fmt).base(self, **kw)

    def build(self, candidate: Candidate) -> tuple[Path, dict]:
        spec = registry.get(candidate.format)
        dst = self.workdir / f"{candidate.id}{spec.suffix}"
        return dst, recipes.get(candidate.format).build(self, candidate, dst)
