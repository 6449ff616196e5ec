"""Strict conversion between frozen dataclass records and msgpack-able values.

A record travels as a msgpack map from field name to value. Decoding checks every
field's type against the record's annotations and refuses unknown or missing fields,
so a handler only ever sees well-typed values. Numbers are range-checked too: an int
must fit SQLite's signed 64 bits unless its field says otherwise (``U64``), a float
must be finite; a value outside is refused with ``EINVAL`` (``BadValue``).

Every type gets its decoder built once (``decoder``), from its annotations, so decoding
a message is a walk over prepared closures: no type introspection per value.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import math
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from xfs.proto.errors import ProtocolError, XfsError

T = TypeVar("T")
Decoder = Callable[[Any, str], Any]  # (value, where in the message) -> decoded value


@dataclasses.dataclass(frozen=True)
class Range:
    """The values an int field may take, inclusive (``Annotated[int, Range(lo, hi)]``)."""

    lo: int
    hi: int


I64 = Range(-(2**63), 2**63 - 1)  # every int field unless it says otherwise
U64 = Annotated[int, Range(0, 2**64 - 1)]  # the kernel's lock owners


class BadValue(XfsError):
    """A well-typed value out of its field's range: the call is refused (EINVAL)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)


class Record:
    """Base class of every wire record (subclasses are frozen dataclasses)."""

    def to_wire(self) -> dict[str, Any]:
        """The wire form, made once per record: records are frozen, and the XCap and
        XLocSet of an open file go out with every object request. Treat it as
        read-only."""
        wire: dict[str, Any] | None = self.__dict__.get("_wire")
        if wire is None:
            names = _NAMES.get(type(self))
            if names is None:
                names = _NAMES[type(self)] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
            wire = {name: encode(getattr(self, name)) for name in names}
            object.__setattr__(self, "_wire", wire)
        return wire

    @classmethod
    def from_wire(cls: type[T], value: Any) -> T:
        return decode(cls, value)


_NAMES: dict[type, tuple[str, ...]] = {}
_PLAIN = (int, str, bytes, bool, float, type(None))


def encode(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Record):
        return value.to_wire()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(tp: Any, value: Any, where: str = "") -> Any:
    """Decode ``value`` as type ``tp``; raise ProtocolError on any mismatch."""
    return decoder(tp)(value, where)


_DECODERS: dict[Any, Decoder] = {}


def decoder(tp: Any) -> Decoder:
    """The decoder of type ``tp``, built on first use."""
    found = _DECODERS.get(tp)
    if found is not None:
        return found
    built: list[Decoder] = []
    _DECODERS[tp] = lambda value, where: built[0](value, where)  # (a type that nests itself)
    built.append(_build(tp))
    _DECODERS[tp] = built[0]
    return built[0]


def _build(tp: Any) -> Decoder:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        ranges = [m for m in meta if isinstance(m, Range)]
        if base is int and ranges:
            return _int_in(ranges[0])
        return decoder(base)
    if origin in (Union, types.UnionType):
        return _union(tp)
    if origin is list:
        return _list(decoder(get_args(tp)[0]))
    if origin is tuple:
        return _tuple(get_args(tp))
    if origin is dict:
        kt, vt = get_args(tp)
        return _dict(decoder(kt), decoder(vt))
    if tp is Any:
        return lambda value, where: value
    if isinstance(tp, type) and issubclass(tp, Record):
        return _record(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp)
    plain = _SCALARS.get(tp)
    if plain is None:
        raise TypeError(f"codec cannot decode {tp!r}")
    return plain


def _union(tp: Any) -> Decoder:
    args = get_args(tp)
    optional = type(None) in args
    variants = [decoder(a) for a in args if a is not type(None)]
    if len(variants) == 1:
        (only,) = variants

        def optional_one(value: Any, where: str) -> Any:
            if value is None and optional:
                return None
            return only(value, where)

        return optional_one

    def any_of(value: Any, where: str) -> Any:
        if value is None and optional:
            return None
        errors = []
        for variant in variants:
            try:
                return variant(value, where)
            except ProtocolError as e:
                errors.append(e.message)
        raise ProtocolError(f"{where or 'value'}: no variant matched ({'; '.join(errors)})")

    return any_of


