"""The command line's small languages, parsed where they are typed: ``--input``, ``--batch-axis``,
``--state`` and ``--tolerance`` become the library's types as click reads the arguments. A bad one
is a usage error naming the option (exit 2) before any model or data is loaded, and the library
gets values, not text to parse (Python callers may still pass the text)."""

from __future__ import annotations

from typing import Callable

import click

from ..errors import EdgekitError


class SpecType(click.ParamType):
    def __init__(self, name: str, parse: Callable):
        self.name, self._parse = name, parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a default, or parsed already
            return value
        try:
            return self._parse(value)
        except EdgekitError as exc:
            self.fail(str(exc), param, ctx)


def _input(text: str):
    from ..spec import InputOverride

    return InputOverride.parse(text)


def _batch_axis(text: str):
    from ..models.interface import parse_batch_axis

    return parse_batch_axis(text)


def _state(text: str):
    from ..models.interface import parse_state

    return parse_state(text)


def _tolerance(text: str):
    from ..optimizer.accuracy import Tolerance

    return Tolerance.parse(text)


INPUT = SpecType("NAME:SHAPE[:DTYPE][:=VALUE]", _input)
BATCH_AXIS = SpecType("NAME:AXIS", _batch_axis)
STATE = SpecType("IN=OUT", _state)
TOLERANCE = SpecType("TOLERANCE", _tolerance)
