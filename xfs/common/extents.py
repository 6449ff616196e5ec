"""Several ranges of one object in one write (``ObjWrite.extents``): checked and applied.

A client that wrote to scattered places of an object sends them together, so that the
OSD reads, patches and replaces the object once, not once per range. On the wire the
ranges are (offset, length) pairs, ascending and disjoint, and the write's data is
their bytes one after another; the write's ``offset`` is the first range's. Without
pairs, a write is one range: its data at its offset.
"""

from __future__ import annotations

from collections.abc import Sequence

Extent = tuple[int, int]  # (offset in the object, length)

MAX_EXTENTS = 1024  # ranges one write may carry: the request stays small beside its data


def ranges(offset: int, length: int, extents: Sequence[Extent]) -> Sequence[Extent]:
    """The ranges a write of ``length`` bytes at ``offset`` (with ``extents``) covers."""
    return extents if extents else ((offset, length),)


def problem(offset: int, length: int, extents: Sequence[Extent]) -> str:
    """Why a write's ranges are malformed, or "" if they are not."""
    if not extents:
        return ""
    if len(extents) > MAX_EXTENTS:
        return f"{len(extents)} ranges in one write, at most {MAX_EXTENTS}"
    if extents[0][0] != offset:
        return f"the first range starts at {extents[0][0]}, the write at {offset}"
    end, total = 0, 0
    for at, n in extents:
        if n <= 0 or at < end:
            return f"range {at}+{n} is empty, or not after the one before it"
        end, total = at + n, total + n
    if total != length:
        return f"the ranges hold {total} bytes, the write {length}"
    return ""


def end_of(offset: int, length: int, extents: Sequence[Extent]) -> int:
    """Where the last range ends (within the object)."""
    at, n = extents[-1] if extents else (offset, length)
    return at + n


def patch(buf: bytearray, data: bytes | bytearray | memoryview, extents: Sequence[Extent]) -> None:
    """Write each range's bytes of ``data`` into ``buf``; a gap past its end reads as
    zeros. ``extents`` are checked (``problem``)."""
    view = memoryview(data)
    taken = 0
    for at, n in extents:
        if at > len(buf):
            buf.extend(bytes(at - len(buf)))
        buf[at : at + n] = view[taken : taken + n]
        taken += n
