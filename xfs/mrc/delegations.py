"""Delegations: a user lets a worker node act for it inside one directory, for a while.

A delegation is a row of the store (table ``delegations``) mirrored in memory, so that
the check made before every request of a worker's connection costs a dict lookup and a
clock reading: a revocation or an expiry takes effect on the next request. Its token is
``xfsd1.<id>.<secret>``; the MRC keeps only the SHA-256 of the secret, and the token is
good only in the hands of the worker certificate it names. The worker's connection acts
as a ``Delegated`` identity: the grantor's principal, VO and groups with role standard,
and the worker's certificate fingerprint (the XCaps it is given are bound to the
connection the OSDs will see). ``confine`` keeps it inside the delegated directory.
See docs/design/delegation.md.

Every call is synchronous (one transaction at most): a handler that checks a delegation
and then calls the namespace does so with no await in between.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from xfs.common.clock import Clock
from xfs.mrc import roles
from xfs.mrc.inodes import is_ancestor_of
from xfs.mrc.sql import Cursor, MetaStore
from xfs.proto.errors import XfsError
from xfs.proto.records import Identity, Kind

TOKEN_PREFIX = "xfsd1"
MAX_LIFETIME = 7 * 86400.0  # default of MRCConfig.max_delegation
RETAIN_NS = 7 * 86400 * 10**9  # an ended delegation is still listed for this long
_MAX_DEPTH = 4096  # directories walked up from a delegated directory (a corrupt store)
_COLS = (
    "id, secret, grantor, vo, groups, grantee, volume, root, path, created_ns, expires_ns, "
    "revoked_ns"
)


@dataclass(frozen=True)
class Delegated(Identity):
    """Who a worker's connection acts as under delegation ``delegation``: the grantor,
    confined to directory ``root`` of volume (id) ``volume``; ``worker`` is the principal
    of the certificate on the connection, whose ``fingerprint`` this identity carries."""

    delegation: str
    worker: str
    volume: str
    root: int


@dataclass(frozen=True)
class Delegation:
    """A row of ``delegations`` (times in ns of the MRC clock)."""

    id: str
    secret: bytes  # SHA-256 of the token's secret
    grantor: str
    vo: str
    groups: tuple[str, ...]
    grantee: str
    volume: str  # volume id
    root: int
    path: str
    created_ns: int
    expires_ns: int
    revoked_ns: int | None = None

    def ended(self, now_ns: int) -> str | None:
        """How the delegation ended ("was revoked", "has expired"), or None if in force."""
        if self.revoked_ns is not None:
            return "was revoked"
        if now_ns >= self.expires_ns:
            return "has expired"
        return None


def token_of(id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}.{id}.{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """(id, secret) of a token; EACCES if it is not one."""
    prefix, _, rest = token.strip().partition(".")
    id, _, secret = rest.partition(".")
    if prefix != TOKEN_PREFIX or not id or not secret or len(token) > 256:
        raise XfsError(errno.EACCES, "not a delegation token")
    return id, secret


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _row(r: Any) -> Delegation:
    id, secret, grantor, vo, groups, grantee, volume, root, path, created, expires, revoked = r
    return Delegation(
        id,
        bytes(secret),
        grantor,
        vo,
        tuple(json.loads(groups)),
        grantee,
        volume,
        root,
        path,
        created,
        expires,
        revoked,
    )


def _path(cur: Cursor, vid: str, root: int) -> list[tuple[int, bytes]]:
    """The entries (parent, name) from directory ``root`` up to the volume's root."""
    steps: list[tuple[int, bytes]] = []
    ino = root
    for _ in range(_MAX_DEPTH):
        row = cur.execute(
            "SELECT parent, name FROM dentries WHERE volume = ? AND ino = ?", (vid, ino)
        ).fetchone()
        if row is None:
            break
        ino = int(row[0])
        steps.append((ino, bytes(row[1])))
    return steps


