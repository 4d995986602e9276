"""``edgekit bench``: latency and memory of model artifacts, locally or on a remote device."""

from .runner import BenchOptions, BenchResult, BenchRow, run_bench

__all__ = ["BenchOptions", "BenchResult", "BenchRow", "run_bench"]
