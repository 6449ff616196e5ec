"""Replication policies of volumes, directories and files, and the xattrs that show them.

Where a policy (``FilePolicy``) lives (docs/design/replication.md, "Policies"):

- a directory's in its ``xattrs`` row ``xfs.policy`` (msgpack of ``FilePolicy.to_wire``);
  ``mkdir`` copies the parent's row to the new directory (inheritance by copy). A
  directory without a row follows its volume;
- a volume's is its root directory's; a volume without one has the built-in policy:
  ``none``, factor 1, the volume's striping, the default placement;
- a file's in its XLocSet (``of_xloc``, ``apply``); its replicas are placed, when added
  later (here or by the healer), by its volume's placement policy.

A ``ronly`` directory policy always seals on close (that is what it does to new files);
on a file, ``ronly`` with ``seal_on_close`` is a seal still to come, without it a seal now.

The virtual xattrs, answered by the MRC (``Policies``) and never listed:

============================  =====================================  ====================
name                          get                                    set (owner or super)
============================  =====================================  ====================
``xfs.policy``                JSON of the effective policy           JSON, merged onto it
``xfs.replicas``              JSON of the file's replicas            -
``xfs.replica.add``           -                                      OSD uuids or empty
``xfs.replica.remove``        -                                      an OSD uuid
``xfs.seal``                  -                                      (anything): seal now
============================  =====================================  ====================

The JSON of a policy is flat: ``replication``, ``factor``, ``fill``, ``seal_on_close``,
``stripe_size``, ``width`` and ``placement`` (``require``, ``spread``, ``sort``); a set
gives any subset of those keys.
"""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
import stat
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import msgpack

from xfs.mrc import inodes as rows
from xfs.mrc import perms, placement, replicas
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.store import Store
from xfs.mrc.volumes import check_striping
from xfs.proto.errors import ProtocolError, XfsError
from xfs.proto.records import (
    ROOT_INO,
    XATTR_SIZE_MAX,
    FilePolicy,
    Identity,
    PlacementPolicy,
    StripingPolicy,
    UpdatePolicy,
    XLocSet,
)

POLICY = b"xfs.policy"  # stored on directories; virtual everywhere
REPLICAS = b"xfs.replicas"
REPLICA_ADD = b"xfs.replica.add"
REPLICA_REMOVE = b"xfs.replica.remove"
SEAL = b"xfs.seal"
NAMES = frozenset({POLICY, REPLICAS, REPLICA_ADD, REPLICA_REMOVE, SEAL})
"""The xattr names this module answers (``MRCHandlers`` hands them over)."""

_KEYS = frozenset(
    {"replication", "factor", "fill", "seal_on_close", "stripe_size", "width", "placement"}
)
_PLACEMENT_KEYS = frozenset({"require", "spread", "sort"})

Place = Callable[[PlacementPolicy, int, int, Sequence[str]], list[list[str]]]
"""(placement policy, replicas, stripe width, OSDs the file uses already) -> the OSDs of
each new replica, as ``placement.place`` chooses them."""


# ---------------------------------------------------------------------- pure
def default(striping: StripingPolicy) -> FilePolicy:
    """The policy of a volume that has none: unreplicated, its striping."""
    return FilePolicy(striping=striping)


def check(policy: FilePolicy) -> FilePolicy:
    """``policy`` if it is valid (else EINVAL), as a directory keeps it."""
    replicas.check_policy(policy)
    placement.check_policy(policy.placement)
    check_striping(policy.striping)
    if policy.replication is UpdatePolicy.RONLY:  # new files are sealed on close
        return replace(policy, seal_on_close=True)
    return policy


def to_json(policy: FilePolicy) -> bytes:
    wire = policy.to_wire()
    wire.update(wire.pop("striping"))
    return json.dumps(wire, sort_keys=True).encode()


