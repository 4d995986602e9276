"""Typed documents: one mechanism for every document edgekit reads or writes.

Every document (manifest, device profile, loop config, alert rules, expectation suites, the
sync wire format, fleet assignments) is a ``Document``: a frozen msgspec Struct that refuses
unknown keys. msgspec was chosen over the hand-rolled validator it replaced because it is one
small compiled package that installs on every device (aarch64 wheels, no dependencies), it
checks types and bounds in C while it decodes (the collector parses a 2,000-record batch 4.9x
faster than the hand-written parser did, faster even than ``json.loads`` alone), and its types
are plain classes with attributes, so readers of a manifest see fields, not dict lookups.

What edgekit adds on top: errors that name the key the way a person wrote it, e.g.
``cpu.cores: expected an integer, got 'four'`` (msgspec says ``Expected `int`, got `str` - at
`$.cpu.cores```), the key's choices when a key is unknown, finite numbers only (TOML has nan
and inf; no profile or manifest means them), and ``validate()`` hooks run with the key of the
table they judge.
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from typing import Any, Annotated, get_args, get_origin, get_type_hints

import msgspec

Meta = msgspec.Meta
field = msgspec.field
replace = msgspec.structs.replace


class Document(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The base of every typed document: frozen, and an unknown key is an error."""


class SchemaError(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.detail = message


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _strip(tp: Any) -> Any:
    """The type without Annotated and without Optional's None."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            if len(options) != 1:
                return tp
            tp = options[0]
        else:
            return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _describe(tp: Any) -> str:
    tp = _strip(tp)
    origin = get_origin(tp)
    if tp in _NAMES:
        return _NAMES[tp]
    if origin is dict or tp is dict or _is_struct(tp):
        return "a table"
    if origin in (tuple, list) or tp in (tuple, list):
        args = get_args(tp)
        if not args:
            return "a list"
        inner = _describe(args[0])
        inner = inner.split(" ", 1)[1] if inner.startswith(("a ", "an ")) else inner
        return f"a list of {inner}s"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        options = [_strip(a) for a in get_args(tp) if a is not type(None)]
        if set(options) >= {str, int, float, bool}:
            options = ["scalar"] + [o for o in options if o not in _NAMES]
        return " or ".join(dict.fromkeys("a scalar" if o == "scalar" else _describe(o) for o in options))
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return get_type_hints(cls, include_extras=True)


def _child(tp: Any, step: str) -> Any:
    """The type one step (a field name, ``[i]`` or ``[key]``) below ``tp``; None if unknown."""
    tp = _strip(tp)
    if _is_struct(tp):
        return _hints(tp).get(step)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (tuple, list) and args:
        return args[0]
    return None


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _locate(cls: type, data: Any, path: str) -> tuple[str, Any, Any]:
    """Walk msgspec's ``$.a[0].b`` path through the type and the data: (the key as people write
    it, the type there, the value there). msgspec writes a dict's key as ``[...]``; the walk finds
    which entry fails by converting each in turn."""
    key, tp, value = "", cls, data
    steps = [m.group(1) or m.group(2) for m in _STEP.finditer(path)]
    for step in steps:
        if step == "...":
            entries = value.items() if isinstance(value, dict) else ()
            sub = _child(tp, "x")
            bad = next((k for k, v in entries if not _converts(sub, v)), None)
            if bad is None:
                return key, None, None
            key, tp, value = f"{key}.{bad}" if key else str(bad), sub, value[bad]
        elif step.isdigit():
            key, tp = f"{key}[{step}]", _child(tp, step)
            value = value[int(step)] if isinstance(value, (list, tuple)) and int(step) < len(value) else None
        else:
            key, tp = f"{key}.{step}" if key else step, _child(tp, step)
            value = value.get(step) if isinstance(value, dict) else None
    return key, tp, value


def _converts(tp: Any, value: Any) -> bool:
    try:
        msgspec.convert(value, tp, strict=True)
        return True
    except (msgspec.ValidationError, TypeError):
        return False


_MESSAGE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def locate_error(cls: type, data: Any, exc: msgspec.ValidationError, prefix: str = "") -> SchemaError:
    """msgspec's refusal of ``data`` as a ``cls``, as a SchemaError that names the key."""
    m = _MESSAGE.match(str(exc))
    what, path = m.group("what"), m.group("path") or ""
    key, tp, value = _locate(cls, data, path)
    named = re.match(r"Object (missing required|contains unknown) field `(.+)`$", what)
    if named:
        sub = _strip(tp)
        child = f"{key}.{named.group(2)}" if key else named.group(2)
        if named.group(1) == "missing required":
            message = f"missing; expected {_describe(_child(sub, named.group(2)))}"
        else:
            choices = ", ".join(_hints(sub)) if _is_struct(sub) else ""
            message = "unknown key" + (f"; expected one of {choices}" if choices else "")
        key = child
    elif what.startswith(("Expected `", "Invalid enum value")) and tp is not None:
        bound = re.search(r"` ((?:[<>]=?|of length) .+)$", what)  # a Meta bound: "Expected `int` >= 0"
        message = f"expected {_describe(tp)}{' ' + bound.group(1) if bound else ''}, got {value!r}"
    elif what == "Number out of range":
        message = "expected a finite number, got one out of range"
    else:
        message = what  # a validate()/__post_init__ reason, already in words
    full = ".".join(k for k in (prefix, key) if k).replace(".[", "[")
    return SchemaError(full, message)


