"""Strict conversion between frozen dataclass records and msgpack-able values.

A record travels as a msgpack map from field name to value. Decoding checks every
field's type against the record's annotations and refuses unknown or missing fields,
so a handler only ever sees well-typed values.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin

from xfs.proto.errors import ProtocolError

T = TypeVar("T")


class Record:
    """Base class of every wire record (subclasses are frozen dataclasses)."""

    def to_wire(self) -> dict[str, Any]:
        return {f.name: encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_wire(cls: type[T], value: Any) -> T:
        return decode(cls, value)


def encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_wire()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}
_REQUIRED: dict[type, frozenset[str]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _required(cls: type) -> frozenset[str]:
    required = _REQUIRED.get(cls)
    if required is None:
        required = _REQUIRED[cls] = frozenset(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
    return required


def decode(tp: Any, value: Any, where: str = "") -> Any:
    """Decode ``value`` as type ``tp``; raise ProtocolError on any mismatch."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, value, where)
            except ProtocolError as e:
                errors.append(e.message)
        raise ProtocolError(f"{where or 'value'}: no variant matched ({'; '.join(errors)})")
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ProtocolError(f"{where or 'value'}: expected list")
        return [decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ProtocolError(f"{where or 'value'}: expected tuple")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ProtocolError(f"{where or 'value'}: expected {len(args)} items")
        return tuple(decode(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is dict:
        kt, vt = get_args(tp)
        if not isinstance(value, dict):
            raise ProtocolError(f"{where or 'value'}: expected map")
        return {decode(kt, k, where): decode(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Record):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where or tp.__name__}: expected map for {tp.__name__}")
        hints = _hints(tp)
        unknown = set(value) - set(hints)
        if unknown:
            raise ProtocolError(f"{tp.__name__}: unknown fields {sorted(map(str, unknown))}")
        missing = _required(tp) - set(value)
        if missing:
            raise ProtocolError(f"{tp.__name__}: missing fields {sorted(missing)}")
        kwargs = {k: decode(hints[k], v, f"{tp.__name__}.{k}") for k, v in value.items()}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ProtocolError(f"{where}: bad {tp.__name__} {value!r:.50}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{where}: expected bool")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(f"{where}: expected int")
        return value
    if tp is float:
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise ProtocolError(f"{where}: expected float")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: expected str")
        return value
    if tp is bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ProtocolError(f"{where}: expected bytes")
        return bytes(value)
    if tp is type(None):
        if value is not None:
            raise ProtocolError(f"{where}: expected nil")
        return None
    raise TypeError(f"codec cannot decode {tp!r}")
