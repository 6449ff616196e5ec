"""Client leases, open files and locks of the namespace.

A client (one mount's session for one credential) takes a lease and renews it; the
files it registers as open and the locks it holds end with the lease: on an orderly
goodbye, or when the MRC sweeps leases that were not renewed in time (a client that
died or was cut off). An inode that lost its last name stays, as an orphan, while some
client has it open, and is freed with the last close.

Like the namespace, every operation is one synchronous transaction. Lock waiting (the
F_SETLKW kind) is not here: the handlers wait for a change and ask again.
"""

from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass

from xfs.mrc import inodes as rows
from xfs.mrc import locks
from xfs.mrc.sql import Cursor, MetaStore
from xfs.proto.errors import XfsError
from xfs.proto.records import Identity

_U64 = 2**64
_I63 = 2**63


def _signed(owner: int) -> int:
    """The kernel's u64 lock owner as SQLite's signed 64-bit integer."""
    return owner - _U64 if owner >= _I63 else owner


def _unsigned(owner: int) -> int:
    return owner + _U64 if owner < 0 else owner


@dataclass(frozen=True)
class Ended:
    """What ending leases released: files to delete and inodes whose locks changed."""

    clients: int
    pending: list[int]
    unlocked: list[tuple[str, int]]  # (volume id, ino): locks or append leases ended


