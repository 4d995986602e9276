from typing import Literal, Optional

import pytest

from edgekit._schema import Document, SchemaError, field, from_dict, to_dict


class Inner(Document):
    cores: int
    ghz: float = 1.0


class Outer(Document):
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


class Bounded(Document):
    limits: dict[str, Inner] = field(default_factory=dict)

    def validate(self) -> None:
        if "bad" in self.limits:
            raise ValueError("'bad' is not a limit's name")


@pytest.mark.parametrize(
    "data, key, expected",
    [
        ({"limits": {"ok": {"cores": 1}, "cpu": {"cores": "z"}}}, "limits.cpu.cores", "expected an integer, got 'z'"),
        ({"limits": {"cpu": {"cores": 1, "ghz": float("nan")}}}, "limits.cpu.ghz", "expected a finite number"),
        ({"limits": {"bad": {"cores": 1}}}, "", "'bad' is not a limit's name"),
        ({"limit": {}}, "limit", "unknown key; expected one of limits"),
    ],
)
def test_a_table_keyed_by_name_names_the_entry_that_is_wrong(data, key, expected):
    with pytest.raises(SchemaError) as info:
        from_dict(Bounded, data)
    assert info.value.key == key
    assert expected in str(info.value)


def test_a_numpy_value_in_a_document_is_written_as_its_number():
    import numpy as np

    out = to_dict({"ok": np.bool_(False), "n": np.int64(3)})
    assert out == {"ok": False, "n": 3} and type(out["ok"]) is bool and type(out["n"]) is int
