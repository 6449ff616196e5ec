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

The virtual xattrs, answered by the MRC (``Policies``, which ``MRCHandlers`` hands every
name of ``NAMES``) and never listed:

============================  =====================================  ====================
name                          get                                    set (owner or super)
============================  =====================================  ====================
``xfs.policy``                JSON of the effective policy           JSON, merged onto it
``xfs.replicas``              JSON of the file's replicas            -
``xfs.replica.add``           -                                      OSD uuids or empty
``xfs.replica.remove``        -                                      an OSD uuid
``xfs.seal``                  -                                      (anything): seal now
``xfs.osd_labels``            JSON list of every OSD's labels        -
============================  =====================================  ====================

A policy the grid's OSDs could never hold (required labels no OSD carries, a factor
above the number of OSDs that carry them) is refused with ``EINVAL`` when it is set.

The JSON of a policy is flat: ``replication``, ``factor``, ``fill``, ``seal_on_close``,
``stripe_size``, ``width`` and ``placement`` (``require``, ``spread``, ``sort``); a set
gives any subset of those keys.
"""

from __future__ import annotations

import errno
import json
import random
import stat
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import msgpack

from xfs.mrc import inodes as rows
from xfs.mrc import perms, placement, replicas
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.sql import Cursor, MetaStore
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
OSD_LABELS = b"xfs.osd_labels"  # the labels of the grid's OSDs, to choose a placement by
NAMES = frozenset({POLICY, REPLICAS, REPLICA_ADD, REPLICA_REMOVE, SEAL, OSD_LABELS})

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
        raise XfsError(errno.EINVAL, f"placement is an object with keys {sorted(_PLACEMENT_KEYS)}")
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
    if xloc.update_policy is not UpdatePolicy.RONLY:  # (set_policy to none keeps the flag)
        xloc = replace(xloc, seal_on_close=policy.seal_on_close)
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
            "stripe_size": xloc.replicas[0].striping.stripe_size,
            "width": len(xloc.replicas[0].osds),
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
def read(cur: Cursor, vid: str, ino: int) -> FilePolicy | None:
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


def write(cur: Cursor, vid: str, ino: int, policy: FilePolicy) -> None:
    cur.execute(
        "INSERT INTO xattrs (volume, ino, name, value) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (volume, ino, name) DO UPDATE SET value = excluded.value",
        (vid, ino, POLICY, msgpack.packb(policy.to_wire(), use_bin_type=True)),
    )


def inherit(cur: Cursor, vid: str, parent: int, ino: int) -> None:
    """A new directory ``ino`` takes a copy of its parent's stored policy (if any)."""
    cur.execute(
        "INSERT INTO xattrs (volume, ino, name, value) SELECT volume, ?, name, value "
        "FROM xattrs WHERE volume = ? AND ino = ? AND name = ?",
        (ino, vid, parent, POLICY),
    )


def of_directory(cur: Cursor, v: rows.Vol, ino: int) -> FilePolicy:
    """A directory's own policy, else its volume's, else the built-in one."""
    return read(cur, v.id, ino) or read(cur, v.id, ROOT_INO) or default(v.striping)


def _owner_or_super(caller: Identity, node: rows.Inode, what: str) -> None:
    if not perms.is_owner_or_super(caller, node.attr):
        raise XfsError(
            errno.EPERM, f"permission denied: {what} of inode {node.ino} (owner or super only)"
        )


def _readable(caller: Identity, node: rows.Inode, name: bytes) -> None:
    if not perms.may(caller, node.attr, perms.R_OK, node.access_acl):
        raise XfsError(errno.EACCES, f"permission denied: read {name.decode()} of {node.ino}")


def _layout(node: rows.Inode) -> XLocSet:
    xloc = node.layout() if stat.S_ISREG(node.mode) else None
    if xloc is None:
        raise XfsError(errno.ENODATA, f"inode {node.ino} has no replicas (no file data)")
    return xloc


def _to_seal(cur: Cursor, v: rows.Vol, ino: int) -> tuple[rows.Inode, XLocSet] | None:
    """The inode and its XLocSet if it is to be sealed on close (None: it is not, or it
    is gone: an orphan freed by the close)."""
    found = cur.execute("SELECT 1 FROM inodes WHERE volume = ? AND ino = ?", (v.id, ino)).fetchone()
    if found is None:
        return None
    node = rows.inode(cur, v, ino)
    xloc = node.layout()
    return None if xloc is None or not xloc.seal_on_close else (node, xloc)