class ClientOps:
    _store: MetaStore

    # ------------------------------------------------------------------ leases
    def client_open(self, caller: Identity, lease_ns: int) -> tuple[str, int]:
        """A new lease for ``caller``: (client id, expiry)."""
        client = secrets.token_hex(16)
        expires = self._store.clock() + lease_ns
        with self._store.transaction() as cur:
            cur.execute(
                "INSERT INTO clients (id, principal, expires_ns) VALUES (?, ?, ?)",
                (client, caller.principal, expires),
            )
        return client, expires

    def client_renew(self, caller: Identity, client: str, lease_ns: int) -> int:
        """Extend a live lease; a lease that ended cannot be renewed (ESTALE)."""
        with self._store.transaction() as cur:
            now = self._store.clock()
            client_of(cur, caller, client)
            # past its expiry the lease has ended, even before the sweeper ends it
            row = cur.execute("SELECT expires_ns FROM clients WHERE id = ?", (client,)).fetchone()
            if row[0] < now:  # (the same test as expire_clients)
                raise XfsError(errno.ESTALE, f"client lease {client} has expired")
            expires = now + lease_ns
            cur.execute("UPDATE clients SET expires_ns = ? WHERE id = ?", (expires, client))
        return expires

    def extend_clients(self, lease_ns: int) -> int:
        """At the MRC's start: every client lease lasts at least ``lease_ns`` from now, a
        grace period in which its client, cut off while the MRC was down, renews it. How
        many leases there are."""
        with self._store.transaction() as cur:
            cur.execute(
                "UPDATE clients SET expires_ns = greatest(expires_ns, ?)",
                (self._store.clock() + lease_ns,),
            )
            return int(cur.rowcount)

    def client_close(self, caller: Identity, client: str) -> Ended:
        """The client says goodbye: its opens and locks end now."""
        with self._store.transaction() as cur:
            client_of(cur, caller, client)
            return _end(cur, [client])

    def expire_clients(self) -> Ended:
        """End every lease that was not renewed in time."""
        with self._store.transaction() as cur:
            now = self._store.clock()
            ids = [r[0] for r in cur.execute("SELECT id FROM clients WHERE expires_ns < ?", (now,))]
            return _end(cur, ids)

    # ------------------------------------------------------------------ opens
    def close(self, caller: Identity, vol: str, ino: int, client: str) -> int | None:
        """The client closed its last handle of the inode. Returns the pending deletion
        id if that freed an orphan."""
        with self._store.transaction() as cur:
            client_of(cur, caller, client)
            v = rows.volume(cur, vol)
            cur.execute(
                "DELETE FROM opens WHERE client = ? AND volume = ? AND ino = ?",
                (client, v.id, ino),
            )
            cur.execute(
                "DELETE FROM locks WHERE client = ? AND volume = ? AND ino = ?",
                (client, v.id, ino),
            )
            return _free_if_orphan(cur, v.id, ino)

    def append(
        self, caller: Identity, vol: str, ino: int, client: str, length: int, lease: bool = False
    ) -> tuple[int, bool]:
        """O_APPEND: reserve ``length`` bytes at the end of the file for one write, and
        return where they start. The size grows now, so concurrent appenders, on this
        client or any other, get disjoint ranges in the order the MRC sees them.

        With ``lease``, the client also takes the file's append lease when no other
        client has the file open for writing: it then appends at its own idea of the end
        without asking, until it closes the file or gives the lease back. Returns
        (offset, leased). While another client holds the lease this raises EAGAIN (after
        the EBADF of a caller that is no writer): the caller recalls it and asks again."""
        if length < 0:
            raise XfsError(errno.EINVAL, f"negative append length {length}")
        with self._store.transaction() as cur:
            client_of(cur, caller, client)
            v = rows.volume(cur, vol)
            row = cur.execute(
                "SELECT writable FROM opens WHERE client = ? AND volume = ? AND ino = ?",
                (client, v.id, ino),
            ).fetchone()
            if row is None or not row[0]:
                raise XfsError(errno.EBADF, f"inode {ino} is not open for writing on {client}")
            if _lease_holders(cur, v.id, ino, client):
                raise XfsError(errno.EAGAIN, f"another client holds the append lease of {ino}")
            node = rows.inode(cur, v, ino)
            now = self._store.clock()
            offset = node.attr.size
            rows.set_inode(cur, v, node, size=offset + length, mtime_ns=now, ctime_ns=now)
            leased = lease and not _other_writers(cur, v.id, ino, client)
            if leased:
                cur.execute(
                    "UPDATE opens SET append_lease = 1 WHERE client = ? AND volume = ? AND ino = ?",
                    (client, v.id, ino),
                )
            return offset, leased

    def append_lease_holders(self, vid: str, ino: int, but: str | None) -> list[str]:
        """The clients other than ``but`` that hold the inode's append lease."""
        with self._store.read() as cur:
            return _lease_holders(cur, vid, ino, but)

    def lease_return(self, caller: Identity, vid: str, ino: int, client: str) -> None:
        """The client gives back its append lease of the inode (if it holds one)."""
        with self._store.transaction() as cur:
            client_of(cur, caller, client)
            _drop_leases(cur, vid, ino, client)

    def lease_revoke(self, vid: str, ino: int, but: str | None) -> list[str]:
        """End the inode's append leases held by clients other than ``but`` (they did not
        give them back in time); returns those clients."""
        with self._store.transaction() as cur:
            holders = _lease_holders(cur, vid, ino, but)
            for client in holders:
                _drop_leases(cur, vid, ino, client)
            return holders

    def check_client(self, caller: Identity, client: str) -> None:
        """ESTALE or EPERM unless ``client`` is a live lease of ``caller``."""
        with self._store.read() as cur:
            client_of(cur, caller, client)

    # ------------------------------------------------------------------ locks
    def lock(
        self, caller: Identity, vol: str, ino: int, request: locks.Request
    ) -> locks.Held | None:
        """Set or remove a lock: returns the conflicting lock (nothing changed) or None
        (done)."""
        if not locks.check_range(request.start, request.end):
            raise XfsError(errno.EINVAL, f"bad lock range {request.start}..{request.end}")
        with self._store.transaction() as cur:
            v = self._lockable(cur, caller, vol, ino, request.client)
            held = _held(cur, v.id, ino)
            conflict = locks.conflict(held, request)
            if conflict is not None:
                return conflict
            _store_locks(cur, v.id, ino, locks.apply(held, request))
            return None

    def test_lock(
        self, caller: Identity, vol: str, ino: int, request: locks.Request
    ) -> locks.Held | None:
        """F_GETLK: the lock that would stop ``request``, if any."""
        with self._store.read() as cur:
            v = self._lockable(cur, caller, vol, ino, request.client)
            return locks.conflict(_held(cur, v.id, ino), request)

    def release_owner(
        self, caller: Identity, vol: str, ino: int, client: str, owner: int, family: str
    ) -> bool:
        """An owner let go of all its locks of ``family`` on the inode (a process closed
        the file, an open file description went). Returns whether any lock went."""
        with self._store.transaction() as cur:
            v = self._lockable(cur, caller, vol, ino, client)
            held = _held(cur, v.id, ino)
            left = locks.release_owner(held, client, owner, family)
            if len(left) == len(held):
                return False
            _store_locks(cur, v.id, ino, left)
            return True

    def _lockable(self, cur: Cursor, caller: Identity, vol: str, ino: int, client: str) -> rows.Vol:
        """The volume, once sure the caller's client has the inode open."""
        client_of(cur, caller, client)
        v = rows.volume(cur, vol)
        if not _is_open_by(cur, client, v.id, ino):
            raise XfsError(errno.EBADF, f"inode {ino} is not open on client {client}")
        return v


