"""Pure runtime pieces: framing, the record codec, striping maths, config, placement."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfs.client.inodes import InodeTable
from xfs.common import config, framing
from xfs.common.config import ConfigError, MRCConfig, OSDConfig, TLSConfig
from xfs.common.striping import object_count, pieces
from xfs.mrc import placement
from xfs.proto.errors import ProtocolError, XfsError
from xfs.proto.methods import ObjWrite, SetAttr, all_methods
from xfs.proto.records import (
    ROOT_INO,
    Attr,
    OSDInfo,
    Replica,
    StripingPolicy,
    UpdatePolicy,
    XCap,
    XLocSet,
)


# ---------------------------------------------------------------------------- framing
def test_frames_round_trip() -> None:
    frame = framing.encode_request(7, "mrc.lookup/1", {"a": b"\x00\xff"})
    (length,) = framing.HEADER.unpack(frame[:4])
    assert length == len(frame) - 4
    msg = framing.decode(frame[4:])
    assert msg == framing.Request(7, "mrc.lookup/1", {"a": b"\x00\xff"})
    assert framing.decode(framing.encode_response(7, None, 1)[4:]) == framing.Response(7, None, 1)


def test_length_is_checked_before_allocation() -> None:
    with pytest.raises(ProtocolError):
        framing.check_length(framing.META_FRAME_LIMIT + 1, framing.META_FRAME_LIMIT)
    with pytest.raises(ProtocolError):
        framing.check_length(0, 10)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        msgpack.packb({"x": 1}),
        msgpack.packb([0, -1, "m", {}]),
        msgpack.packb([0, 1, 5, {}]),
        msgpack.packb([1, "id", None, None]),
        msgpack.packb([3, 1, 2, 3]),
        msgpack.packb([0, True, "m", {}]),
        msgpack.packb([0, 1 << 40, "m", {}]),
        msgpack.packb([2, 1]),
        msgpack.packb({1: 2}),
    ],
)
def test_malformed_bodies_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        framing.decode(body)


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_protocol_error(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        framing.decode(body)


# ---------------------------------------------------------------------------- codec
def _xcap() -> XCap:
    return XCap("v", 1, 3, 0, 1, b"h" * 32, 10, 20, b"f" * 32, "k", b"s" * 64)


def test_records_round_trip_and_are_strict() -> None:
    xloc = XLocSet(2, [Replica(["a", "b"], StripingPolicy(4096, 2))], UpdatePolicy.NONE)
    req = ObjWrite(_xcap(), xloc, 3, 0, b"data", True)
    wire = msgpack.unpackb(msgpack.packb(req.to_wire(), use_bin_type=True), raw=False)
    assert ObjWrite.from_wire(wire) == req
    with pytest.raises(ProtocolError):
        ObjWrite.from_wire({**wire, "evil": 1})
    with pytest.raises(ProtocolError):
        ObjWrite.from_wire({k: v for k, v in wire.items() if k != "objno"})
    with pytest.raises(ProtocolError):
        ObjWrite.from_wire({**wire, "objno": True})
    with pytest.raises(ProtocolError):
        ObjWrite.from_wire({**wire, "data": "text"})
    assert SetAttr.from_wire({"volume": "v", "ino": 1}).mode is None


def test_xloc_digest_changes_with_content() -> None:
    a = XLocSet(1, [Replica(["a"], StripingPolicy())])
    b = XLocSet(2, [Replica(["a"], StripingPolicy())])
    assert a.digest() != b.digest() and a.digest() == XLocSet.from_wire(a.to_wire()).digest()


def test_method_names_are_unique() -> None:
    names = [m.wire_name for m in all_methods()]
    assert len(names) == len(set(names))


def test_errors_carry_errno_names() -> None:
    e = XfsError(2, "no such entry")
    assert e.to_wire() == ["ENOENT", "no such entry"]
    assert XfsError.from_wire(["ENOENT", "x"]).code == 2
    assert isinstance(XfsError.from_wire(["NOTANERRNO", "x"]), ProtocolError)
    assert isinstance(XfsError.from_wire("x"), ProtocolError)


# ---------------------------------------------------------------------------- striping
@given(st.integers(0, 1 << 40), st.integers(0, 5 << 20), st.sampled_from([4096, 1 << 20]))
def test_pieces_cover_the_range_exactly(offset: int, length: int, stripe: int) -> None:
    parts = pieces(offset, length, stripe)
    assert sum(p.length for p in parts) == length
    pos = offset
    for p in parts:
        assert p.objno * stripe + p.offset == pos
        assert p.length > 0 and p.offset + p.length <= stripe
        assert p.buf_offset == pos - offset
        pos += p.length


def test_object_count() -> None:
    assert [object_count(n, 10) for n in (0, 1, 10, 11)] == [0, 1, 1, 2]


# ---------------------------------------------------------------------------- config
def test_config_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    tls = TLSConfig(tmp_path / "c.crt", tmp_path / "c.key", [tmp_path / "ca.crt"])
    osd = OSDConfig(tls=tls, data_dir=tmp_path / "d", mrc="127.0.0.1:1", labels={"rack": "r1"})
    path = tmp_path / "osd.toml"
    path.write_text(config.dump(osd))
    assert config.load(OSDConfig, path) == osd
    assert config.load(OSDConfig, path, {"port": 9}).port == 9
    path.write_text(config.dump(osd) + "typo = 1\n")
    with pytest.raises(ConfigError, match="typo"):
        config.load(OSDConfig, path)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(MRCConfig, tmp_path / "missing.toml")
    path.write_text('data_dir = "rel"\n[tls]\ncert = "a"\nkey = "b"\ntrust = ["c"]\n')
    loaded = config.load(MRCConfig, path)
    assert loaded.data_dir == tmp_path.resolve() / "rel"


# ---------------------------------------------------------------------------- placement
def _osd(uuid: str, free: int, alive: bool = True) -> OSDInfo:
    return OSDInfo(uuid, "h:1", free, 1 << 40, 0.0, alive)


def test_placement_filters_dead_and_full_osds_and_spreads() -> None:
    osds = [
        _osd("a", 10 << 30),
        _osd("b", 10 << 30),
        _osd("dead", 50 << 30, alive=False),
        _osd("full", 1 << 20),
        _osd("c", 10 << 30),
    ]
    rng = random.Random(1)
    chosen = [tuple(placement.select(osds, 2, rng)) for _ in range(200)]
    assert all(len(set(c)) == 2 and not {"dead", "full"} & set(c) for c in chosen)
    assert {u for c in chosen for u in c} == {"a", "b", "c"}
    assert placement.select(osds, 9, rng) and len(placement.select(osds, 9, rng)) == 3
    assert placement.select([_osd("x", 0)], 1, rng) == []


# ---------------------------------------------------------------------------- inodes
def test_lookup_counts_are_exact() -> None:
    t = InodeTable()
    for _ in range(3):
        t.looked_up(5)
    t.forget(5, 2)
    assert t.count(5) == 1
    t.forget(5, 1)
    assert t.count(5) == 0 and len(t) == 0
    t.looked_up(ROOT_INO)
    t.forget(ROOT_INO, 1)
    assert t.count(ROOT_INO) == 0


def test_attr_is_a_plain_record() -> None:
    a = Attr(2, 0o100644, 1, "a@v", "g@v", 0, 1, 2, 3)
    assert Attr.from_wire(a.to_wire()) == a
