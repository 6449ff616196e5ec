"""Directory leases and reserved inode numbers in the store (docs/design/leases.md,
"Directory leases").

A client that made a directory may take its lease: while it holds it, no other client
changes or reads the directory's entries without recalling the lease first, so the
holder knows every name in it and creates files there without asking the MRC, sending
the creates afterwards in batches (``mrc.create_many``). The inode numbers of those
files come from ranges reserved for the client (``reserve_inos``), so a create sent again
after a lost reply is recognised and changes nothing. Leases and ranges end with the
client's lease. Like the rest of the namespace, each operation is one transaction; the
recalls are the handlers' (``xfs.mrc.leases.Recaller``).
"""

from __future__ import annotations

import errno

from xfs.mrc import acl as acls
from xfs.mrc import inodes as rows
from xfs.mrc import perms, quotas
from xfs.mrc.clients import client_of
from xfs.mrc.perms import W_OK, X_OK
from xfs.mrc.sql import Cursor, MetaStore
from xfs.mrc.xattrs import read_acl
from xfs.proto.errors import XfsError
from xfs.proto.methods import DirLease
from xfs.proto.records import Identity

MAX_RESERVE = 4096  # inode numbers one reserve_inos call may take
MAX_RANGES = 4  # ranges one client may hold in one volume at a time


class DirLeaseOps:
    _store: MetaStore

    def dir_lease_grant(self, caller: Identity, vol: str, ino: int, client: str) -> DirLease:
        """Grant ``client`` the lease of directory ``ino`` unless another client holds
        it, the caller does not own the directory or may not create there, or a default
        ACL would shape new files (the holder makes up their attributes itself). The
        change number is the caller's."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            client_of(cur, caller, client)
            if quotas.files_limited(cur, v.id, caller.principal):
                return DirLease(False)  # (each create is checked against the quota)
            node = rows.directory(cur, v, ino)
            if node.attr.owner != caller.principal:
                return DirLease(False)  # (nobody stalls a directory he shares with others)
            if not perms.may(caller, node.attr, W_OK | X_OK, node.access_acl):
                return DirLease(False)
            if read_acl(cur, v, ino, acls.DEFAULT) is not None:
                return DirLease(False)
            held = _holders(cur, v.id, ino, None)
            if held and held != [client]:
                return DirLease(False)
            cur.execute(
                "INSERT INTO dir_leases (client, volume, ino) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (client, v.id, ino),
            )
            owner, group, _ = perms.new_entry(caller, node.attr, 0o600, 0, False)
            return DirLease(True, 0, owner, group, v.striping.stripe_size)

    def dir_leases_in(self, vid: str, principal: str) -> list[int]:
        """The directories of volume ``vid`` leased to clients of ``principal`` (empty:
        to any client)."""
        sql = "SELECT d.ino FROM dir_leases d JOIN clients c ON c.id = d.client WHERE d.volume = ?"
        args: tuple[str, ...] = (vid,)
        if principal:
            sql, args = sql + " AND c.principal = ?", (vid, principal)
        with self._store.read() as cur:
            return sorted({int(r[0]) for r in cur.execute(sql, args)})

    def dir_lease_holders(self, vid: str, ino: int, but: str | None) -> list[str]:
        """The clients other than ``but`` that hold the directory's lease."""
        with self._store.read() as cur:
            return _holders(cur, vid, ino, but)

    def dir_lease_return(self, caller: Identity, vid: str, ino: int, client: str) -> None:
        with self._store.transaction() as cur:
            client_of(cur, caller, client)
            cur.execute(
                "DELETE FROM dir_leases WHERE client = ? AND volume = ? AND ino = ?",
                (client, vid, ino),
            )

    def dir_lease_revoke(self, vid: str, ino: int, but: str | None) -> list[str]:
        """End the directory's lease held by a client other than ``but`` (it did not give
        it back in time); returns that client."""
        with self._store.transaction() as cur:
            held = _holders(cur, vid, ino, but)
            cur.execute(
                "DELETE FROM dir_leases WHERE volume = ? AND ino = ? AND client IS DISTINCT FROM ?",
                (vid, ino, but),
            )
            return held

    def reserve_inos(self, caller: Identity, vol: str, client: str, count: int) -> tuple[int, int]:
        """Cut ``count`` numbers from the volume's next_ino for ``client``: (first, count)."""
        if not 1 <= count <= MAX_RESERVE:
            raise XfsError(errno.EINVAL, f"reserve {count} inode numbers: 1..{MAX_RESERVE}")
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            client_of(cur, caller, client)
            (held,) = cur.execute(
                "SELECT count(*) FROM ino_ranges WHERE client = ? AND volume = ? AND first <= last",
                (client, v.id),
            ).fetchone()
            if held >= MAX_RANGES:
                raise XfsError(
                    errno.EAGAIN, f"client {client} holds {held} unused inode ranges already"
                )
            (first,) = cur.execute(
                "UPDATE volumes SET next_ino = next_ino + ? WHERE id = ? RETURNING next_ino - ?",
                (count, v.id, count),
            ).fetchone()
            cur.execute(
                "INSERT INTO ino_ranges (client, volume, start, first, last) "
                "VALUES (?, ?, ?, ?, ?)",
                (client, v.id, first, first, first + count - 1),
            )
        return int(first), count


def take_ino(cur: Cursor, client: str, vid: str, ino: int) -> None:
    """Use ``ino`` from ``client``'s reserved ranges (numbers below it in its range are
    given up: a client hands its numbers out in increasing order); ESTALE if not there.
    The range stays, used up or not, until the client's lease ends: it proves which
    numbers this client took (``taken_by``)."""
    row = cur.execute(
        "SELECT start FROM ino_ranges WHERE client = ? AND volume = ? AND first <= ? AND ? <= last",
        (client, vid, ino, ino),
    ).fetchone()
    if row is None:
        raise XfsError(errno.ESTALE, f"inode number {ino} is not reserved for client {client}")
    cur.execute(
        "UPDATE ino_ranges SET first = ? WHERE volume = ? AND start = ?", (ino + 1, vid, row[0])
    )


def taken_by(cur: Cursor, client: str, vid: str, ino: int) -> bool:
    """Whether ``client`` took ``ino`` from its reserved ranges (made a file with it)."""
    row = cur.execute(
        "SELECT 1 FROM ino_ranges WHERE client = ? AND volume = ? AND start <= ? AND ? < first",
        (client, vid, ino, ino),
    ).fetchone()
    return row is not None


def _holders(cur: Cursor, vid: str, ino: int, but: str | None) -> list[str]:
    return [
        r[0]
        for r in cur.execute(
            "SELECT client FROM dir_leases WHERE volume = ? AND ino = ? "
            "AND client IS DISTINCT FROM ?",
            (vid, ino, but),
        )
    ]
