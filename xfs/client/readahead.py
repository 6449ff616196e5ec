"""Attributes of a directory's entries read ahead for the lookups that follow (pure).

After a remount, or once the kernel's entries have expired, a program that stats the
files of a directory one by one (``ls`` without ``-l`` then ``stat``, a build's
dependency scan, ``find -newer``) costs one MRC lookup per file. When a second lookup in
one directory misses the kernel's cache within a second, the mount reads the next page
of the directory with its attributes (``readdir``, the caller's own permission) and
answers the lookups that follow from it.

What it answers with must be what the MRC would say now, give or take what the kernel's
own caches allow: a page is used for ``FRESH_FOR`` (1 s) at most, each entry once, and
only while no change at all went through this mount since the page was asked for (the
mount counts its changes: ``Operations.changes``), so nothing this mount did is ever
hidden; what another client changed meanwhile is seen as late as through the kernel's
own cache (``entry_timeout``), never later.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from xfs.proto.records import Attr, DirEntry

FRESH_FOR = 1.0  # seconds a page read ahead is used
PAGE = 1000  # entries read ahead at once
MAX_DIRS = 64  # directories with a page kept
SECOND_MISS_WITHIN = 1.0  # seconds: two misses in one directory this close read ahead
REFUSED_FOR = 10.0  # seconds a directory not worth reading ahead is not tried again
USEFUL = 8  # lookups a page must have answered for the next one to be read

Key = tuple[int, int]  # (session, directory)


@dataclass
class _Page:
    changes: int  # the mount's change count when the page was asked for
    fetched: float
    cursor: int  # where the next page starts
    complete: bool  # the directory ended within this page
    attrs: dict[bytes, Attr] = field(default_factory=dict)
    hits: int = 0  # lookups it answered


class ReadAhead:
    def __init__(self) -> None:
        self._pages: OrderedDict[Key, _Page] = OrderedDict()
        self._misses: dict[Key, float] = {}  # when a lookup there last went to the MRC
        self._refused: dict[Key, float] = {}

    def take(self, key: Key, name: bytes, now: float, changes: int) -> Attr | None:
        """The attributes of ``name`` if a page still good holds it (once)."""
        page = self._pages.get(key)
        if page is None:
            return None
        if page.changes != changes or now - page.fetched > FRESH_FOR:
            self._drop(key, page, now)
            return None
        attr = page.attrs.pop(name, None)
        if attr is not None:
            page.hits += 1
        return attr

    def missed(self, key: Key, now: float) -> int | None:
        """A lookup in the directory goes to the MRC: the cursor to read ahead from, if
        it is time to (the second miss within a second), else None."""
        if self._resting(key, now):
            return None
        last = self._misses.get(key)
        self._misses[key] = now
        if len(self._misses) > 4 * MAX_DIRS:
            self._misses.clear()
        if last is None or now - last > SECOND_MISS_WITHIN:
            return None
        page = self._pages.get(key)
        if page is not None and now - page.fetched > FRESH_FOR:
            self._drop(key, page, now)
            page = None
        if page is None:
            return None if self._resting(key, now) else 0
        if page.hits < USEFUL:
            return None  # (reading on would cost more than it saves)
        return None if page.complete else page.cursor

    def _resting(self, key: Key, now: float) -> bool:
        return self._refused.get(key, -REFUSED_FOR) + REFUSED_FOR > now

    def _drop(self, key: Key, page: _Page, now: float) -> None:
        """A page goes; one that answered few lookups (names missing, looked up in
        another order, or changes here all the time) is not followed by another soon."""
        del self._pages[key]
        if page.hits < USEFUL:
            self.refused(key, now)

    def fill(
        self, key: Key, entries: list[DirEntry], changes: int, now: float, complete: bool
    ) -> None:
        cursor = entries[-1].cursor if entries else 0
        page = _Page(changes, now, cursor, complete, {e.name: e.attr for e in entries})
        self._pages[key] = page
        self._pages.move_to_end(key)
        while len(self._pages) > MAX_DIRS:
            self._pages.popitem(last=False)

    def refused(self, key: Key, now: float) -> None:
        """The caller may not list the directory (search but not read permission)."""
        self._refused[key] = now
        if len(self._refused) > 4 * MAX_DIRS:
            self._refused.clear()
