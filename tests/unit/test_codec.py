"""The record codec: round trips, and every malformed value refused with ProtocolError."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

import pytest

from xfs.proto.codec import U64, BadValue, Record, decode
from xfs.proto.errors import ProtocolError
from xfs.proto.records import Attr, UpdatePolicy


@dataclass(frozen=True)
class Inner(Record):
    n: int
    tag: str | None = None


@dataclass(frozen=True)
class Outer(Record):
    name: str
    data: bytes
    inner: Inner
    items: list[Inner]
    by_name: dict[str, int]
    pair: tuple[int, str]
    many: tuple[int, ...]
    policy: UpdatePolicy
    either: int | str
    ratio: float = 1.0
    flag: bool = False
    anything: Any = None
    extra: list[int] = field(default_factory=list)


SAMPLE = Outer(
    "x", b"\x00\xff", Inner(1), [Inner(2, "b"), Inner(3)], {"a": 1}, (4, "d"), (5, 6),
    UpdatePolicy.RW, "s", 0.5, True, {"free": [1]}, [7],
)


def test_records_round_trip() -> None:
    wire = SAMPLE.to_wire()
    assert wire["policy"] == "rw" and wire["inner"] == {"n": 1, "tag": None}
    assert Outer.from_wire(wire) == SAMPLE
    attr = Attr(5, 0o100644, 1, "alice@physics", "g@physics", 100, 1, 2, 3, seq=9)
    assert Attr.from_wire(attr.to_wire()) == attr


def test_defaults_fill_missing_optional_fields() -> None:
    wire = SAMPLE.to_wire()
    for key in ("ratio", "flag", "anything", "extra"):
        del wire[key]
    decoded = Outer.from_wire(wire)
    assert decoded.ratio == 1.0 and decoded.flag is False and decoded.extra == []


def test_an_int_is_taken_for_a_float() -> None:
    wire = SAMPLE.to_wire() | {"ratio": 2}
    assert Outer.from_wire(wire).ratio == 2.0 and type(Outer.from_wire(wire).ratio) is float


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, "unknown fields ['bogus']"),
        ({"name": 5}, "Outer.name: expected str"),
        ({"data": "text"}, "Outer.data: expected bytes"),
        ({"flag": 1}, "Outer.flag: expected bool"),
        ({"ratio": True}, "Outer.ratio: expected float"),
        ({"inner": {"n": True}}, "Inner.n: expected int"),
        ({"inner": [1]}, "Outer.inner: expected map for Inner"),
        ({"items": {"n": 1}}, "Outer.items: expected list"),
        ({"items": [{"n": 1, "zzz": 2}]}, "Inner: unknown fields ['zzz']"),
        ({"by_name": [1]}, "Outer.by_name: expected map"),
        ({"by_name": {"a": "b"}}, "Outer.by_name: expected int"),
        ({"pair": [1]}, "Outer.pair: expected 2 items"),
        ({"pair": 1}, "Outer.pair: expected tuple"),
        ({"many": [1, "x"]}, "Outer.many: expected int"),
        ({"policy": "sometimes"}, "Outer.policy: bad UpdatePolicy"),
        ({"either": 1.5}, "Outer.either: no variant matched"),
        ({"inner": {"n": 1, "tag": 3}}, "Inner.tag: expected str"),
    ],
)
def test_malformed_values_are_refused(change: dict[str, Any], message: str) -> None:
    wire = SAMPLE.to_wire() | change
    with pytest.raises(ProtocolError) as e:
        Outer.from_wire(wire)
    assert message in e.value.message


def test_missing_required_fields_are_named() -> None:
    wire = SAMPLE.to_wire()
    del wire["inner"], wire["name"]
    with pytest.raises(ProtocolError) as e:
        Outer.from_wire(wire)
    assert "missing fields ['inner', 'name']" in e.value.message


def test_not_a_map_at_the_top() -> None:
    with pytest.raises(ProtocolError):
        decode(Outer, [1, 2])
    with pytest.raises(ProtocolError):
        decode(Inner | None, "x")
    assert decode(Inner | None, None) is None


@dataclass(frozen=True)
class Numbers(Record):
    ino: int
    owner: U64 = 0
    wait: float = 0.0
    maybe: int | None = None


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"ino": 2**64 - 1}, "Numbers.ino: 18446744073709551615 is out of range"),
        ({"ino": 2**63}, "Numbers.ino: 9223372036854775808 is out of range"),
        ({"ino": -(2**63) - 1}, "out of range"),
        ({"ino": 1, "maybe": 2**63}, "Numbers.maybe: 9223372036854775808 is out of range"),
        ({"ino": 1, "owner": -1}, "Numbers.owner: -1 is out of range"),
        ({"ino": 1, "wait": float("nan")}, "Numbers.wait: nan is not a finite number"),
        ({"ino": 1, "wait": float("inf")}, "Numbers.wait: inf is not a finite number"),
        ({"ino": 1, "wait": -float("inf")}, "not a finite number"),
    ],
)
def test_numbers_out_of_range_are_refused_with_einval(wire: dict[str, Any], message: str) -> None:
    """A value of the right type but out of its field's range (SQLite's 64 bits, the
    kernel's unsigned lock owners, finite floats) is EINVAL, not a protocol error."""
    with pytest.raises(BadValue) as e:
        Numbers.from_wire(wire)
    assert e.value.code == errno.EINVAL and message in e.value.message


def test_numbers_at_the_ends_of_their_range_pass() -> None:
    wire = {"ino": 2**63 - 1, "owner": 2**64 - 1, "wait": 1e300, "maybe": -(2**63)}
    assert Numbers.from_wire(wire) == Numbers(2**63 - 1, 2**64 - 1, 1e300, -(2**63))
