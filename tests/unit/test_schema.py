from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from edgekit._schema import SchemaError, from_dict, to_dict


@dataclass(frozen=True)
class Inner:
    cores: int
    ghz: float = 1.0


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    tags: tuple[str, ...] = ()
    kind: Literal["a", "b"] = "a"
    limit: Optional[float] = None
    items: tuple[Inner, ...] = field(default_factory=tuple)


def test_round_trip():
    data = {"name": "x", "inner": {"cores": 4, "ghz": 2}, "tags": ["p", "q"], "items": [{"cores": 1}]}
    obj = from_dict(Outer, data)
    assert obj.inner.ghz == 2.0 and isinstance(obj.inner.ghz, float)
    assert obj.tags == ("p", "q") and obj.items == (Inner(1),)
    assert to_dict(obj)["tags"] == ["p", "q"]


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"name": "x", "inner": {"cores": "four"}}, "inner.cores", "expected an integer, got 'four'"),
        ({"name": "x", "inner": {"cores": True}}, "inner.cores", "expected an integer"),
        ({"name": "x"}, "inner", "missing; expected a table"),
        ({"name": "x", "inner": {"cores": 1}, "kind": "c"}, "kind", "expected one of 'a', 'b'"),
        ({"name": "x", "inner": {"cores": 1}, "tags": "p"}, "tags", "expected a list of strings"),
        ({"name": "x", "inner": {"cores": 1, "speed": 3}}, "inner.speed", "unknown key"),
        ({"name": "x", "inner": {"cores": 1}, "items": [{"cores": "z"}]}, "items[0].cores", "integer"),
    ],
)
def test_errors_name_the_key(data, key, expected):
    with pytest.raises(SchemaError) as info:
        from_dict(Outer, data)
    assert info.value.key == key
    assert expected in str(info.value)
