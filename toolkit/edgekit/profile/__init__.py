"""``edgekit profile``: where time and memory go, and what to do about it."""

from .run import run_profile

__all__ = ["run_profile"]