def _list(item: Decoder) -> Decoder:
    def decode_list(value: Any, where: str) -> Any:
        if not isinstance(value, list | tuple):
            raise ProtocolError(f"{where or 'value'}: expected list")
        return [item(v, where) for v in value]

    return decode_list


def _tuple(args: tuple[Any, ...]) -> Decoder:
    if len(args) == 2 and args[1] is Ellipsis:
        item = decoder(args[0])

        def decode_many(value: Any, where: str) -> Any:
            if not isinstance(value, list | tuple):
                raise ProtocolError(f"{where or 'value'}: expected tuple")
            return tuple(item(v, where) for v in value)

        return decode_many
    items = [decoder(a) for a in args]

    def decode_fixed(value: Any, where: str) -> Any:
        if not isinstance(value, list | tuple):
            raise ProtocolError(f"{where or 'value'}: expected tuple")
        if len(items) != len(value):
            raise ProtocolError(f"{where or 'value'}: expected {len(items)} items")
        return tuple(d(v, where) for d, v in zip(items, value, strict=True))

    return decode_fixed


def _dict(key: Decoder, val: Decoder) -> Decoder:
    def decode_dict(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where or 'value'}: expected map")
        return {key(k, where): val(v, where) for k, v in value.items()}

    return decode_dict


def _record(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls, include_extras=True)
    name = cls.__name__
    fields = {f.name: (decoder(hints[f.name]), f"{name}.{f.name}") for f in dataclasses.fields(cls)}
    required = frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    known = frozenset(fields)

    def decode_record(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where or name}: expected map for {name}")
        keys = value.keys()
        if not keys <= known:
            raise ProtocolError(f"{name}: unknown fields {sorted(map(str, keys - known))}")
        if not required <= keys:
            raise ProtocolError(f"{name}: missing fields {sorted(required - keys)}")
        kwargs = {}
        for k, v in value.items():
            field, at = fields[k]
            kwargs[k] = field(v, at)
        return cls(**kwargs)

    return decode_record


def _enum(cls: type[enum.Enum]) -> Decoder:
    def decode_enum(value: Any, where: str) -> Any:
        try:
            return cls(value)
        except ValueError:
            raise ProtocolError(f"{where}: bad {cls.__name__} {value!r:.50}") from None

    return decode_enum


def _bool(value: Any, where: str) -> Any:
    if value is not True and value is not False:
        raise ProtocolError(f"{where}: expected bool")
    return value


def _int_in(allowed: Range) -> Decoder:
    lo, hi = allowed.lo, allowed.hi

    def decode_int(value: Any, where: str) -> Any:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ProtocolError(f"{where}: expected int")
        if not lo <= value <= hi:
            raise BadValue(f"{where}: {value} is out of range ({lo} to {hi})")
        return value

    return decode_int


_int = _int_in(I64)


def _float(value: Any, where: str) -> Any:
    if not isinstance(value, float | int) or isinstance(value, bool):
        raise ProtocolError(f"{where}: expected float")
    if not math.isfinite(value):
        raise BadValue(f"{where}: {value} is not a finite number")
    return float(value)


def _str(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: expected str")
    return value


def _bytes(value: Any, where: str) -> Any:
    if type(value) is bytes or type(value) is memoryview:
        return value  # a view: a payload that came outside msgpack (xfs.common.framing)
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProtocolError(f"{where}: expected bytes")
    return bytes(value)


def _none(value: Any, where: str) -> Any:
    if value is not None:
        raise ProtocolError(f"{where}: expected nil")
    return None


_SCALARS: dict[Any, Decoder] = {
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
    bytes: _bytes,
    type(None): _none,
}
