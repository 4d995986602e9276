"""Names that end up in file names, URLs and wire formats: profile ids, versions, output folders.

A name is 1-64 letters and digits, then also . _ + - (raspberrypi5, 1.2.0, 2026-12-03, v3+fix),
starting with a letter or digit: never a path ("../x"), never empty or blank, never a line break.
Standard library only (the device imports it).
"""

from __future__ import annotations

import re

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# The log store name of feedback rows written by `edgekit label import` (curated labels, not users'
# feedback): the collector stores them under it, monitoring and canary decisions leave them out.
LABEL_STORE = "edgekit-labels"


class BadName(ValueError):
    """Not a name; the message says what a name is."""


def check_name(value, what: str, example: str = "3, 1.2.0, pi5-lab") -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise BadName(f"{what} {str(value)[:80]!r} is not a name: 1-64 letters, digits and . _ + -, starting with "
                         f"a letter or digit (e.g. {example})")
    return value


def check_model_names(name, version) -> None:
    """A --name and --version given for a model (None: not given); raises BadName."""
    for value, what in ((name, "--name"), (version, "--version")):
        if value is not None:
            check_name(value, what, "digits-cnn, 3, 1.2.0")


def as_file_name(value: str) -> str:
    """``value`` made safe as one path component (an output folder named after a model)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", value).lstrip(".-_+")[:64]
    return cleaned or "model"
