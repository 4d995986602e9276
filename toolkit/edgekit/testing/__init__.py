"""Model tests: data expectations, memorisation, hard-case regression suites and the offline
report card (``edgekit test ...``). Usable from pytest too: ``assert_expectations`` and the
other ``assert_*`` helpers raise AssertionError with a readable message."""

from .expect import KINDS, Outcome, Suite, SuiteResult, run_suite
from .suggest import suggest


def assert_expectations(suite: "Suite | str", data) -> SuiteResult:
    """For pytest: raise AssertionError listing every failed expectation."""
    if not isinstance(suite, Suite):
        suite = Suite.load(suite)
    result = run_suite(suite, data)
    if not result.success:
        lines = [f"{o.dimension}/{o.kind} on {o.column or '-'}: expected {o.expected}, observed {o.observed}"
                 for o in result.failed()]
        raise AssertionError(f"{len(lines)} expectation(s) failed on {data}:\n  " + "\n  ".join(lines))
    return result


__all__ = ["KINDS", "Outcome", "Suite", "SuiteResult", "assert_expectations", "run_suite", "suggest"]
