"""Frames and messages of the xfs wire protocol (pure: no I/O).

A frame is a 4-byte big-endian length followed by a msgpack body in the msgpack-RPC
shape: request ``[0, msgid, method, params]``, response ``[1, msgid, error, result]``,
notification ``[2, method, params]``. The length is checked against the connection's
limit before anything is allocated, and msgpack decodes with limits derived from it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from xfs.proto.errors import ProtocolError

HEADER = struct.Struct(">I")
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


def encode(message: list[Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def encode_request(msgid: int, method: str, params: Any) -> bytes:
    return encode([REQUEST, msgid, method, params])


def encode_response(msgid: int, error: Any, result: Any) -> bytes:
    return encode([RESPONSE, msgid, error, result])


def encode_notification(method: str, params: Any) -> bytes:
    return encode([NOTIFICATION, method, params])


def decode(body: bytes | bytearray | memoryview) -> Message:
    """Decode one frame body into a message; ProtocolError for anything malformed."""
    n = len(body)
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=min(n, 1 << 20),
            max_bin_len=n,
            max_array_len=min(n, 1 << 20),
            max_map_len=min(n, 1 << 18),
            max_ext_len=0,
        )
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


def _valid_msgid(msgid: Any) -> bool:
    return isinstance(msgid, int) and not isinstance(msgid, bool) and 0 <= msgid <= MAX_MSGID