def parse(value: bytes) -> dict[str, Any]:
    """The changes a set of ``xfs.policy`` asks for (keys and shape checked, EINVAL)."""
    try:
        changes = json.loads(bytes(value).decode())
    except ValueError as e:
        raise XfsError(errno.EINVAL, f"a policy is JSON: {e}") from None
    if not isinstance(changes, dict):
        raise XfsError(errno.EINVAL, "a policy is a JSON object")
    unknown = set(changes) - _KEYS
    if unknown:
        raise XfsError(
            errno.EINVAL, f"unknown policy keys {sorted(unknown)}; known: {sorted(_KEYS)}"
        )
    where = changes.get("placement", {})
    if not isinstance(where, dict) or set(where) - _PLACEMENT_KEYS:
        raise XfsError(
            errno.EINVAL, f"placement is an object with keys {sorted(_PLACEMENT_KEYS)}"
        )
    return changes


def merge(policy: FilePolicy, changes: dict[str, Any]) -> FilePolicy:
    """``policy`` with ``changes`` (see ``parse``); going to ``none`` without a factor
    goes to factor 1. Types are checked (EINVAL); values are ``check``'s."""
    wire = policy.to_wire()
    striping = wire.pop("striping")
    for key, value in changes.items():
        if key in ("stripe_size", "width"):
            striping[key] = value
        elif key == "placement":
            wire["placement"].update(value)
        else:
            wire[key] = value
    if changes.get("replication") == UpdatePolicy.NONE.value and "factor" not in changes:
        wire["factor"] = 1
    wire["striping"] = striping
    try:
        return FilePolicy.from_wire(wire)
    except ProtocolError as e:
        raise XfsError(errno.EINVAL, f"bad policy: {e.message}") from None


def _pending_seal(xloc: XLocSet) -> bool:
    return xloc.seal_on_close and xloc.update_policy is UpdatePolicy.NONE


def of_xloc(xloc: XLocSet, where: PlacementPolicy) -> FilePolicy:
    """The policy of a file: an unreplicated file that is sealed on close is ``ronly``
    still to come. ``where``: its volume's placement."""
    return FilePolicy(
        UpdatePolicy.RONLY if _pending_seal(xloc) else xloc.update_policy,
        xloc.factor,
        xloc.fill,
        xloc.seal_on_close,
        xloc.replicas[0].striping,
        where,
    )


def apply(xloc: XLocSet, policy: FilePolicy) -> XLocSet:
    """The file's XLocSet under ``policy`` (its striping unchanged): ``replicas.set_policy``,
    except that ``ronly`` with ``seal_on_close`` leaves the file writable until its last
    writer closes it."""
    if (
        policy.replication is UpdatePolicy.RONLY
        and policy.seal_on_close
        and xloc.update_policy is not UpdatePolicy.RONLY
    ):
        if xloc.update_policy is UpdatePolicy.RW:
            xloc = replicas.set_policy(xloc, replace(policy, replication=UpdatePolicy.RW))
            return replace(xloc, seal_on_close=True)
        return replace(
            xloc,
            version=xloc.version + 1,
            factor=policy.factor,
            fill=policy.fill,
            seal_on_close=True,
        )
    xloc = replicas.set_policy(xloc, policy)
    if policy.seal_on_close and xloc.update_policy is not UpdatePolicy.RONLY:
        xloc = replace(xloc, seal_on_close=True)
    return xloc


def new_layout(policy: FilePolicy, place: Place) -> XLocSet:
    """The XLocSet of a new file under ``policy``: ``factor`` replicas for ``rw`` (as many
    as there are OSDs for; the healer adds the others), one otherwise. With fewer OSDs
    than the stripe width, one narrower replica rather than a failed create."""
    striping = policy.striping
    count = policy.factor if policy.replication is UpdatePolicy.RW else 1
    columns = place(policy.placement, count, striping.width, ())
    if not columns and count > 1:
        columns = place(policy.placement, 1, striping.width, ())
    if not columns:
        raise XfsError(errno.ENOSPC, "no OSD is available (or fits the placement policy)")
    if len(columns[0]) < striping.width:
        striping = StripingPolicy(striping.stripe_size, len(columns[0]))
    xloc = replicas.new_xloc(policy, columns, striping)
    if policy.seal_on_close and not xloc.seal_on_close:
        xloc = replace(xloc, seal_on_close=True)
    return xloc


