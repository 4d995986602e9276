"""Optimise a model for a target device: plan, convert, quantise, guard accuracy, choose."""

from .accuracy import Tolerance
from .options import OptimizeOptions
from .pipeline import NoCandidatePassed, OptimizeResult, optimize
from .plan import Candidate, Plan, make_plan

__all__ = ["Candidate", "NoCandidatePassed", "OptimizeOptions", "OptimizeResult", "Plan", "Tolerance", "make_plan",
           "optimize"]
