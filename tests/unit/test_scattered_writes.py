"""Scattered writes to one object: the client's gathering (xfs.client.dirty), the
ranges' checks (xfs.common.extents) and the OSD store applying them in one write."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from xfs.client.dirty import MAX_RANGES, Dirty
from xfs.common import extents
from xfs.osd.objects import ObjectStore
from xfs.proto.errors import XfsError

FID = "0b6e4f7a-3c2d-4e5f-8a9b-1c2d3e4f5a6b:42"
SIZE = 64 * 1024


def check_invariants(d: Dirty) -> None:
    assert d.starts == sorted(d.starts)
    for (s, b), (t, _) in zip(d.ranges(), list(d.ranges())[1:], strict=False):
        assert len(b) > 0 and s + len(b) < t  # disjoint, and not touching
    assert d.held == sum(len(b) for _, b in d.ranges())


@pytest.mark.parametrize("seed", range(8))
def test_gathered_writes_match_a_model(seed: int) -> None:
    """Random writes (mostly small, some joining, some overlapping many ranges) read
    back through ``within`` and ``wire`` as a plain buffer holds them."""
    rng = random.Random(seed)
    model = bytearray(SIZE)
    written = [False] * SIZE
    first = rng.randrange(SIZE - 100)
    data = rng.randbytes(rng.randrange(1, 100))
    d = Dirty(first, bytearray(data))
    model[first : first + len(data)] = data
    written[first : first + len(data)] = [True] * len(data)
    for _ in range(400):
        n = rng.choice([1, 7, 100, 1000, 5000])
        at = rng.randrange(SIZE - n)
        if rng.random() < 0.2:  # right after a range ends: joins it
            at = min(d.end, SIZE - n)
        data = rng.randbytes(n)
        d.put(at, memoryview(data))
        model[at : at + n] = data
        written[at : at + n] = [True] * n
        check_invariants(d)
        lo = rng.randrange(SIZE)
        hi = min(SIZE, lo + rng.randrange(1, 20000))
        for rel, got in d.within(lo, hi - lo):
            assert got == bytes(model[lo + rel : lo + rel + len(got)])
            assert all(written[lo + rel : lo + rel + len(got)])
        covered = sum(len(b) for _, b in d.within(lo, hi - lo))
        assert covered == sum(written[lo:hi])
    offset, payload, ranges = d.wire()
    assert extents.problem(offset, len(payload), ranges) == ""
    out = bytearray(SIZE)
    extents.patch(out, payload, extents.ranges(offset, len(payload), ranges))
    assert bytes(out) == bytes(m if w else 0 for m, w in zip(model, written, strict=True))


def test_a_sequential_writer_keeps_one_range_and_a_whole_object_is_uncopied() -> None:
    whole = bytes(range(256)) * 16
    d = Dirty(0, memoryview(whole))
    assert d.whole(len(whole)) and d.wire() == (0, d.bufs[0], ())
    assert isinstance(d.bufs[0], memoryview)  # kept as the caller's bytes
    d = Dirty(0, bytearray(b"a" * 10))
    for i in range(1, 100):
        d.put(i * 10, b"b" * 10)
    assert len(d.starts) == 1 and d.end == 1000 and d.whole(1000)


def test_full_and_joins() -> None:
    d = Dirty(0, bytearray(b"x"))
    for i in range(1, MAX_RANGES):
        d.put(i * 3, b"y")
    assert len(d.starts) == MAX_RANGES and d.full()
    assert d.joins(1, 1) and d.joins(3, 1) and not d.joins(MAX_RANGES * 3 + 5, 1)


@pytest.mark.parametrize(
    ("offset", "length", "ranges", "why"),
    [
        (0, 4, ((0, 2), (1, 2)), "not after"),
        (0, 4, ((0, 2), (2, 0), (2, 2)), "empty"),
        (5, 4, ((5, 2), (3, 2)), "not after"),
        (0, 4, ((0, 2), (4, 1)), "hold 3 bytes"),
        (1, 4, ((0, 2), (4, 2)), "starts at 0"),
        (0, 2048, tuple((i * 2, 1) for i in range(2048)), "at most"),
    ],
)
def test_malformed_ranges_are_named(offset: int, length: int, ranges: tuple, why: str) -> None:
    assert why in extents.problem(offset, length, ranges)


def test_the_store_applies_every_range_in_one_write(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.open()
    old = random.Random(1).randbytes(1000)
    store.write(FID, 0, 0, old)
    store.write(FID, 0, 10, b"aabbbcc", extents=((10, 2), (500, 3), (1200, 2)))
    want = bytearray(old)
    want[10:12] = b"aa"
    want[500:503] = b"bbb"
    want += bytes(200) + b"cc"  # past the old end: a hole of zeros, then the range
    assert store.load(FID, 0) == bytes(want)
    with pytest.raises(XfsError, match="not after"):
        store.write(FID, 0, 10, b"aabb", extents=((10, 2), (11, 2)))
    with pytest.raises(XfsError):  # the last range past the largest object
        store.write(FID, 0, 0, b"ab", extents=((0, 1), (1 << 40, 1)))
    assert store.load(FID, 0) == bytes(want)
