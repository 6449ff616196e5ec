"""Extended attributes of the namespace: get, set, list, remove, under Linux's rules.

Which namespaces exist and who may touch them is decided in ``perms`` (pure); here the
names and values are checked and the rows written.
"""

from __future__ import annotations

import errno

from xfs.mrc import inodes as rows
from xfs.mrc import perms
from xfs.mrc.store import Store
from xfs.proto.errors import XfsError
from xfs.proto.records import XATTR_NAME_MAX, XATTR_SIZE_MAX, Identity

XATTR_CREATE = 1
XATTR_REPLACE = 2


def _check_name(name: bytes) -> None:
    if not name or len(name) > XATTR_NAME_MAX:
        raise XfsError(errno.ERANGE, f"xattr name of {len(name)} bytes: 1 to {XATTR_NAME_MAX}")
    if b"\0" in name:
        raise XfsError(errno.EINVAL, f"xattr name {rows.show(name)} contains NUL")
    prefix = perms.xattr_namespace(name)
    if prefix is not None and len(name) == len(prefix):
        raise XfsError(errno.EINVAL, f"xattr name {rows.show(name)} is only a namespace")


def _allow(caller: Identity, node: rows.Inode, name: bytes, write: bool) -> None:
    denial = perms.xattr_denial(caller, node.attr, name, write)
    if denial is None:
        return
    if denial == errno.ENODATA:
        raise XfsError(errno.ENODATA, f"no xattr {rows.show(name)} on inode {node.ino}")
    what = "set" if write else "read"
    raise XfsError(denial, f"may not {what} xattr {rows.show(name)} of inode {node.ino}")


class XattrOps:
    """Mixed into ``Namespace``."""

    _store: Store

    def getxattr(self, caller: Identity, vol: str, ino: int, name: bytes) -> bytes:
        _check_name(name)
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _allow(caller, node, name, write=False)
            row = cur.execute(
                "SELECT value FROM xattrs WHERE volume = ? AND ino = ? AND name = ?",
                (v.id, ino, name),
            ).fetchone()
        if row is None:
            raise XfsError(errno.ENODATA, f"no xattr {rows.show(name)} on inode {ino}")
        return bytes(row[0])

    def setxattr(
        self, caller: Identity, vol: str, ino: int, name: bytes, value: bytes, flags: int = 0
    ) -> None:
        """Set xattr ``name``; ``flags`` XATTR_CREATE (must not exist) or XATTR_REPLACE
        (must exist)."""
        if flags & ~(XATTR_CREATE | XATTR_REPLACE):
            raise XfsError(errno.EINVAL, f"bad setxattr flags {flags:#x}")
        _check_name(name)
        if len(value) > XATTR_SIZE_MAX:
            raise XfsError(
                errno.E2BIG, f"xattr value of {len(value)} bytes: at most {XATTR_SIZE_MAX}"
            )
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _allow(caller, node, name, write=True)
            exists = cur.execute(
                "SELECT 1 FROM xattrs WHERE volume = ? AND ino = ? AND name = ?",
                (v.id, ino, name),
            ).fetchone()
            if exists and flags & XATTR_CREATE:
                raise XfsError(errno.EEXIST, f"xattr {rows.show(name)} exists on inode {ino}")
            if not exists and flags & XATTR_REPLACE:
                raise XfsError(errno.ENODATA, f"no xattr {rows.show(name)} on inode {ino}")
            cur.execute(
                "INSERT INTO xattrs (volume, ino, name, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (volume, ino, name) DO UPDATE SET value = excluded.value",
                (v.id, ino, name, bytes(value)),
            )
            rows.set_inode(cur, v, node, ctime_ns=self._store.clock())

    def listxattr(self, caller: Identity, vol: str, ino: int) -> list[bytes]:
        """The names the caller may see, in byte order."""
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            rows.inode(cur, v, ino)
            names = [
                bytes(r[0])
                for r in cur.execute(
                    "SELECT name FROM xattrs WHERE volume = ? AND ino = ? ORDER BY name",
                    (v.id, ino),
                )
            ]
        return [n for n in names if perms.xattr_visible(caller, n)]

    def removexattr(self, caller: Identity, vol: str, ino: int, name: bytes) -> None:
        _check_name(name)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _allow(caller, node, name, write=True)
            gone = cur.execute(
                "DELETE FROM xattrs WHERE volume = ? AND ino = ? AND name = ? RETURNING 1",
                (v.id, ino, name),
            ).fetchone()
            if gone is None:
                raise XfsError(errno.ENODATA, f"no xattr {rows.show(name)} on inode {ino}")
            rows.set_inode(cur, v, node, ctime_ns=self._store.clock())
