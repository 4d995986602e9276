"""``optimize --time-budget``: one deadline for the whole run, repairs included.

Every step that can be left out asks the budget first; what was left out because the time ran
out is listed in the report, so a short budget gives a smaller, honest report, never a silently
partial one. The reference outputs and the report itself always run.
"""

from __future__ import annotations

import time
from typing import Optional


class Budget:
    def __init__(self, seconds: Optional[float]):
        self.seconds = seconds
        self.started = time.monotonic()
        self.deadline = None if seconds is None else self.started + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def spent(self) -> bool:
        return self.left() <= 0

    def skip(self, what: str) -> str:
        """Record a step left out; returns the reason for the report."""
        self.skipped.append(what)
        return f"skipped: the --time-budget of {self.seconds:g} s ran out"

    def share(self, wanted: float, floor: float = 0.3) -> float:
        """Seconds for a step that scales with time (the interleaved timing): what it wants, at
        most what is left, and a floor so that every candidate is timed at least a little."""
        return max(min(wanted, self.left()), floor)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "used_s": round(time.monotonic() - self.started, 2),
                "skipped": list(self.skipped)}
