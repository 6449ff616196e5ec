"""RAID0 striping maths (pure): which object, column and offsets a byte range touches."""

from __future__ import annotations

from dataclasses import dataclass

from xfs.proto.records import Replica


@dataclass(frozen=True)
class Piece:
    """The part of one object that a byte range of the file covers."""

    objno: int
    offset: int  # within the object
    length: int
    buf_offset: int  # within the caller's buffer


def pieces(offset: int, length: int, stripe_size: int) -> list[Piece]:
    """Split the file range [offset, offset+length) at object boundaries."""
    if offset < 0 or length < 0 or stripe_size <= 0:
        raise ValueError("negative offset/length or bad stripe size")
    out: list[Piece] = []
    pos, end = offset, offset + length
    while pos < end:
        objno, within = divmod(pos, stripe_size)
        n = min(stripe_size - within, end - pos)
        out.append(Piece(objno, within, n, pos - offset))
        pos += n
    return out


def column(objno: int, width: int) -> int:
    return objno % width


def osd_of(replica: Replica, objno: int) -> str:
    return replica.osds[column(objno, len(replica.osds))]


def object_count(size: int, stripe_size: int) -> int:
    return -(-size // stripe_size)
