"""What ``optimize`` can be told besides the model, the target, the data and the output folder:
one typed, validated value (as ``BenchOptions`` and ``ServeOptions`` are), built by the CLI from
its flags and by library callers directly."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from ..errors import EdgekitError
from ..names import BadName, check_model_names
from .accuracy import Tolerance, check_task

EVAL_SAMPLES = 512


@dataclass(frozen=True)
class OptimizeOptions:
    formats: Optional[frozenset[str]] = None  # narrow the plan (None: what the target runs)
    precisions: Optional[frozenset[str]] = None
    tolerance: Optional[Tolerance] = None  # a Tolerance (the CLI parses --tolerance) or its text ("0.99")
    allow_synthetic_calibration: bool = False
    eval_samples: int = EVAL_SAMPLES
    time_budget_s: Optional[float] = None  # bounds the whole run; what it left out is in the report
    timing_s: float = 20.0  # what the interleaved timing may take of it
    # --input, --batch-axis, --state: parsed (spec.InputOverride, (name, axis), (in, out)), as
    # the CLI passes them, or their text (edgekit.models.interface)
    inputs: tuple = ()
    batch_axes: tuple = ()
    states: tuple = ()
    plan_only: bool = False
    processing: Optional[dict] = None  # the bundle's pre/post-processing (built-in models carry theirs)
    verify_arm64: int = 0  # re-run the passing candidates on this many samples on ARM64 kernels
    task: Optional[str] = None  # how outputs are judged (accuracy.TASKS), else the model's own
    name: Optional[str] = None  # the model's name in the manifest (a factory's is its function's)
    version: Optional[str] = None  # ... and its version (else the time)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalised once, here
        for key in ("formats", "precisions"):
            value = getattr(self, key)
            if value is not None:
                set_(self, key, frozenset(value))
        for key in ("inputs", "batch_axes", "states"):
            set_(self, key, tuple(getattr(self, key)))
        if not isinstance(self.tolerance, Tolerance):
            set_(self, "tolerance", Tolerance.parse(self.tolerance))
        if self.eval_samples < 1:
            raise EdgekitError(f"eval_samples must be at least 1, got {self.eval_samples}")
        if not self.timing_s > 0:
            raise EdgekitError(f"timing_s must be positive, got {self.timing_s}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise EdgekitError(f"--time-budget must be positive, got {self.time_budget_s}")
        if self.verify_arm64 < 0:
            raise EdgekitError(f"--verify-arm64 takes a number of samples, got {self.verify_arm64}")
        if self.task is not None:
            check_task(self.task)
        try:
            check_model_names(self.name, self.version)
        except BadName as exc:
            raise EdgekitError(str(exc)) from None

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