class Delegations:
    """The MRC's delegations over one ``MetaStore``; ``load()`` before use."""

    def __init__(self, store: MetaStore, clock: Clock, max_lifetime: float = MAX_LIFETIME) -> None:
        self._store = store
        self._clock = clock
        self.max_lifetime = max_lifetime
        self._by_id: dict[str, Delegation] = {}

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    def load(self) -> None:
        """(Re)read every delegation from the store (after a volume went, too)."""
        with self._store.read() as cur:
            found = cur.execute(f"SELECT {_COLS} FROM delegations").fetchall()
        self._by_id = {d.id: d for d in map(_row, found)}

    # ------------------------------------------------------------------ grantor's side
    def create(
        self, grantor: Identity, volume: str, root: int, grantee: str, lifetime: float, path: str
    ) -> tuple[Delegation, str]:
        """A new delegation of ``grantor`` to ``grantee`` on directory ``root`` of volume
        (id) ``volume``, and its token. The caller has checked the directory."""
        denial = roles.delegation_denial(grantor, grantee, lifetime, self.max_lifetime)
        if denial is not None:
            raise XfsError(errno.EINVAL, denial)
        now = self._now_ns()
        id, secret = secrets.token_hex(8), secrets.token_hex(32)
        d = Delegation(
            id,
            _hash(secret),
            grantor.principal,
            grantor.vo,
            tuple(grantor.groups),
            grantee,
            volume,
            root,
            path[:4096],
            now,
            now + max(1, int(lifetime * 1e9)),
        )
        with self._store.transaction() as cur:
            gone = cur.execute(
                "DELETE FROM delegations WHERE expires_ns < ? OR revoked_ns < ? RETURNING id",
                (now - RETAIN_NS, now - RETAIN_NS),
            ).fetchall()
            cur.execute(
                f"INSERT INTO delegations ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d.id,
                    d.secret,
                    d.grantor,
                    d.vo,
                    json.dumps(list(d.groups)),
                    d.grantee,
                    d.volume,
                    d.root,
                    d.path,
                    d.created_ns,
                    d.expires_ns,
                    None,
                ),
            )
        for (old,) in gone:
            self._by_id.pop(old, None)
        self._by_id[id] = d
        return d, token_of(id, secret)

    def get(self, id: str) -> Delegation:
        d = self._by_id.get(id)
        if d is None:
            raise XfsError(errno.ENOENT, f"no delegation {id!r:.40}")
        return d

    def revoke(self, caller: Identity, id: str) -> Delegation:
        """Revoke (idempotent): by the grantor or a super user of the grantor's VO."""
        d = self.get(id)
        if not roles.may_manage_delegation(caller, d.grantor, d.vo):
            raise XfsError(
                errno.EPERM,
                f"{caller.principal} may not revoke delegation {id} of {d.grantor}: only "
                f"the grantor or a super user of VO {d.vo!r} may",
            )
        if d.revoked_ns is None:
            now = self._now_ns()
            with self._store.transaction() as cur:
                cur.execute("UPDATE delegations SET revoked_ns = ? WHERE id = ?", (now, id))
            d = self._by_id[id] = dataclasses.replace(d, revoked_ns=now)
        return d

    def volume_name(self, d: Delegation) -> str:
        with self._store.read() as cur:
            row = cur.execute("SELECT name FROM volumes WHERE id = ?", (d.volume,)).fetchone()
        return "?" if row is None else str(row[0])

    def visible(self, caller: Identity) -> list[tuple[Delegation, str]]:
        """The delegations ``caller`` may manage, oldest first, with their volume's name."""
        with self._store.read() as cur:
            names = dict(cur.execute("SELECT id, name FROM volumes").fetchall())
        mine = [
            d for d in self._by_id.values() if roles.may_manage_delegation(caller, d.grantor, d.vo)
        ]
        mine.sort(key=lambda d: (d.created_ns, d.id))
        return [(d, str(names.get(d.volume, "?"))) for d in mine]

    # ------------------------------------------------------------------ worker's side
    def in_force(self, id: str) -> Delegation:
        """The delegation, if it still is in force; EACCES if it ended or is gone."""
        d = self._by_id.get(id)
        if d is None:
            raise XfsError(errno.EACCES, f"delegation {id} no longer exists")
        ended = d.ended(self._now_ns())
        if ended is not None:
            raise XfsError(errno.EACCES, f"delegation {id} of {d.grantor} {ended}")
        return d

    def assume(self, worker: Identity, token: str) -> Delegation:
        """The delegation ``token`` names, for the worker certificate it was made for."""
        id, secret = parse_token(token)
        d = self._by_id.get(id)
        if d is None or not hmac.compare_digest(_hash(secret), d.secret):
            raise XfsError(errno.EACCES, "not a valid delegation token")
        if worker.principal != d.grantee:
            raise XfsError(
                errno.EACCES,
                f"delegation {id} is for {d.grantee}, not {worker.principal}: refused",
            )
        return self.in_force(id)

    def acting(self, worker: Identity, id: str) -> Callable[[], Identity]:
        """Who a connection of ``worker`` that assumed delegation ``id`` acts as, asked
        before each of its requests (EACCES once the delegation ended)."""

        def now() -> Identity:
            d = self.in_force(id)
            return Delegated(
                principal=d.grantor,
                vo=d.vo,
                kind=Kind.USER,
                role=roles.DELEGATED_ROLE,
                groups=d.groups,
                fingerprint=worker.fingerprint,
                delegation=d.id,
                worker=worker.principal,
                volume=d.volume,
                root=d.root,
            )

        return now

    # ------------------------------------------------------------------ confinement
    def confine(
        self, who: Delegated, volume: str, inos: Iterable[int] = (), *, see: bool = False
    ) -> None:
        """EACCES unless every inode of ``inos`` of volume (id) ``volume`` is inside the
        delegated directory (through any of its links). ``see``: the directories on the
        path from the volume's root down to it count too (getattr, access)."""
        if volume != who.volume:
            raise XfsError(errno.EACCES, f"delegation {who.delegation} covers another volume only")
        inos = list(inos)
        if not inos:
            return
        with self._store.read() as cur:
            above: set[int] | None = None
            for ino in inos:
                if is_ancestor_of(cur, volume, who.root, ino):
                    continue
                if see:
                    if above is None:
                        above = {p for p, _ in _path(cur, volume, who.root)}
                    if ino in above:
                        continue
                raise self._outside(who, ino)

    def confine_lookup(self, who: Delegated, volume: str, parent: int, name: bytes) -> None:
        """EACCES unless a lookup of ``name`` in ``parent`` stays inside the delegated
        directory, or walks the path down to it (the next step, ``.`` or ``..`` of a
        directory on that path)."""
        self.confine(who, volume)
        with self._store.read() as cur:
            if is_ancestor_of(cur, volume, who.root, parent):
                return
            steps = _path(cur, volume, who.root)
        if parent in {p for p, _ in steps} and (name in (b".", b"..") or (parent, name) in steps):
            return
        raise self._outside(who, parent)

    @staticmethod
    def _outside(who: Delegated, ino: int) -> XfsError:
        return XfsError(
            errno.EACCES,
            f"inode {ino} is outside directory {who.root} delegated to {who.worker} "
            f"(delegation {who.delegation})",
        )
