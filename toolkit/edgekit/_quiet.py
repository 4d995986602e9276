"""Silence converters that print progress to stdout/stderr or through logging."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings


@contextlib.contextmanager
def quiet(capture: io.StringIO | None = None):
    """Redirect Python-level output and mute noisy loggers; ``capture`` keeps the text.

    C++ libraries writing straight to fd 2 are left alone unless EDGEKIT_DEBUG is unset and
    the caller asks for it, since redirecting file descriptors is process-wide.
    """
    log = capture if capture is not None else io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch._dynamo", "torch.export",
                                               "absl", "onnxruntime", "litert_torch", "ai_edge_quantizer")]
    levels = [lg.level for lg in loggers]
    debug = os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0")
    try:
        for lg in loggers:
            lg.setLevel(logging.DEBUG if debug else logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            yield log
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def native_quiet():
    """Silence C++ libraries that log to file descriptor 2 (LiteRT's 'Created TensorFlow Lite
    XNNPACK delegate', absl's InitializeLog warning). Brief spans only: fd 2 is process-wide."""
    if os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0"):
        yield
        return
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. under some test runners)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_onnxruntime():
    """onnxruntime with its native log off unless EDGEKIT_DEBUG: on a bad input it prints error
    lines to fd 2 beside the exception it raises, and edgekit reports that exception as one line.
    The logger is process-wide, so every edgekit module takes onnxruntime from here."""
    import onnxruntime

    debug = os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0")
    onnxruntime.set_default_logger_severity(2 if debug else 4)  # 2: its own default; 4: fatal only
    return onnxruntime
