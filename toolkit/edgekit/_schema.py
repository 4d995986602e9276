"""Build frozen dataclasses from plain dicts (TOML, JSON), with errors that name the key.

A deliberately small validator: edgekit's on-device side must stay light, and the messages must
say which key was wrong and what was expected, e.g. ``cpu.cores: expected an integer, got 'four'``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints


class SchemaError(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.detail = message


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp in _NAMES:
        return _NAMES[tp]
    if origin is dict:
        return "a table"
    if origin in (tuple, list):
        inner = _describe(get_args(tp)[0])
        inner = inner.split(" ", 1)[1] if inner.startswith(("a ", "an ")) else inner
        return f"a list of {inner}s"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except SchemaError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise SchemaError(key, f"expected {_describe(tp)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SchemaError(key, f"expected {_describe(tp)}, got {value!r}")
        (item,) = get_args(tp)[:1]
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(key, f"expected a table, got {value!r}")
        key_type, value_type = get_args(tp)
        return {_convert(key_type, k, key): _convert(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SchemaError(key, f"expected a table, got {value!r}")
        return from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(key, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):  # NaN and infinities are never meant in a profile or manifest
            raise SchemaError(key, f"expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(key, f"expected a string, got {value!r}")
        return value
    if tp is dict:  # free-form (an embedded document validated by its own parser)
        if not isinstance(value, dict):
            raise SchemaError(key, f"expected a table, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {key}")  # a bug in edgekit, not input


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return get_type_hints(cls)


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Return ``cls(**data)`` after checking every key and type; unknown keys are errors."""
    if not isinstance(data, dict):
        raise SchemaError(prefix, f"expected a table, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise SchemaError(where, f"unknown key; expected one of {', '.join(fields)}")
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING  # type: ignore[misc]
            )
            if required:
                raise SchemaError(key, f"missing; expected {_describe(hints[name])}")
            continue
        kwargs[name] = _convert(hints[name], data[name], key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise SchemaError(prefix, str(exc)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """The inverse of from_dict, for JSON output (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
