"""Change numbers of directories' entries, for the listings clients keep (pure).

Every change to a directory's entries (a name added, removed or pointed elsewhere) gives
the directory the next number of one sequence. A client that made a directory, or
changed it, learns the number before and after its change; while each change it makes
finds the number it last saw, nobody else changed the directory in between, so the
client's own list of the names in it is still whole (docs/design/metadata.md).

Only the most recent ``capacity`` directories are remembered; one forgotten reports the
*floor*, the highest number forgotten so far. A number, once a directory changes again,
is never reported for it again: its next change gets a fresh number above everything
issued, and the floor only rises to numbers already issued. The sequence starts at the
wall clock in nanoseconds when the MRC starts, so numbers after a restart are above
every number from before it (changes come slower than one per nanosecond).
"""

from __future__ import annotations

from collections import OrderedDict


class DirSeq:
    def __init__(self, start: int, capacity: int = 200_000) -> None:
        self._floor = start
        self._next = start + 1
        self._last: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._capacity = capacity

    def changed(self, volume: str, ino: int) -> None:
        key = (volume, ino)
        self._last[key] = self._next
        self._last.move_to_end(key)
        self._next += 1
        if len(self._last) > self._capacity:
            _, number = self._last.popitem(last=False)
            self._floor = max(self._floor, number)

    def get(self, volume: str, ino: int) -> int:
        return self._last.get((volume, ino), self._floor)
