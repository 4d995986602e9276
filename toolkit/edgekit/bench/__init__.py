"""``edgekit bench``: latency and memory of model artifacts, locally or on a remote device."""

from .runner import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