def _writers(cur: Cursor, vid: str, ino: int) -> bool:
    """Has some client the inode open for writing?"""
    row = cur.execute(
        "SELECT 1 FROM opens WHERE volume = ? AND ino = ? AND writable = 1", (vid, ino)
    ).fetchone()
    return row is not None


def _drop(xloc: XLocSet, osd: str) -> XLocSet:
    if replicas.replica_on(xloc, osd) is None:
        raise XfsError(errno.ENOENT, f"the file has no replica on OSD {osd!r}")
    return replicas.drop(xloc, osd)


# ---------------------------------------------------------------------- the MRC's side
class Policies:
    """Policies and replica sets over the store, one transaction per call: the xattrs
    (``get``, ``set``), the layout of new files (``place``), volume policies, seal on
    close, and the placement the healer uses (``placement_of``)."""

    def __init__(
        self,
        store: MetaStore,
        ns: object,  # the Namespace: files are its, policies are this module's
        registry: OSDRegistry,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._ns = ns
        self._registry = registry
        self._rng = rng or random.Random()
        # (volume id, directory) -> the policy its new files get; every policy change
        # empties it (they are rare; a create reads it for every file)
        self._of_directory: dict[tuple[str, int], FilePolicy] = {}

    def _place(
        self, where: PlacementPolicy, count: int, width: int, existing: Sequence[str]
    ) -> list[list[str]]:
        return placement.place(
            self._registry.placeable(), where, count, width, self._rng, existing=existing
        )

    # ------------------------------------------------------------------ volumes
    def placement_of(self, vid: str) -> PlacementPolicy:
        """Where new replicas of the files of volume ``vid`` (an id) go."""
        with self._store.read() as cur:
            policy = read(cur, vid, ROOT_INO)
        return PlacementPolicy() if policy is None else policy.placement

    def set_volume(self, vol: str, policy: FilePolicy) -> None:
        """The policy of new volume ``vol`` (its root's), with the volume's striping
        (no permission check: ``volume_create`` made it)."""
        self._of_directory.clear()
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            write(cur, v.id, ROOT_INO, check(replace(policy, striping=v.striping)))

    # ------------------------------------------------------------------ new files
    def place(self, vol: str, parent: int) -> XLocSet:
        """The layout of a new file in directory ``parent``, under its policy (create
        checks the permissions)."""
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            policy = self._of_directory.get((v.id, parent))
            if policy is None:
                policy = of_directory(cur, v, rows.directory(cur, v, parent).ino)
                if len(self._of_directory) >= 10_000:
                    self._of_directory.clear()
                self._of_directory[(v.id, parent)] = policy
        return new_layout(policy, self._place)

    def seal_on_close(self, vol: str, ino: int) -> bool:
        """A file was closed: seal it if it is to be sealed on close and no client has
        it open for writing any more. Whether it was sealed now."""
        with self._store.read() as cur:  # most files are not: no write transaction
            if _to_seal(cur, rows.volume(cur, vol), ino) is None:
                return False
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            found = _to_seal(cur, v, ino)
            if found is None or _writers(cur, v.id, ino):
                return False
            node, xloc = found
            rows.set_inode(cur, v, node, xloc=rows.encode_xloc(replicas.seal(xloc)))
            return True

    # ------------------------------------------------------------------ xattrs
    def get(self, who: Identity, vol: str, ino: int, name: bytes) -> bytes:
        """The value of virtual xattr ``name`` (one of ``NAMES``); needs read access."""
        if name not in (POLICY, REPLICAS, OSD_LABELS):
            raise XfsError(errno.ENODATA, f"xattr {name.decode()} can only be set")
        if name == OSD_LABELS:
            return json.dumps(self._labels(), sort_keys=True).encode()
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _readable(who, node, name)
            if name == POLICY and node.is_dir:
                return to_json(of_directory(cur, v, ino))
            xloc = _layout(node)
            if name == POLICY:
                return to_json(of_xloc(xloc, of_directory(cur, v, ROOT_INO).placement))
        addresses = self._registry.addresses(sorted(replicas.osds_of(xloc)))
        return replicas_json(xloc, addresses)

    def set(
        self,
        who: Identity,
        vol: str,
        ino: int,
        name: bytes,
        value: bytes,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """Set virtual xattr ``name`` as the inode's owner or a super user (EPERM);
        ``on_change`` is called when a file's replica set changed (the healer acts)."""
        if name not in NAMES - {REPLICAS, OSD_LABELS}:
            raise XfsError(errno.EPERM, f"xattr {name.decode()} is read-only")
        if len(value) > XATTR_SIZE_MAX:
            raise XfsError(errno.E2BIG, f"xattr value of {len(value)} bytes")
        text = bytes(value).decode(errors="replace").strip()
        changes = parse(value) if name == POLICY else {}
        osds = [u for u in (u.strip() for u in text.split(",")) if u]
        if name == REPLICA_ADD:
            unknown = [u for u in osds if not self._registry.known(u)]
            if unknown:
                raise XfsError(errno.EINVAL, f"unknown OSDs: {', '.join(unknown)}")
        self._of_directory.clear()  # (before: a create meanwhile reads the store again)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _owner_or_super(who, node, f"set {name.decode()}")
            now = self._store.clock()
            if name == POLICY and node.is_dir:
                write(cur, v.id, ino, self._placeable(merge(of_directory(cur, v, ino), changes)))
                rows.set_inode(cur, v, node, ctime_ns=now)
                return
            old = _layout(node)
            where = of_directory(cur, v, ROOT_INO).placement
            if name == POLICY:
                new = self._file_policy(old, node, where, changes, _writers(cur, v.id, ino))
            elif name == REPLICA_ADD:
                new = self._add(old, node, where, osds)
            elif name == REPLICA_REMOVE:
                new = _drop(old, text)
            else:
                new = replicas.seal(old)
            if new != old:
                rows.set_inode(cur, v, node, xloc=rows.encode_xloc(new), ctime_ns=now)
        if new != old:
            on_change()

    def _labels(self) -> list[dict[str, str]]:
        """The labels of every OSD of the grid (``xfs.osd_labels``)."""
        return [o.labels for o in self._registry.all()]

    def _placeable(self, policy: FilePolicy) -> FilePolicy:
        """``check(policy)``, and EINVAL if the grid's OSDs could never hold it."""
        policy = check(policy)
        replicated = policy.replication is not UpdatePolicy.NONE
        why = placement.unfit(
            policy.placement.require, policy.factor if replicated else 1, self._labels()
        )
        if why:
            raise XfsError(errno.EINVAL, why)
        return policy

    def _file_policy(
        self,
        old: XLocSet,
        node: rows.Inode,
        where: PlacementPolicy,
        changes: dict[str, Any],
        writing: bool,
    ) -> XLocSet:
        """A file's XLocSet under its policy merged with ``changes``. Its striping changes
        only while it is empty (EINVAL) and open for writing nowhere (EBUSY); its
        placement is its volume's (EINVAL)."""
        current = of_xloc(old, where)
        calls_off = changes.get("seal_on_close") is False and "replication" not in changes
        if _pending_seal(old) and calls_off:  # the seal to come is called off
            current = replace(current, replication=UpdatePolicy.NONE, factor=1)
        policy = merge(current, changes)
        self._placeable(policy)
        if policy.placement != current.placement:
            raise XfsError(
                errno.EINVAL,
                "a file's replicas are placed by its volume's placement policy: "
                "set placement on a directory or the volume's root",
            )
        if policy.striping == current.striping:
            return apply(old, policy)
        if old.update_policy is UpdatePolicy.RONLY:
            raise XfsError(errno.EPERM, f"inode {node.ino} is sealed: its striping stays")
        if node.attr.size > 0:
            raise XfsError(
                errno.EINVAL, f"inode {node.ino} is not empty: its striping cannot change"
            )
        if writing:
            raise XfsError(errno.EBUSY, f"inode {node.ino} is open for writing")
        return replace(new_layout(policy, self._place), version=old.version + 1)

    def _add(
        self, xloc: XLocSet, node: rows.Inode, where: PlacementPolicy, osds: list[str]
    ) -> XLocSet:
        if not xloc.replicated:
            raise XfsError(
                errno.EINVAL,
                f"inode {node.ino} is not replicated (policy none): set replication first",
            )
        if not osds:
            width = xloc.replicas[0].striping.width
            placed = self._place(where, 1, width, sorted(replicas.osds_of(xloc)))
            if not placed:
                raise XfsError(errno.ENOSPC, "no OSD is available for another replica")
            osds = placed[0]
        return replicas.add(xloc, osds)
