"""Frames and messages of the xfs wire protocol (pure: no I/O).

A frame is a 4-byte big-endian length followed by a msgpack body in the msgpack-RPC
shape: request ``[0, msgid, method, params]``, response ``[1, msgid, error, result]``,
notification ``[2, method, params]``. The length is checked against the connection's
limit before anything is allocated, and msgpack decodes with limits derived from it.

Bulk bytes travel outside msgpack: a field of the params (or of the result) holding at
least ``PAYLOAD_MIN`` bytes is sent as the msgpack extension ``PAYLOAD_EXT`` carrying its
length, and its bytes follow the msgpack part, raw. Such a body starts with the byte
``0xC1`` (never used by msgpack) and the msgpack part's length (4 bytes, big-endian).
A sender hands the payload's buffer to TLS as it is, and a receiver gets it back as a
view into the frame it received: no copy in Python on either side. See
docs/protocol.md (Frames) and docs/design/transport.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from xfs.proto.errors import ProtocolError

HEADER = struct.Struct(">I")
WITH_PAYLOAD = 0xC1  # first byte of a body whose payloads follow the msgpack part
PAYLOAD_EXT = 1  # msgpack extension type: a payload's length, its bytes after msgpack
PAYLOAD_MIN = 16 << 10  # smaller bytes stay inside msgpack
_LENGTH = struct.Struct(">Q")
REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2

#: Limit for metadata connections (MRC): large readdir batches fit comfortably.
META_FRAME_LIMIT = 4 << 20
#: Limit for data connections (OSD): the largest stripe plus the request around it.
DATA_FRAME_LIMIT = (64 << 20) + (64 << 10)
MAX_MSGID = (1 << 32) - 1
#: What a receiver allocates for a frame before its bytes arrive: a 1 MiB object with
#: the request around it fits; a larger frame's buffer doubles as it fills, so a peer
#: that announces 64 MiB and sends 5 bytes costs this much, not 64 MiB.
FIRST_ALLOCATION = (1 << 20) + (64 << 10)


@dataclass(frozen=True)
class Request:
    msgid: int
    method: str
    params: Any


@dataclass(frozen=True)
class Response:
    msgid: int
    error: Any
    result: Any


@dataclass(frozen=True)
class Notification:
    method: str
    params: Any


Message = Request | Response | Notification


def check_length(length: int, limit: int) -> None:
    if length == 0:
        raise ProtocolError("empty frame")
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")


Chunks = list[bytes | bytearray | memoryview]


def frame(message: list[Any]) -> Chunks:
    """A message as the chunks of one frame, to be sent in order as one unit; large
    bytes fields of its params or result (its last element) travel as payloads."""
    payloads: list[bytes | bytearray | memoryview] = []
    fields = message[-1]
    if isinstance(fields, dict):
        for key, value in fields.items():
            if isinstance(value, bytes | bytearray | memoryview) and len(value) >= PAYLOAD_MIN:
                if not payloads:
                    fields = message[-1] = dict(fields)  # (the caller's dict stays)
                payloads.append(value)
                fields[key] = msgpack.ExtType(PAYLOAD_EXT, _LENGTH.pack(len(value)))
    body = msgpack.packb(message, use_bin_type=True)
    if not payloads:
        return [HEADER.pack(len(body)) + body]
    total = 5 + len(body) + sum(len(p) for p in payloads)
    head = HEADER.pack(total) + bytes((WITH_PAYLOAD,)) + HEADER.pack(len(body)) + body
    return [head, *payloads]


def encode(message: list[Any]) -> bytes:
    return b"".join(frame(message))


def encode_request(msgid: int, method: str, params: Any) -> bytes:
    return encode([REQUEST, msgid, method, params])


def encode_response(msgid: int, error: Any, result: Any) -> bytes:
    return encode([RESPONSE, msgid, error, result])


def encode_notification(method: str, params: Any) -> bytes:
    return encode([NOTIFICATION, method, params])


def decode(body: bytes | bytearray | memoryview) -> Message:
    """Decode one frame body into a message; ProtocolError for anything malformed.
    Payloads come back as read-only views into ``body``."""
    n = len(body)
    view = memoryview(body)
    ext_len, hook = 0, _no_payload
    if n and view[0] == WITH_PAYLOAD:
        if n < 5:
            raise ProtocolError("frame too short for its payload header")
        (packed,) = HEADER.unpack(view[1:5])
        if packed > n - 5:
            raise ProtocolError("frame shorter than its msgpack part")
        tail = view[5 + packed :].toreadonly()
        view = view[5 : 5 + packed]
        ext_len, hook = _LENGTH.size, _Payloads(tail)
    try:
        value = msgpack.unpackb(
            view,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=min(n, 1 << 20),
            max_bin_len=n,
            max_array_len=min(n, 1 << 20),
            max_map_len=min(n, 1 << 18),
            max_ext_len=ext_len,
            ext_hook=hook,
        )
        if isinstance(hook, _Payloads):
            hook.check_used()
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises a zoo of types for bad input
        raise ProtocolError(f"undecodable frame: {type(e).__name__}") from None
    if not isinstance(value, list) or not value or not isinstance(value[0], int):
        raise ProtocolError("frame is not a msgpack-RPC message")
    kind = value[0]
    if kind == REQUEST and len(value) == 4:
        _, msgid, method, params = value
        if _valid_msgid(msgid) and isinstance(method, str):
            return Request(msgid, method, params)
    elif kind == RESPONSE and len(value) == 4:
        _, msgid, error, result = value
        if _valid_msgid(msgid):
            return Response(msgid, error, result)
    elif kind == NOTIFICATION and len(value) == 3:
        _, method, params = value
        if isinstance(method, str):
            return Notification(method, params)
    raise ProtocolError("malformed msgpack-RPC message")


def _no_payload(code: int, data: bytes) -> Any:
    raise ProtocolError(f"unexpected msgpack extension {code}")


class _Payloads:
    """The ext hook of a body with payloads: each extension takes the next bytes of the
    tail, in the order msgpack meets them; all of the tail must be taken."""

    def __init__(self, tail: memoryview) -> None:
        self._tail = tail
        self._at = 0

    def __call__(self, code: int, data: bytes) -> memoryview:
        if code != PAYLOAD_EXT or len(data) != _LENGTH.size:
            raise ProtocolError(f"unexpected msgpack extension {code}")
        (length,) = _LENGTH.unpack(data)
        if length > len(self._tail) - self._at:
            raise ProtocolError("payload longer than the frame")
        start, self._at = self._at, self._at + length
        return self._tail[start : self._at]

    def check_used(self) -> None:
        if self._at != len(self._tail):
            raise ProtocolError("frame has bytes after its payloads")


def _valid_msgid(msgid: Any) -> bool:
    return isinstance(msgid, int) and not isinstance(msgid, bool) and 0 <= msgid <= MAX_MSGID