def register_open(
    cur: Cursor, caller: Identity, client: str, vid: str, ino: int, flags: int
) -> None:
    """Record that ``client`` has the inode open (part of the open's transaction)."""
    client_of(cur, caller, client)
    writable = int(flags & os.O_ACCMODE != os.O_RDONLY)
    cur.execute(
        "INSERT INTO opens (client, volume, ino, writable) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (client, volume, ino) "
        "DO UPDATE SET writable = greatest(opens.writable, excluded.writable)",
        (client, vid, ino, writable),
    )


def _lease_holders(cur: Cursor, vid: str, ino: int, but: str | None) -> list[str]:
    return [
        r[0]
        for r in cur.execute(
            "SELECT client FROM opens WHERE volume = ? AND ino = ? AND append_lease = 1 "
            "AND client IS DISTINCT FROM ?",
            (vid, ino, but),
        )
    ]


def _other_writers(cur: Cursor, vid: str, ino: int, client: str) -> bool:
    row = cur.execute(
        "SELECT 1 FROM opens WHERE volume = ? AND ino = ? AND writable = 1 AND client != ? LIMIT 1",
        (vid, ino, client),
    ).fetchone()
    return row is not None


def _drop_leases(cur: Cursor, vid: str, ino: int, client: str) -> None:
    cur.execute(
        "UPDATE opens SET append_lease = 0 WHERE client = ? AND volume = ? AND ino = ?",
        (client, vid, ino),
    )


def client_of(cur: Cursor, caller: Identity, client: str) -> None:
    row = cur.execute("SELECT principal FROM clients WHERE id = ?", (client,)).fetchone()
    if row is None:
        raise XfsError(errno.ESTALE, f"client lease {client} has ended")
    if row[0] != caller.principal:
        raise XfsError(errno.EPERM, f"client lease {client} belongs to another principal")


def _is_open_by(cur: Cursor, client: str, vid: str, ino: int) -> bool:
    row = cur.execute(
        "SELECT 1 FROM opens WHERE client = ? AND volume = ? AND ino = ?", (client, vid, ino)
    ).fetchone()
    return row is not None


def _held(cur: Cursor, vid: str, ino: int) -> list[locks.Held]:
    return [
        locks.Held(client, _unsigned(owner), family, mode, first, last, pid)
        for client, owner, family, mode, first, last, pid in cur.execute(
            "SELECT client, owner, family, mode, first, last, pid FROM locks "
            "WHERE volume = ? AND ino = ?",
            (vid, ino),
        )
    ]


def _store_locks(cur: Cursor, vid: str, ino: int, held: list[locks.Held]) -> None:
    cur.execute("DELETE FROM locks WHERE volume = ? AND ino = ?", (vid, ino))
    cur.executemany(
        "INSERT INTO locks (volume, ino, client, owner, family, mode, first, last, pid) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (vid, ino, h.client, _signed(h.owner), h.family, h.mode, h.start, h.end, h.pid)
            for h in held
        ],
    )


def _free_if_orphan(cur: Cursor, vid: str, ino: int) -> int | None:
    """Free an inode that has no name left and that no client has open."""
    row = cur.execute(
        "SELECT nlink, xloc FROM inodes WHERE volume = ? AND ino = ?", (vid, ino)
    ).fetchone()
    if row is None or row[0] > 0 or rows.is_open(cur, vid, ino):
        return None
    return rows.drop_inode_of(cur, vid, ino, row[1])


def _end(cur: Cursor, ids: list[str]) -> Ended:
    pending: list[int] = []
    unlocked: set[tuple[str, int]] = set()
    for client in ids:
        unlocked.update(
            cur.execute("SELECT DISTINCT volume, ino FROM locks WHERE client = ?", (client,))
        )
        unlocked.update(  # waiters for its append leases go on too
            cur.execute(
                "SELECT volume, ino FROM opens WHERE client = ? AND append_lease = 1", (client,)
            )
        )
        unlocked.update(  # and for its directory leases
            cur.execute("SELECT volume, ino FROM dir_leases WHERE client = ?", (client,))
        )
        opened = list(cur.execute("SELECT volume, ino FROM opens WHERE client = ?", (client,)))
        cur.execute("DELETE FROM clients WHERE id = ?", (client,))  # cascades
        for vid, ino in opened:
            freed = _free_if_orphan(cur, vid, ino)
            if freed is not None:
                pending.append(freed)
    return Ended(len(ids), pending, sorted(unlocked))
