"""What of each file this OSD has written but not yet made durable (memory only).

The object store replaces an object through a temporary file and a rename without any
fsync, and makes a file durable when the client's ``fsync(2)`` or ``close()`` asks
(``ObjectStore.fsync``). This module remembers, per file, what that fsync must cover:
the objects renamed into place since the last one, whether names in the file's
directory changed (every rename and unlink changes one), and whether the directory
itself is new (then its ancestors gained an entry). See docs/design/replication.md,
"Durability on an OSD".

A file this process knows nothing of (never seen since it started, or forgotten to bound
memory) is *unknown*: a killed process leaves its writes unsynced in the page cache, so
everything the file holds may be unsynced and its next fsync covers everything. A file
becomes known only when this process makes its directory (it holds nothing yet) or
begins a full fsync of it; writes to an unknown file are not noted (it stays unknown).

Thread-safe: every method takes one lock, held only for bookkeeping, except
:meth:`make_dir`, which holds it across the ``mkdir`` itself (see there), and
:meth:`sync`, which waits for an fsync of the same file to end.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CAPACITY = 1 << 16  # known files; the least recently used are forgotten (made unknown)


@dataclass
class _Pending:
    objects: set[int] = field(default_factory=set)
    entries: bool = False  # names in the file's directory changed
    new_dir: bool = False  # the directory was made: its ancestors gained an entry


@dataclass(frozen=True)
class ToSync:
    """What one fsync of a file must make durable."""

    objects: frozenset[int] | None  # None: every object held (the file was unknown)
    entries: bool  # fsync the file's directory
    ancestors: bool  # the directory is new: fsync it and the directories above it


EVERYTHING = ToSync(None, True, True)


class Unsynced:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)  # an fsync ended
        self._known: OrderedDict[str, _Pending] = OrderedDict()
        self._syncing: dict[str, int] = {}  # file_id -> fsyncs running or waiting
        self._running: set[str] = set()  # files with an fsync running (one at a time)
        # directories this process made whose entry in their parent no fsync covered
        self._made: set[Path] = set()

    # ------------------------------------------------------------------ writers
    def wrote(self, file_id: str, objno: int | None) -> bool:
        """An object (``None``: another name, or an unlink) of the file is about to be
        renamed into place (or was removed). Call it after the temporary file exists
        and before the rename, under the lock that orders writes of that name.

        Returns whether an fsync of the file is in progress: the caller must then fsync
        the temporary file before the rename, since that fsync's directory fsync may
        make the new name durable after it has synced the object (see ``sync``)."""
        with self._lock:
            pending = self._touch(file_id)
            if pending is not None:
                pending.entries = True
                if objno is not None:
                    pending.objects.add(objno)
            return bool(self._syncing.get(file_id))

    def make_dir(self, file_id: str, make: Callable[[], list[Path]]) -> None:
        """Run ``make`` (makes the file's directory and those above it that are missing;
        returns the ones it made) with the lock held: a writer that finds the directory
        made calls :meth:`wrote` only after ``make`` returned, so it finds the file
        known."""
        with self._lock:
            made = make()
            self._made.update(made)
            if made:  # (the file's own directory last: nobody else makes it meanwhile)
                pending = self._touch(file_id)
                if pending is None:
                    pending = self._known[file_id] = _Pending()
                    self._evict()
                pending.new_dir = True

    def ancestors_unsynced(self, file_id: str) -> bool:
        """Whether the directories above the file's may hold an unsynced entry."""
        with self._lock:
            pending = self._touch(file_id)
            return pending is None or pending.new_dir

    def known(self, file_id: str) -> bool:
        with self._lock:
            return file_id in self._known

    def entry_unsynced(self, d: Path) -> bool:
        """Whether this process made directory ``d`` and no fsync of its parent followed."""
        with self._lock:
            return d in self._made

    def entry_synced(self, d: Path) -> None:
        """The parent of ``d`` was fsynced after ``d`` was made (or ``d`` is gone)."""
        with self._lock:
            self._made.discard(d)

    def ancestors_synced(self, file_id: str) -> None:
        """The directories above the file's were fsynced after it existed."""
        with self._lock:
            pending = self._touch(file_id)
            if pending is not None:
                pending.new_dir = False

    def forget(self, file_id: str) -> None:
        """The file is unknown from now on (deleted, or an fsync of it failed)."""
        with self._lock:
            self._known.pop(file_id, None)

    # ------------------------------------------------------------------ fsync
    @contextmanager
    def sync(self, file_id: str) -> Iterator[ToSync]:
        """One fsync of the file: what it must cover, taken (and cleared) at its start.

        Fsyncs of one file run one at a time: the notes one took may hold writes that
        the caller of a later one made, so the later one returns only after it. While
        one waits or runs, writers of the file sync their data before their rename
        (:meth:`wrote`), so that a rename its directory fsync makes durable never points
        to unsynced data; and it holds an object's write lock while it fsyncs that
        object, so a write of it either renamed before (its data is synced) or saw the
        fsync in progress. If the block raises, the file becomes unknown (its next
        fsync covers everything). For an unknown file (``objects`` None) the caller
        calls :meth:`track` while no write of the file is in progress, then lists the
        objects to sync.
        """
        with self._lock:
            self._syncing[file_id] = self._syncing.get(file_id, 0) + 1
            while file_id in self._running:
                self._done.wait()
            self._running.add(file_id)
            pending = self._touch(file_id)
            if pending is None:
                todo = EVERYTHING
            else:
                todo = ToSync(frozenset(pending.objects), pending.entries, pending.new_dir)
                # new_dir stays until the ancestors are synced (ancestors_synced): a
                # durable put meanwhile must not take them for synced
                self._known[file_id] = _Pending(new_dir=pending.new_dir)
        try:
            yield todo
        except BaseException:
            self.forget(file_id)
            raise
        finally:
            with self._lock:
                self._running.discard(file_id)
                self._syncing[file_id] -= 1
                if not self._syncing[file_id]:
                    del self._syncing[file_id]
                self._done.notify_all()

    def track(self, file_id: str) -> None:
        """Start noting the writes of an unknown file (its full fsync is under way)."""
        with self._lock:
            if self._touch(file_id) is None:
                self._known[file_id] = _Pending()
                self._evict()

    # ------------------------------------------------------------------ internals
    def _touch(self, file_id: str) -> _Pending | None:
        pending = self._known.get(file_id)
        if pending is not None:
            self._known.move_to_end(file_id)
        return pending

    def _evict(self) -> None:
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)  # unknown again: its next fsync is full

    def statistics(self) -> tuple[int, int]:
        """(files known, objects noted as unsynced in them)."""
        with self._lock:
            return len(self._known), sum(len(p.objects) for p in self._known.values())