def replicas_json(xloc: XLocSet, addresses: dict[str, str]) -> bytes:
    """What ``xfs.replicas`` shows: the primary is the first replica of a writable file."""
    return json.dumps(
        {
            "version": xloc.version,
            "policy": xloc.update_policy.value,
            "factor": xloc.factor,
            "fill": xloc.fill.value,
            "seal_on_close": xloc.seal_on_close,
            "replicas": [
                {
                    "osds": r.osds,
                    "complete": r.complete,
                    "incomplete": r.incomplete,
                    "primary": i == 0 and xloc.update_policy is not UpdatePolicy.RONLY,
                }
                for i, r in enumerate(xloc.replicas)
            ],
            "addresses": addresses,
        },
        sort_keys=True,
    ).encode()


# ---------------------------------------------------------------------- rows
def read(cur: sqlite3.Cursor, vid: str, ino: int) -> FilePolicy | None:
    """The stored policy of a directory, or None."""
    row = cur.execute(
        "SELECT value FROM xattrs WHERE volume = ? AND ino = ? AND name = ?", (vid, ino, POLICY)
    ).fetchone()
    if row is None:
        return None
    try:
        return FilePolicy.from_wire(msgpack.unpackb(bytes(row[0]), raw=False))
    except (ProtocolError, ValueError) as e:
        raise XfsError(errno.EIO, f"inode {vid}:{ino}: stored policy is corrupt: {e}") from None


def write(cur: sqlite3.Cursor, vid: str, ino: int, policy: FilePolicy) -> None:
    cur.execute(
        "INSERT INTO xattrs (volume, ino, name, value) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (volume, ino, name) DO UPDATE SET value = excluded.value",
        (vid, ino, POLICY, msgpack.packb(policy.to_wire(), use_bin_type=True)),
    )


def inherit(cur: sqlite3.Cursor, vid: str, parent: int, ino: int) -> None:
    """A new directory ``ino`` takes a copy of its parent's stored policy (if any)."""
    cur.execute(
        "INSERT INTO xattrs (volume, ino, name, value) SELECT volume, ?, name, value "
        "FROM xattrs WHERE volume = ? AND ino = ? AND name = ?",
        (ino, vid, parent, POLICY),
    )


def of_directory(cur: sqlite3.Cursor, v: rows.Vol, ino: int) -> FilePolicy:
    """A directory's own policy, else its volume's, else the built-in one."""
    return read(cur, v.id, ino) or read(cur, v.id, ROOT_INO) or default(v.striping)


def _owner_or_super(caller: Identity, node: rows.Inode, what: str) -> None:
    if not perms.is_owner_or_super(caller, node.attr):
        raise XfsError(
            errno.EPERM, f"permission denied: {what} of inode {node.ino} (owner or super only)"
        )


def _readable(caller: Identity, node: rows.Inode) -> None:
    if not perms.may(caller, node.attr, perms.R_OK, node.access_acl):
        raise XfsError(errno.EACCES, f"permission denied: read the policy of inode {node.ino}")


def _layout(node: rows.Inode) -> XLocSet:
    xloc = node.layout() if stat.S_ISREG(node.mode) else None
    if xloc is None:
        raise XfsError(errno.ENODATA, f"inode {node.ino} has no replicas (no file data)")
    return xloc


