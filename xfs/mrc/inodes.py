"""Rows of the store as records: volumes, inodes and entries, read and written on a cursor.

The namespace modules build their operations out of these; each helper runs inside the
caller's transaction and raises ``XfsError`` naming what it could not find.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from xfs.mrc import acl as acls
from xfs.mrc import quotas
from xfs.mrc.sql import Cursor
from xfs.proto.errors import XfsError
from xfs.proto.records import NAME_MAX, Attr, StripingPolicy, VolumeInfo, XLocSet

# Columns of ``inodes`` in the order of the ``Attr`` fields, then the rest of ``Inode``.
ATTR_COLS = (
    "ino",
    "mode",
    "nlink",
    "owner",
    "grp",
    "size",
    "atime_ns",
    "mtime_ns",
    "ctime_ns",
    "rdev",
)
INODE_COLS = ", ".join((*ATTR_COLS, "truncate_epoch", "xloc", "target"))
VOLUME_COLS = "id, name, owner, grp, mode, stripe_size, width"
# Columns ``set_inode`` may write.
_WRITABLE = frozenset(ATTR_COLS[1:-1]) | {"truncate_epoch", "xloc"}


@dataclass(frozen=True)
class Vol:
    """A volume row, as the operations need it."""

    id: str
    name: str
    owner: str
    group: str
    mode: int
    striping: StripingPolicy

    def info(self, files: int = 0, bytes_used: int = 0) -> VolumeInfo:
        return VolumeInfo(
            id=self.id,
            name=self.name,
            owner=self.owner,
            group=self.group,
            mode=self.mode,
            striping=self.striping,
            files=files,
            bytes_used=bytes_used,
        )


@dataclass(frozen=True)
class Inode:
    """An inode row: its ``Attr`` and what only the MRC sees."""

    attr: Attr
    truncate_epoch: int
    xloc: bytes | None
    target: bytes | None
    acl: bytes | None = None  # the access ACL as stored (xfs.mrc.acl.encode), if any

    @property
    def ino(self) -> int:
        return self.attr.ino

    @property
    def mode(self) -> int:
        return self.attr.mode

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attr.mode)

    def layout(self) -> XLocSet | None:
        return None if self.xloc is None else decode_xloc(self.xloc)

    @property
    def access_acl(self) -> acls.Acl | None:
        if self.acl is None:
            return None
        try:
            return acls.decode(self.acl)
        except XfsError as e:
            raise XfsError(errno.EIO, f"inode {self.ino}: stored ACL is corrupt: {e}") from None


def show(name: bytes) -> str:
    """An entry name for an error message."""
    return repr(name.decode("utf-8", "backslashreplace"))


def encode_xloc(xloc: XLocSet) -> bytes:
    return bytes(msgpack.packb(xloc.to_wire(), use_bin_type=True))


def decode_xloc(blob: bytes) -> XLocSet:
    return XLocSet.from_wire(msgpack.unpackb(blob, raw=False))


def check_name(name: bytes) -> None:
    """Refuse a name no entry may have (EINVAL, ENAMETOOLONG)."""
    if len(name) > NAME_MAX:
        raise XfsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes: at most {NAME_MAX}")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise XfsError(errno.EINVAL, f"invalid entry name {show(name)}")


def row_to_volume(row: Any) -> Vol:
    vid, name, owner, grp, mode, stripe_size, width = row
    return Vol(vid, name, owner, grp, mode, StripingPolicy(stripe_size=stripe_size, width=width))


def volume(cur: Cursor, name: str) -> Vol:
    """Volume ``name``. Its columns never change, so a cursor may keep what it read
    (``volume_cache``: the PostgreSQL store's, where each query is a round trip)."""
    cache: dict[str, Vol] | None = getattr(cur, "volume_cache", None)
    if cache is not None and (known := cache.get(name)) is not None:
        return known
    row = cur.execute(f"SELECT {VOLUME_COLS} FROM volumes WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise XfsError(errno.ENOENT, f"no volume {name!r}")
    v = row_to_volume(row)
    if cache is not None:
        cache[name] = v
    return v


def forget_volume(cur: Cursor, name: str) -> None:
    """Volume ``name`` is deleted (in this transaction): no cursor knows it any more."""
    cache: dict[str, Vol] | None = getattr(cur, "volume_cache", None)
    if cache is not None:
        cache.pop(name, None)


def row_to_attr(row: Any, blksize: int, acl: bool = False) -> Attr:
    """An ``Attr`` from the ``ATTR_COLS`` of a row; ``acl``: it has an access ACL."""
    ino, mode, nlink, owner, grp, size, atime, mtime, ctime, rdev = row
    return Attr(ino, mode, nlink, owner, grp, size, atime, mtime, ctime, rdev, blksize, acl)


def row_to_inode(row: Any, blksize: int) -> Inode:
    """An ``Inode`` from the ``INODE_COLS`` of a row, and its access ACL if the row has
    one more column."""
    acl = bytes(row[13]) if len(row) > 13 and row[13] is not None else None
    return Inode(row_to_attr(row[:10], blksize, acl is not None), row[10], row[11], row[12], acl)


def access_acl_sql(table: str) -> str:
    """A scalar subquery: the stored access ACL of the row of ``table`` (an ``inodes``
    table or alias), or NULL; one primary-key lookup in ``xattrs``; takes the parameter
    ``acl.ACCESS``."""
    return (
        f"(SELECT x.value FROM xattrs x WHERE x.volume = {table}.volume "
        f"AND x.ino = {table}.ino AND x.name = ?)"
    )


def inode(cur: Cursor, vol: Vol, ino: int) -> Inode:
    """The inode ``ino``, with its access ACL (permission checks need it)."""
    row = cur.execute(
        f"SELECT {INODE_COLS}, {access_acl_sql('inodes')} FROM inodes WHERE volume = ? AND ino = ?",
        (acls.ACCESS, vol.id, ino),
    ).fetchone()
    if row is None:
        # A stale handle (as NFS says): the inode went while a client still knew it. The
        # kernel answers ESTALE by walking the path again without its caches, so another
        # client's cached name of a replaced file finds the new file, never ENOENT.
        raise XfsError(errno.ESTALE, f"no inode {ino} in volume {vol.name!r} (stale)")
    return row_to_inode(row, vol.striping.stripe_size)


def directory(cur: Cursor, vol: Vol, ino: int) -> Inode:
    node = inode(cur, vol, ino)
    if not node.is_dir:
        raise XfsError(errno.ENOTDIR, f"inode {ino} in volume {vol.name!r} is not a directory")
    return node


def entry(cur: Cursor, vol: Vol, parent: int, name: bytes) -> tuple[int, int] | None:
    """(ino, cursor) of entry ``name`` in directory ``parent``, or None."""
    row = cur.execute(
        "SELECT ino, cursor FROM dentries WHERE volume = ? AND parent = ? AND name = ?",
        (vol.id, parent, name),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def parent_of(cur: Cursor, vol: Vol, ino: int) -> int:
    """The parent of a directory (the root is its own parent)."""
    row = cur.execute(
        "SELECT parent FROM dentries WHERE volume = ? AND ino = ?", (vol.id, ino)
    ).fetchone()
    return ino if row is None else int(row[0])


def is_ancestor(cur: Cursor, vol: Vol, ancestor: int, ino: int) -> bool:
    """Is directory ``ancestor`` equal to ``ino`` or above it?"""
    return is_ancestor_of(cur, vol.id, ancestor, ino)


def is_ancestor_of(cur: Cursor, volume_id: str, ancestor: int, ino: int) -> bool:
    """``is_ancestor`` by volume id: through any of the links of ``ino``."""
    row = cur.execute(
        """
        WITH RECURSIVE up(ino) AS (
            SELECT CAST(? AS BIGINT)
            UNION
            SELECT d.parent FROM dentries d JOIN up ON d.volume = ? AND d.ino = up.ino
        )
        SELECT 1 FROM up WHERE ino = ?
        """,
        (ino, volume_id, ancestor),
    ).fetchone()
    return row is not None


def has_entries(cur: Cursor, vol: Vol, ino: int) -> bool:
    row = cur.execute(
        "SELECT 1 FROM dentries WHERE volume = ? AND parent = ? LIMIT 1", (vol.id, ino)
    ).fetchone()
    return row is not None


def next_cursor(cur: Cursor) -> int:
    row = cur.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'next_cursor' RETURNING value - 1"
    ).fetchone()
    return int(row[0])


def add_entry(cur: Cursor, vol: Vol, parent: int, name: bytes, ino: int) -> None:
    cur.execute(
        "INSERT INTO dentries (volume, parent, name, ino, cursor) VALUES (?, ?, ?, ?, ?)",
        (vol.id, parent, name, ino, next_cursor(cur)),
    )


def remove_entry(cur: Cursor, vol: Vol, parent: int, name: bytes) -> None:
    cur.execute(
        "DELETE FROM dentries WHERE volume = ? AND parent = ? AND name = ?",
        (vol.id, parent, name),
    )


def new_inode(
    cur: Cursor,
    vol: Vol,
    *,
    mode: int,
    nlink: int,
    owner: str,
    group: str,
    now: int,
    size: int = 0,
    rdev: int = 0,
    xloc: XLocSet | None = None,
    target: bytes | None = None,
    ino: int | None = None,
) -> Inode:
    """Insert an inode with the volume's next number (or ``ino``: the root, or a create
    under a directory lease, whose number was checked against the files quota when it was
    reserved); EDQUOT if the owner's or the volume's files quota is used up."""
    if ino is None:
        quotas.check_files(cur, vol.id, owner, f"new inode in volume {vol.name}")
        row = cur.execute(
            "UPDATE volumes SET next_ino = next_ino + 1 WHERE id = ? RETURNING next_ino - 1",
            (vol.id,),
        ).fetchone()
        ino = int(row[0])
    blob = None if xloc is None else encode_xloc(xloc)
    cur.execute(
        f"INSERT INTO inodes (volume, {INODE_COLS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (vol.id, ino, mode, nlink, owner, group, size, now, now, now, rdev, blob, target),
    )
    quotas.use(cur, vol.id, owner, 1, quotas.charge(mode, size, blob))
    attr = Attr(
        ino, mode, nlink, owner, group, size, now, now, now, rdev, blksize=vol.striping.stripe_size
    )
    return Inode(attr, 0, blob, target)


def set_inode(cur: Cursor, vol: Vol, node: Inode, **fields: Any) -> Inode:
    """Write ``fields`` (column names) of an inode; return the inode as it now is."""
    if not fields:
        return node
    bad = set(fields) - _WRITABLE
    if bad:
        raise ValueError(f"not writable inode columns: {sorted(bad)}")
    cols = ", ".join(f"{c} = ?" for c in fields)
    cur.execute(
        f"UPDATE inodes SET {cols} WHERE volume = ? AND ino = ?",
        (*fields.values(), vol.id, node.ino),
    )
    if fields.keys() & {"size", "owner", "xloc"}:
        recharge(cur, vol.id, node.attr.mode, (node.attr.owner, node.attr.size, node.xloc), fields)
    attr_fields = {
        ("group" if k == "grp" else k): v
        for k, v in fields.items()
        if k not in ("truncate_epoch", "xloc")
    }
    return Inode(
        replace(node.attr, **attr_fields),
        fields.get("truncate_epoch", node.truncate_epoch),
        fields.get("xloc", node.xloc),
        node.target,
        node.acl,
    )


def recharge(
    cur: Cursor,
    vid: str,
    mode: int,
    old: tuple[str, int, bytes | None],
    new: dict[str, Any],
) -> None:
    """An inode's owner, size or XLocSet changed from ``old`` (owner, size, xloc) to what
    ``new`` (columns) says: move its usage."""
    owner, size, xloc = old
    to = (new.get("owner", owner), new.get("size", size), new.get("xloc", xloc))
    before, after = quotas.charge(mode, size, xloc), quotas.charge(mode, to[1], to[2])
    if to[0] != owner:
        quotas.use(cur, vid, owner, -1, -before)
        quotas.use(cur, vid, to[0], 1, after)
    else:
        quotas.use(cur, vid, owner, 0, after - before)


def touch_dir(cur: Cursor, vol: Vol, ino: int, now: int, nlink_delta: int = 0) -> None:
    """A directory's entries changed: mtime and ctime are now; nlink moves by delta."""
    cur.execute(
        "UPDATE inodes SET mtime_ns = ?, ctime_ns = ?, nlink = nlink + ? "
        "WHERE volume = ? AND ino = ?",
        (now, now, nlink_delta, vol.id, ino),
    )


def drop_link(cur: Cursor, vol: Vol, node: Inode, now: int) -> int | None:
    """One link of a non-directory went: decrement nlink, or remove the inode with its
    last link. Returns the pending deletion id if the file had objects on OSDs."""
    if node.attr.nlink > 1 or is_open(cur, vol.id, node.ino):
        # an open file outlives its last name (an orphan) until its last close
        set_inode(cur, vol, node, nlink=node.attr.nlink - 1, ctime_ns=now)
        return None
    return drop_inode(cur, vol, node.ino, node.xloc)


def is_open(cur: Cursor, volume_id: str, ino: int) -> bool:
    """Whether some client has the inode open (see the ``opens`` table)."""
    row = cur.execute(
        "SELECT 1 FROM opens WHERE volume = ? AND ino = ? LIMIT 1", (volume_id, ino)
    ).fetchone()
    return row is not None


def drop_inode(cur: Cursor, vol: Vol, ino: int, xloc: bytes | None) -> int | None:
    """Remove an inode (no entry names it any more) and queue its objects' deletion."""
    return drop_inode_of(cur, vol.id, ino, xloc)


def drop_inode_of(cur: Cursor, vid: str, ino: int, xloc: bytes | None) -> int | None:
    """``drop_inode`` by volume id. Returns the pending deletion id, if any."""
    gone = cur.execute(
        "SELECT owner, mode, size, xloc FROM inodes WHERE volume = ? AND ino = ?", (vid, ino)
    ).fetchone()
    if gone is not None:
        owner, mode, size, blob = gone
        quotas.use(cur, vid, owner, -1, -quotas.charge(mode, size, blob))
    for table in ("xattrs", "locks", "opens", "inodes"):
        cur.execute(f"DELETE FROM {table} WHERE volume = ? AND ino = ?", (vid, ino))
    if xloc is None:
        return None
    row = cur.execute(
        "INSERT INTO pending_deletions (volume, ino, xloc) VALUES (?, ?, ?) RETURNING id",
        (vid, ino, xloc),
    ).fetchone()
    return int(row[0])
