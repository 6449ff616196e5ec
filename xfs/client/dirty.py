"""The bytes of one object that an open file wrote and has not sent yet.

Writes to an object gather here as ranges, ascending and disjoint; a write that
overlaps or touches a range joins it. A sequential writer keeps one range that grows
(a whole object written at once stays the caller's bytes, uncopied); a writer that
jumps around an object keeps several, sent together in one ``osd.write`` (its
``extents``), so the OSD patches the object once for all of them instead of once per
write (xfs/common/extents.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from xfs.common.extents import Extent

MAX_RANGES = 256  # ranges an object gathers before it is sent


class Dirty:
    def __init__(self, offset: int, buf: bytearray | memoryview) -> None:
        """The first write: ``buf`` is kept as it is (a bytearray of its own, or a view
        of bytes nobody changes), and copied before a later write changes it."""
        # starts[i] is where bufs[i] begins; no two ranges overlap or touch
        self.starts: list[int] = [offset]
        self.bufs: list[bytearray | memoryview] = [buf]
        self.held = len(buf)  # bytes in all ranges

    @property
    def end(self) -> int:
        return self.starts[-1] + len(self.bufs[-1])

    def whole(self, length: int) -> bool:
        """Whether one range holds the object's first ``length`` bytes (or more)."""
        return len(self.starts) == 1 and self.starts[0] == 0 and len(self.bufs[0]) >= length

    def full(self) -> bool:
        """Whether the object should be sent before a write that makes a new range."""
        return len(self.starts) >= MAX_RANGES

    def joins(self, offset: int, length: int) -> bool:
        """Whether a write of [offset, offset+length) overlaps or touches a range."""
        i = bisect.bisect_right(self.starts, offset + length) - 1
        return i >= 0 and self.starts[i] + len(self.bufs[i]) >= offset

    def put(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` (over what was written there before)."""
        end = offset + len(data)
        lo = bisect.bisect_left(self.starts, offset)
        if lo > 0 and self.starts[lo - 1] + len(self.bufs[lo - 1]) >= offset:
            lo -= 1  # the range before reaches this write
        hi = bisect.bisect_right(self.starts, end)  # ranges [lo, hi) join it
        if lo == hi:
            self.starts.insert(lo, offset)
            self.bufs.insert(lo, bytearray(data))
            self.held += len(data)
            return
        at = offset - self.starts[lo]
        if hi == lo + 1 and at >= 0:  # within or after one range (appending): in place
            buf = self._writable(lo)
            before = len(buf)
            buf[at : at + len(data)] = data
            self.held += len(buf) - before
            return
        first = min(offset, self.starts[lo])
        last = max(end, self.starts[hi - 1] + len(self.bufs[hi - 1]))
        joined = bytearray(last - first)
        for i in range(lo, hi):
            at = self.starts[i] - first
            joined[at : at + len(self.bufs[i])] = self.bufs[i]
        joined[offset - first : end - first] = data
        self.held += len(joined) - sum(len(b) for b in self.bufs[lo:hi])
        self.starts[lo:hi] = [first]
        self.bufs[lo:hi] = [joined]

    def _writable(self, i: int) -> bytearray:
        buf = self.bufs[i]
        if not isinstance(buf, bytearray):
            buf = self.bufs[i] = bytearray(buf)
        return buf

    def ranges(self) -> Iterator[tuple[int, bytearray | memoryview]]:
        return zip(self.starts, self.bufs, strict=True)

    def within(self, offset: int, length: int) -> list[tuple[int, bytes]]:
        """The written bytes within [offset, offset+length): (offset from ``offset``,
        a copy of the bytes) per range that has some."""
        end = offset + length
        out = []
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        while i < len(self.starts) and self.starts[i] < end:
            start, buf = self.starts[i], self.bufs[i]
            lo, hi = max(start, offset), min(start + len(buf), end)
            if lo < hi:
                out.append((lo - offset, bytes(buf[lo - start : hi - start])))
            i += 1
        return out

    def wire(self) -> tuple[int, bytes | bytearray | memoryview, tuple[Extent, ...]]:
        """(offset, data, extents) of the ``osd.write`` that sends it all."""
        if len(self.starts) == 1:
            return self.starts[0], self.bufs[0], ()
        extents = tuple((s, len(b)) for s, b in self.ranges())
        return self.starts[0], b"".join(self.bufs), extents