_CONTAINERS = (dict, list, tuple)


def _key(key: str, step: Any, in_dict: bool) -> str:
    return (f"{key}.{step}" if key else str(step)) if in_dict else f"{key}[{step}]"


def _finite(data: Any, key: str) -> None:
    """NaN and infinities are never meant in a document (TOML can write them; JSON cannot). A key
    is spelled out only for a table or list to enter, or for the number that fails."""
    in_dict = isinstance(data, dict)
    for step, v in (data.items() if in_dict else enumerate(data)):
        if isinstance(v, float):
            if not math.isfinite(v):
                raise SchemaError(_key(key, step, in_dict), f"expected a finite number, got {v!r}")
        elif isinstance(v, _CONTAINERS):
            _finite(v, _key(key, step, in_dict))


def _validate(obj: Any, key: str) -> None:
    """Run each table's ``validate()`` bottom-up, naming the table when it refuses."""
    if isinstance(obj, msgspec.Struct):
        for name in obj.__struct_fields__:
            _validate(getattr(obj, name), f"{key}.{name}" if key else name)
        check = getattr(obj, "validate", None)
        if check is not None:
            try:
                check()
            except ValueError as exc:
                if isinstance(exc, SchemaError):
                    raise
                raise SchemaError(key, str(exc)) from None
    elif isinstance(obj, _CONTAINERS):  # only tables and lists can hold a table to validate
        in_dict = isinstance(obj, dict)
        for step, v in (obj.items() if in_dict else enumerate(obj)):
            if isinstance(v, (msgspec.Struct, *_CONTAINERS)):
                _validate(v, _key(key, step, in_dict))


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """``data`` (TOML, JSON) as a ``cls`` after checking every key, type and bound."""
    if not isinstance(data, dict):
        raise SchemaError(prefix, f"expected a table, got {type(data).__name__}")
    _finite(data, prefix)
    try:
        obj = msgspec.convert(data, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise locate_error(cls, data, exc, prefix) from None
    _validate(obj, prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """A document as plain JSON-ready values (tuples become lists, numpy scalars numbers)."""
    if isinstance(obj, msgspec.Struct):
        return {name: to_dict(getattr(obj, name)) for name in obj.__struct_fields__}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # a numpy scalar: bool_ is not a bool
        return obj.item()
    return obj
