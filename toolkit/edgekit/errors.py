"""Errors that edgekit reports to users as one clear line.

Every error names the problem and, where there is one, the fix (``hint``). The CLI prints
``error: <message> (<hint>)`` and exits 1; only ``--debug`` shows a traceback.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """A failure the user can act on."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ProfileError(EdgekitError):
    """A target profile is unknown or does not validate."""


class ModelLoadError(EdgekitError):
    """A model path or reference cannot be loaded."""


class DataError(EdgekitError):
    """Calibration or evaluation data does not match the model."""


class InputError(EdgekitError):
    """Inputs that do not match what the model takes (names, dtypes, shapes, values, pictures)."""


class PredictionFailed(EdgekitError):
    """Every variant failed and no fallback was given."""


class BundleError(EdgekitError):
    """A bundle (or its manifest) that cannot be trusted or read."""


class ConversionError(EdgekitError):
    """A converter or quantiser failed; ``exporter`` and ``detail`` say which and where."""

    def __init__(self, message: str, exporter: str, detail: str = "", hint: str | None = None):
        super().__init__(message, hint)
        self.exporter = exporter
        self.detail = detail


class MissingDependencyError(EdgekitError):
    """An optional dependency (an extra) is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            f"install it with: pip install 'edgekit[{extra}]'",
        )
        self.package = package
        self.extra = extra


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, for one-line errors and reasons;
    the exception's type name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def require(module: str, package: str, extra: str, purpose: str):
    """Import an optional heavy module late, turning ImportError into a clear message."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
        raise MissingDependencyError(package, extra, purpose) from exc
