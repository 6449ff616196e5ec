"""Frames: payloads outside msgpack, and every malformed payload frame refused."""

from __future__ import annotations

import struct

import msgpack
import pytest

from xfs.common import framing
from xfs.common.framing import PAYLOAD_MIN, Request, Response
from xfs.proto.errors import ProtocolError


def body_of(chunks: framing.Chunks) -> bytearray:
    whole = b"".join(chunks)
    (length,) = framing.HEADER.unpack(whole[:4])
    assert length == len(whole) - 4
    return bytearray(whole[4:])


def test_small_bytes_stay_inside_msgpack() -> None:
    chunks = framing.frame([framing.REQUEST, 1, "osd.write/1", {"data": b"x" * 100}])
    assert len(chunks) == 1
    message = framing.decode(body_of(chunks))
    assert isinstance(message, Request) and message.params == {"data": b"x" * 100}


def test_large_bytes_travel_as_payloads_and_come_back_as_views() -> None:
    one, two = b"a" * PAYLOAD_MIN, memoryview(bytearray(b"b" * (1 << 20)))
    params = {"first": one, "n": 5, "second": two}
    chunks = framing.frame([framing.REQUEST, 7, "osd.write/1", params])
    assert chunks[1] is one and chunks[2] is two  # handed over as they are
    assert params["first"] is one  # the caller's dict is left alone
    message = framing.decode(body_of(chunks))
    assert isinstance(message, Request) and message.msgid == 7
    got = message.params
    assert isinstance(got["first"], memoryview) and got["first"].readonly
    assert bytes(got["first"]) == one and bytes(got["second"]) == bytes(two) and got["n"] == 5


def test_a_response_result_carries_payloads_too() -> None:
    data = bytes(range(256)) * 256
    chunks = framing.frame([framing.RESPONSE, 3, None, {"data": data}])
    message = framing.decode(body_of(chunks))
    assert isinstance(message, Response) and bytes(message.result["data"]) == data
    assert framing.encode_response(3, None, {"data": data}) == b"".join(chunks)


def _payload_body(packed: bytes, tail: bytes) -> bytes:
    return bytes((framing.WITH_PAYLOAD,)) + struct.pack(">I", len(packed)) + packed + tail


def _ext(length: int, code: int = framing.PAYLOAD_EXT) -> msgpack.ExtType:
    return msgpack.ExtType(code, struct.pack(">Q", length))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (bytes((framing.WITH_PAYLOAD,)) + b"\x00\x00", "too short"),
        (_payload_body(b"", b""), "undecodable"),
        (
            _payload_body(msgpack.packb([0, 1, "m", {"d": _ext(10)}]), b"x" * 5),
            "payload longer",
        ),
        (
            _payload_body(msgpack.packb([0, 1, "m", {"d": _ext(5)}]), b"x" * 9),
            "bytes after",
        ),
        (
            _payload_body(msgpack.packb([0, 1, "m", {"d": _ext(5, code=7)}]), b"x" * 5),
            "extension 7",
        ),
        (msgpack.packb([0, 1, "m", {"d": _ext(0)}]), "undecodable"),  # not a payload frame
    ],
    ids=["short", "empty-msgpack", "overlong", "leftover", "unknown-ext", "ext-outside"],
)
def test_malformed_payload_frames_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError) as e:
        framing.decode(bytearray(body))
    assert why in e.value.message


def test_a_declared_msgpack_part_longer_than_the_body_is_refused() -> None:
    body = bytes((framing.WITH_PAYLOAD,)) + struct.pack(">I", 1000) + b"\x94"
    with pytest.raises(ProtocolError) as e:
        framing.decode(bytearray(body))
    assert "shorter than its msgpack part" in e.value.message
