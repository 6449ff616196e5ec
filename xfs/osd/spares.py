"""Inodes of deleted objects, kept empty for the next objects written.

Every object write makes a new inode (a temporary file, then a rename), and a deleted
file frees one inode per object. On ext4 the allocator skips inodes freed in the last
minute (five when their inode table block is still dirty, as it stays on a file system
without a journal), and it does so by reading past each of them from the start of the
group for every new inode: after a 1 GiB file of 1 MiB objects is deleted, the next
writes spend a quarter of the OSD's CPU finding inodes (measured with ``perf``, see
docs/design/transport.md). So a deleted object's file is not unlinked: it is renamed
into ``spare/``, truncated to nothing, and the next temporary file is that inode,
renamed back out of ``spare/`` and written. Up to ``MAX_SPARES`` are kept; more are
unlinked.

Only whole deletions give inodes (:meth:`ObjectStore.delete`): nobody may read a file
the MRC deletes. An object that is replaced or truncated away is unlinked as before,
since a reader may still hold it open and must see its old content whole.

Crashes: a spare is always empty or about to be (the truncate follows the rename), so
:meth:`Spares.open` truncates what it finds. A spare that is also an object's name (a
rename out of ``spare/`` whose removal a power loss undid on a file system that does not
order them) has two links and is unlinked from ``spare/``, never truncated. Nothing here
is fsynced: losing a spare loses an empty inode.

Thread-safe: the store calls it from its worker threads.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SPARES = 4096  # empty inodes kept (an OSD's worth of deleted objects to reuse)
MODE = 0o600  # of every object file


class Spares:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._names: list[str] = []
        self._next = 0
        self._lock = threading.Lock()

    def open(self) -> None:
        """Make the directory, or take up what a previous run left in it."""
        self.directory.mkdir(exist_ok=True)
        names: list[str] = []
        for name in os.listdir(self.directory):
            path = self.directory / name
            try:
                if os.lstat(path).st_nlink > 1 or len(names) >= MAX_SPARES:
                    path.unlink()
                    continue
                os.truncate(path, 0)
            except OSError as e:  # not ours to keep: leave it
                log.warning("spare inode %s left alone: %s", path, e)
                continue
            names.append(name)
        with self._lock:
            self._names = names
            self._next = max((int(n, 16) for n in names if _hex(n)), default=-1) + 1

    def __len__(self) -> int:
        return len(self._names)

    def give(self, path: Path) -> None:
        """``path`` (a regular file) goes: into the spares, emptied, or unlinked."""
        with self._lock:
            full = len(self._names) >= MAX_SPARES
            if not full:
                name = f"{self._next:x}"
                self._next += 1
        if full:
            path.unlink(missing_ok=True)
            return
        spare = self.directory / name
        try:
            os.rename(path, spare)
        except FileNotFoundError:
            return
        os.truncate(spare, 0)
        os.chmod(spare, MODE)  # (a record's file was 0644; objects are the OSD's alone)
        with self._lock:
            self._names.append(name)

    def take(self, path: Path) -> bool:
        """Rename a spare (empty) to ``path``; False if there is none. FileNotFoundError
        if ``path``'s directory is missing (the spare stays)."""
        while True:
            with self._lock:
                if not self._names:
                    return False
                name = self._names.pop()
            try:
                os.rename(self.directory / name, path)
                return True
            except FileNotFoundError:
                if not path.parent.is_dir():
                    with self._lock:
                        self._names.append(name)
                    raise
                # the spare itself went (removed by hand): try the next one


def _hex(name: str) -> bool:
    try:
        int(name, 16)
    except ValueError:
        return False
    return True