class PolicyOps:
    """Mixed into ``Namespace``: policies and replica sets, one transaction each."""

    _store: Store

    def volume_placement(self, vid: str) -> PlacementPolicy:
        """Where new replicas of the files of volume ``vid`` go (the healer asks)."""
        with self._store.read() as cur:
            policy = read(cur, vid, ROOT_INO)
        return PlacementPolicy() if policy is None else policy.placement

    def store_policy(self, vol: str, ino: int, policy: FilePolicy) -> None:
        """Store a directory's policy (no permission check: for ``volume_create``)."""
        policy = check(policy)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            write(cur, v.id, rows.directory(cur, v, ino).ino, policy)

    def new_file_policy(self, vol: str, parent: int) -> FilePolicy:
        """The policy of a file created in ``parent`` (create checks the permissions)."""
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            return of_directory(cur, v, rows.directory(cur, v, parent).ino)

    def get_policy(self, caller: Identity, vol: str, ino: int) -> FilePolicy:
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _readable(caller, node)
            if node.is_dir:
                return of_directory(cur, v, ino)
            xloc = _layout(node)
            return of_xloc(xloc, of_directory(cur, v, ROOT_INO).placement)

    def set_policy(
        self, caller: Identity, vol: str, ino: int, changes: dict[str, Any], place: Place
    ) -> XLocSet | None:
        """Merge ``changes`` onto the policy of a directory (for files created later) or
        of a file (its XLocSet, returned). A file's striping changes only while it is
        empty (EINVAL) and open for writing nowhere (EBUSY); its placement is its
        volume's (EINVAL)."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _owner_or_super(caller, node, "set the policy")
            now = self._store.clock()
            if node.is_dir:
                write(cur, v.id, ino, check(merge(of_directory(cur, v, ino), changes)))
                rows.set_inode(cur, v, node, ctime_ns=now)
                return None
            old = _layout(node)
            current = of_xloc(old, of_directory(cur, v, ROOT_INO).placement)
            if _pending_seal(old) and changes.get("seal_on_close") is False:
                if "replication" not in changes:  # the seal to come is called off
                    current = replace(current, replication=UpdatePolicy.NONE, factor=1)
            policy = merge(current, changes)
            check(policy)
            if policy.placement != current.placement:
                raise XfsError(
                    errno.EINVAL,
                    "a file's replicas are placed by its volume's placement policy: "
                    "set placement on a directory or the volume's root",
                )
            if policy.striping == current.striping:
                new = apply(old, policy)
            else:
                if node.attr.size > 0:
                    raise XfsError(
                        errno.EINVAL, f"inode {ino} is not empty: its striping cannot change"
                    )
                if _writers(cur, v.id, ino):
                    raise XfsError(errno.EBUSY, f"inode {ino} is open for writing")
                new = replace(new_layout(policy, place), version=old.version + 1)
            rows.set_inode(cur, v, node, xloc=rows.encode_xloc(new), ctime_ns=now)
            return new

    def get_replicas(self, caller: Identity, vol: str, ino: int) -> XLocSet:
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _readable(caller, node)
            return _layout(node)

    def change_replicas(
        self,
        caller: Identity,
        vol: str,
        ino: int,
        what: str,
        change: Callable[[XLocSet, PlacementPolicy], XLocSet],
    ) -> XLocSet:
        """Apply ``change`` (given the XLocSet and the volume's placement) to a file's
        replicas, as its owner or a super user; the XLocSet now stored."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _owner_or_super(caller, node, what)
            old = _layout(node)
            new = change(old, of_directory(cur, v, ROOT_INO).placement)
            if new != old:
                node = rows.set_inode(
                    cur, v, node, xloc=rows.encode_xloc(new), ctime_ns=self._store.clock()
                )
            return new

    def writes(self, vol: str, ino: int, client: str) -> bool:
        """Has ``client`` the inode registered open for writing?"""
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            row = cur.execute(
                "SELECT writable FROM opens WHERE client = ? AND volume = ? AND ino = ?",
                (client, v.id, ino),
            ).fetchone()
        return row is not None and bool(row[0])

    def seal_if_closed(self, vol: str, ino: int) -> bool:
        """Seal a file that is to be sealed on close once no client has it open for
        writing; whether it was sealed now."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            xloc = node.layout()
            if xloc is None or not xloc.seal_on_close or _writers(cur, v.id, ino):
                return False
            rows.set_inode(cur, v, node, xloc=rows.encode_xloc(replicas.seal(xloc)))
            return True


def _writers(cur: sqlite3.Cursor, vid: str, ino: int) -> bool:
    row = cur.execute(
        "SELECT 1 FROM opens WHERE volume = ? AND ino = ? AND writable", (vid, ino)
    ).fetchone()
    return row is not None


# ---------------------------------------------------------------------- the xattrs
class Policies:
    """The MRC's side of the policy xattrs, of new files' layouts and of seal on close.

    ``on_change`` is called when a file may need the healer (replicas to add or fill).
    """

    def __init__(
        self,
        ns: Any,  # Namespace (which mixes in PolicyOps; imported there, not here)
        registry: OSDRegistry,
        rng: random.Random | None = None,
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._ns = ns
        self._registry = registry
        self._rng = rng or random.Random()
        self._on_change = on_change

    def _place(
        self, where: PlacementPolicy, count: int, width: int, existing: Sequence[str]
    ) -> list[list[str]]:
        return placement.place(
            self._registry.placeable(), where, count, width, self._rng, existing=existing
        )

    def place(self, volume: str, parent: int) -> XLocSet:
        """The layout of a new file in directory ``parent``, under its policy."""
        return new_layout(self._ns.new_file_policy(volume, parent), self._place)

    def getxattr(self, who: Identity, volume: str, ino: int, name: bytes) -> bytes:
        if name == POLICY:
            return to_json(self._ns.get_policy(who, volume, ino))
        if name == REPLICAS:
            xloc = self._ns.get_replicas(who, volume, ino)
            return replicas_json(xloc, self._registry.addresses(sorted(replicas.osds_of(xloc))))
        raise XfsError(errno.ENODATA, f"xattr {name.decode()} can only be set")

    def setxattr(self, who: Identity, volume: str, ino: int, name: bytes, value: bytes) -> None:
        if len(value) > XATTR_SIZE_MAX:
            raise XfsError(errno.E2BIG, f"xattr value of {len(value)} bytes")
        if name == POLICY:
            self._ns.set_policy(who, volume, ino, parse(value), self._place)
        elif name == REPLICA_ADD:
            osds = [u.strip() for u in bytes(value).decode(errors="replace").split(",")]
            self._add(who, volume, ino, [u for u in osds if u])
        elif name == REPLICA_REMOVE:
            osd = bytes(value).decode(errors="replace").strip()
            self._ns.change_replicas(
                who, volume, ino, "remove a replica", lambda x, _: _drop(x, osd)
            )
        elif name == SEAL:
            self._ns.change_replicas(who, volume, ino, "seal", lambda x, _: replicas.seal(x))
        else:
            raise XfsError(errno.EPERM, f"xattr {name.decode()} is read-only")
        self._on_change()

    def _add(self, who: Identity, volume: str, ino: int, osds: list[str]) -> None:
        unknown = [u for u in osds if not self._registry.known(u)]
        if unknown:
            raise XfsError(errno.EINVAL, f"unknown OSDs {', '.join(unknown)}")

        def add(xloc: XLocSet, where: PlacementPolicy) -> XLocSet:
            if not xloc.replicated:
                raise XfsError(
                    errno.EINVAL,
                    f"inode {ino} is not replicated (policy none): set replication first",
                )
            chosen = osds
            if not chosen:
                width = xloc.replicas[0].striping.width
                placed = self._place(where, 1, width, sorted(replicas.osds_of(xloc)))
                if not placed:
                    raise XfsError(errno.ENOSPC, "no OSD is available for another replica")
                chosen = placed[0]
            return replicas.add(xloc, chosen)

        self._ns.change_replicas(who, volume, ino, "add a replica", add)

    def close(self, who: Identity, volume: str, ino: int, client: str) -> int | None:
        """``Namespace.close``, then seal the file if it is to be sealed when its last
        writer closes it and this was that. Returns the pending deletion id, if any."""
        # (no await between these calls: no other request sees the file in between)
        wrote = self._ns.writes(volume, ino, client)
        pending: int | None = self._ns.close(who, volume, ino, client)
        if wrote and pending is None and self._ns.seal_if_closed(volume, ino):
            self._on_change()
        return pending


def _drop(xloc: XLocSet, osd: str) -> XLocSet:
    if replicas.replica_on(xloc, osd) is None:
        raise XfsError(errno.ENOENT, f"the file has no replica on OSD {osd!r}")
    return replicas.drop(xloc, osd)


def flags_ok(flags: int) -> None:
    """The virtual xattrs always exist: XATTR_CREATE and XATTR_REPLACE do not apply."""
    del flags


__all__ = ["NAMES", "PolicyOps", "Policies", "os"]
