"""Steps that ``--time-budget`` must be able to stop: run in a forked child, killed at the deadline.

A converter (a torch export, litert-torch, onnx2tf) or a calibration can run for minutes and
cannot be interrupted from inside Python, so a budget that only asks "is there time left?" before
each step ran 937 s on a 400 s budget. A forked child inherits the loaded model (a PyTorch module
need not be picklable), writes its files where the parent would have, and sends back only the
small result; at the deadline its whole process group (onnx2tf's own subprocesses included) is
killed. Without a budget nothing is forked: the step runs in this process as before.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from typing import Callable, Optional, TypeVar

from ..errors import ConversionError

T = TypeVar("T")


class Stopped(ConversionError):
    """A step killed at the --time-budget's deadline."""


def bounded(what: str, func: Callable[[], T], seconds: Optional[float]) -> T:
    """``func()``, in a child stopped after ``seconds``; in this process when ``seconds`` is None."""
    if seconds is None:
        return func()
    if seconds <= 0:
        raise Stopped(f"{what} was not started: the --time-budget ran out", what)
    context = multiprocessing.get_context("fork")  # the child needs the loaded model, not a re-import
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_run, args=(func, send), name=f"edgekit: {what}")
    child.start()
    send.close()
    try:
        if not receive.poll(seconds):
            raise Stopped(f"{what} was stopped after {seconds:.0f} s: the --time-budget ran out", what,
                          hint="raise --time-budget, or narrow the plan with --formats/--precisions")
        try:
            kind, payload = receive.recv()
        except EOFError:  # died without a word: killed by the OS (memory), or a native crash
            child.join(5)
            raise ConversionError(f"{what} died (exit code {child.exitcode})", what) from None
    finally:
        _kill(child)
        receive.close()
    if kind == "ok":
        return payload
    raise _rebuilt(*payload)


def _run(func, send) -> None:
    os.setsid()  # its own process group, so the kill reaches the converters it starts
    torch = sys.modules.get("torch")
    if torch is not None:
        # GNU OpenMP's thread pool does not survive fork(): the first parallel torch op in the
        # child waits forever on the parent's workers. One thread never enters the pool (what
        # torch's own DataLoader workers do).
        torch.set_num_threads(1)
    try:
        message = ("ok", func())
    except BaseException as exc:  # noqa: B036 - every failure goes back to the parent as it was
        message = ("error", (type(exc), exc.args, dict(vars(exc))))
    try:
        send.send(message)
    except Exception as exc:  # a result or an exception that does not pickle: say what it was
        send.send(("error", (ConversionError, (f"{type(exc).__name__}: {exc}",), {"exporter": "", "detail": "",
                                                                                  "message": str(exc), "hint": None})))
    send.close()


def _rebuilt(cls, args, state) -> BaseException:
    """The child's exception as the parent's own: same class, message and fields (hint, exporter)."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _kill(child) -> None:
    if child.is_alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.kill()  # killed before its setsid(): it has no group of its own yet
    child.join(10)
