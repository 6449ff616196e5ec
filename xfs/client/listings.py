"""The names in directories this mount made, kept whole while only it changes them (pure).

A directory the mount made is empty, as of the change number the MRC sent with it
(``Attr.seq``, xfs/mrc/dirseq.py). Each create or unlink the mount makes in it comes
back with the parent's number before and after the change: if "before" is the number
the listing is at, nobody else changed the directory in between and the listing is
still whole; it moves on to "after". Any other reply, or a change the mount cannot
follow (rename, link, mkdir, a failure), forgets the listing.

A whole listing answers the lookup of a name it does not hold without asking the MRC:
the kernel looks up every new name before it creates it, so a create storm in a new
directory costs one MRC call per file instead of two. A listing is trusted for
``fresh_for`` seconds (the mount's ``entry_timeout``) after the MRC last confirmed it,
the same window within which the kernel's own cache may miss another client's changes
(docs/design/metadata.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

CAPACITY = 1024  # directories whose listing is kept; the least recently used go first
MAX_NAMES = 100_000  # a listing that grows beyond this is forgotten (memory)


@dataclass
class Listing:
    seq: int  # the MRC's change number the names are as of
    confirmed: float  # when (monotonic) the MRC last confirmed it
    names: dict[bytes, int] = field(default_factory=dict)  # name -> ino (0: not known)


class Listings:
    def __init__(self, fresh_for: float, capacity: int = CAPACITY) -> None:
        self._fresh_for = fresh_for
        self._capacity = capacity
        self._dirs: OrderedDict[int, Listing] = OrderedDict()

    def made(self, ino: int, seq: int, now: float) -> None:
        """A directory this mount just made: empty as of ``seq``."""
        if seq <= 0 or self._fresh_for <= 0:
            return
        self._put(ino, Listing(seq, now))

    def load(self, ino: int, seq: int, names: dict[bytes, int], now: float) -> bool:
        """A directory's every name (and inode), read under this mount's lease of it."""
        if self._fresh_for <= 0 or len(names) >= MAX_NAMES:
            return False
        self._put(ino, Listing(seq, now, dict(names)))
        return True

    def _put(self, ino: int, listing: Listing) -> None:
        self._dirs[ino] = listing
        self._dirs.move_to_end(ino)
        while len(self._dirs) > self._capacity:
            self._dirs.popitem(last=False)

    def changed(
        self,
        parent: int,
        was: int,
        seq: int,
        now: float,
        *,
        added: bytes | None = None,
        added_ino: int = 0,
        removed: bytes | None = None,
        leased: bool = False,
    ) -> None:
        """A change of ours in ``parent`` came back: the number before it and after
        (``leased``: we hold the directory's lease, so nobody else changed it, though our
        queued creates moved the number on)."""
        listing = self._dirs.get(parent)
        if listing is None:
            return
        moved = listing.seq != was and not leased
        if was <= 0 or seq <= 0 or moved or len(listing.names) >= MAX_NAMES:
            del self._dirs[parent]  # somebody else changed it too (or we cannot tell)
            return
        if added is not None:
            listing.names[added] = added_ino
        if removed is not None:
            listing.names.pop(removed, None)
        listing.seq, listing.confirmed = seq, now
        self._dirs.move_to_end(parent)

    def at(self, ino: int, seq: int) -> bool:
        """Whether the listing of ``ino`` is whole as of the MRC's change number ``seq``;
        a listing behind it missed a change, and is forgotten."""
        listing = self._dirs.get(ino)
        if listing is not None and listing.seq < seq:
            del self._dirs[ino]
            return False
        return listing is not None and listing.seq == seq

    def added(self, parent: int, name: bytes, ino: int, now: float) -> None:
        """A create of ours under the directory's lease: nobody else changes it."""
        listing = self._dirs.get(parent)
        if listing is not None:
            listing.names[name] = ino
            listing.confirmed = now
            self._dirs.move_to_end(parent)

    def removed(self, parent: int, name: bytes, now: float) -> None:
        """An unlink of ours under the directory's lease."""
        listing = self._dirs.get(parent)
        if listing is not None:
            listing.names.pop(name, None)
            listing.confirmed = now
            self._dirs.move_to_end(parent)

    def ino_of(self, parent: int, name: bytes, now: float) -> int:
        """The inode ``name`` in ``parent`` leads to, if the listing is fresh and knows."""
        listing = self._dirs.get(parent)
        if listing is None or listing.confirmed + self._fresh_for <= now:
            return 0
        return listing.names.get(name, 0)

    def forget(self, ino: int) -> None:
        """A change in ``ino`` this mount cannot follow name by name."""
        self._dirs.pop(ino, None)

    def absent(self, parent: int, name: bytes, now: float) -> float:
        """Seconds for which ``name`` is known not to be in ``parent`` (0: not known)."""
        listing = self._dirs.get(parent)
        if listing is None or name in listing.names:
            return 0.0
        left = listing.confirmed + self._fresh_for - now
        if left <= 0:
            del self._dirs[parent]
            return 0.0
        return left
