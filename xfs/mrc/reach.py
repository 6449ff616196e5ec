"""Whether a caller reaches an inode as a path walk would.

A request that names an inode by number (getattr, open, setattr, readdir, a lookup or
create in a directory, …) must get the answer a path walk from the volume's root would
give: the caller needs search permission on every directory above the inode, through at
least one of its links. An inode that one of the caller's client leases has open counts
as reached too, as a file descriptor keeps working after a directory above its file was
closed to its owner (mode bits of the inode itself are still checked by each call).

What a caller may search down to is cached per directory and caller (principal, role,
groups); every change to a directory's mode, owner, group or ACL, and every rename of a
directory, moves ``Namespace.perm_changes`` on, which empties the cache. A missing inode
passes: the call itself answers ESTALE or ENOENT.
"""

from __future__ import annotations

import errno
import stat
from typing import Protocol

from xfs.mrc import inodes as rows
from xfs.mrc import perms
from xfs.mrc.perms import X_OK
from xfs.mrc.sql import Cursor, MetaStore
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO, Identity

MAX_CACHED = 200_000  # directory answers kept; past it the caches start again

_Key = tuple[str, int, str, str, tuple[str, ...]]


class Changes(Protocol):
    @property
    def perm_changes(self) -> int: ...


class Reach:
    def __init__(self, store: MetaStore, changes: Changes) -> None:
        self._store = store
        self._changes = changes
        self._seen = changes.perm_changes
        self._into: dict[_Key, bool] = {}  # may the caller walk from the root into it
        self._dirs: set[_Key] = set()  # directories the caller reaches (their one link)

    def check(
        self, caller: Identity, volume: str, inos: tuple[int, ...], vid: str | None = None
    ) -> None:
        """EACCES unless ``caller`` reaches every inode of ``inos`` in ``volume`` (of id
        ``vid``, if the caller knows it: then directories known reached cost no query)."""
        if self._seen != self._changes.perm_changes or len(self._into) > MAX_CACHED:
            self._into.clear()
            self._dirs.clear()
            self._seen = self._changes.perm_changes
        who = (caller.principal, str(caller.role), caller.groups)
        if vid is not None and all((vid, ino, *who) in self._dirs for ino in inos):
            return
        with self._store.read() as cur:
            v = rows.volume(cur, volume)
            for ino in inos:
                if not self._reaches(cur, v, caller, ino):
                    raise XfsError(
                        errno.EACCES,
                        f"inode {ino} in volume {volume!r}: {caller.principal} may not search "
                        "a directory on every path to it",
                    )

    def _reaches(self, cur: Cursor, v: rows.Vol, caller: Identity, ino: int) -> bool:
        if ino == ROOT_INO:
            return True
        found = cur.execute(
            "SELECT DISTINCT d.parent, i.mode FROM dentries d JOIN inodes i "
            "ON i.volume = d.volume AND i.ino = d.ino WHERE d.volume = ? AND d.ino = ?",
            (v.id, ino),
        ).fetchall()
        parents = [int(p) for p, _ in found]
        if any(self._walks_into(cur, v, caller, p) for p in parents):
            if found and stat.S_ISDIR(found[0][1]):
                # a directory's one link moves only by a rename, which empties the cache
                self._dirs.add((v.id, ino, caller.principal, str(caller.role), caller.groups))
            return True
        if not parents and not _exists(cur, v.id, ino):
            return True  # (gone: the call answers ESTALE)
        return _open_by(cur, v.id, ino, caller.principal)

    def _walks_into(self, cur: Cursor, v: rows.Vol, caller: Identity, d: int) -> bool:
        """May ``caller`` search ``d`` and every directory above it?"""
        key = (v.id, d, caller.principal, str(caller.role), caller.groups)
        known = self._into.get(key)
        if known is not None:
            return known
        chain = [d]  # d and the directories above it, up to one known or the root
        while chain[-1] != ROOT_INO:
            up = rows.parent_of(cur, v, chain[-1])
            if up == chain[-1]:
                return self._remember(key, chain, False)  # linked nowhere: not reached
            up_known = self._into.get((v.id, up, *key[2:]))
            if up_known is not None:
                if not up_known:
                    return self._remember(key, chain, False)
                break
            chain.append(up)
        allowed = True
        for ino in reversed(chain):
            node = rows.inode(cur, v, ino)
            allowed = allowed and perms.may(caller, node.attr, X_OK, node.access_acl)
            self._into[(v.id, ino, *key[2:])] = allowed
        return allowed

    def _remember(self, key: _Key, chain: list[int], allowed: bool) -> bool:
        for ino in chain:
            self._into[(key[0], ino, *key[2:])] = allowed
        return allowed


def _exists(cur: Cursor, vid: str, ino: int) -> bool:
    row = cur.execute("SELECT 1 FROM inodes WHERE volume = ? AND ino = ?", (vid, ino)).fetchone()
    return row is not None


def _open_by(cur: Cursor, vid: str, ino: int, principal: str) -> bool:
    """Has one of ``principal``'s client leases the inode open?"""
    row = cur.execute(
        "SELECT 1 FROM opens o JOIN clients c ON c.id = o.client "
        "WHERE o.volume = ? AND o.ino = ? AND c.principal = ? LIMIT 1",
        (vid, ino, principal),
    ).fetchone()
    return row is not None
