"""Extended attributes of the namespace: get, set, list, remove, under Linux's rules.

Which namespaces exist and who may touch them is decided in ``perms`` (pure); here the
names and values are checked and the rows written.

POSIX ACLs are stored here too, as the xattrs ``system.posix_acl_access`` and
``system.posix_acl_default`` whose values are ``xfs.mrc.acl.encode``d ACLs (grid names,
never local ids), under the rules of Linux's ``set_posix_acl``: anyone may read them;
only the owner (or super) sets or removes them (EPERM); a default ACL only on a
directory (EACCES); an access ACL sets the mode's permission bits, and one that says no
more than the mode is not kept.
"""

from __future__ import annotations

import errno
import stat

from xfs.mrc import acl as acls
from xfs.mrc import inodes as rows
from xfs.mrc import perms
from xfs.mrc.sql import Cursor, MetaStore
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
    denial = perms.xattr_denial(caller, node.attr, name, write, node.access_acl)
    if denial is None:
        return
    if denial == errno.ENODATA:
        raise XfsError(errno.ENODATA, f"no xattr {rows.show(name)} on inode {node.ino}")
    what = "set" if write else "read"
    raise XfsError(denial, f"may not {what} xattr {rows.show(name)} of inode {node.ino}")


# ---------------------------------------------------------------------- ACL rows
def read_acl(cur: Cursor, v: rows.Vol, ino: int, name: bytes) -> acls.Acl | None:
    """The stored ACL ``name`` (acl.ACCESS or acl.DEFAULT) of an inode, or None."""
    row = cur.execute(
        "SELECT value FROM xattrs WHERE volume = ? AND ino = ? AND name = ?", (v.id, ino, name)
    ).fetchone()
    if row is None:
        return None
    try:
        return acls.decode(bytes(row[0]))
    except XfsError as e:
        raise XfsError(errno.EIO, f"inode {ino}: stored ACL is corrupt: {e}") from None


def write_acl(cur: Cursor, v: rows.Vol, ino: int, name: bytes, acl: acls.Acl | None) -> bool:
    """Store (None: remove) ACL ``name`` of an inode; whether a row changed."""
    if acl is None:
        gone = cur.execute(
            "DELETE FROM xattrs WHERE volume = ? AND ino = ? AND name = ? RETURNING 1",
            (v.id, ino, name),
        ).fetchone()
        return gone is not None
    cur.execute(
        "INSERT INTO xattrs (volume, ino, name, value) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (volume, ino, name) DO UPDATE SET value = excluded.value",
        (v.id, ino, name, acls.encode(acl)),
    )
    return True


def _may_set_acl(caller: Identity, node: rows.Inode, name: bytes, removing: bool) -> bool:
    """Checks of Linux's ``set_posix_acl``, in its order; False: nothing to do (removing
    the default ACL of a non-directory succeeds)."""
    if stat.S_ISLNK(node.mode):
        raise XfsError(errno.EOPNOTSUPP, f"inode {node.ino}: symbolic links have no ACLs")
    if name == acls.DEFAULT and not node.is_dir:
        if removing:
            return False
        raise XfsError(errno.EACCES, f"inode {node.ino}: only directories have default ACLs")
    if not perms.is_owner_or_super(caller, node.attr):
        raise XfsError(errno.EPERM, f"permission denied: ACL of inode {node.ino} (not owner)")
    return True


class XattrOps:
    """Mixed into ``Namespace``."""

    _store: MetaStore
    perm_changes: int

    # ---------------------------------------------------------------- ACLs
    def _get_acl(self, vol: str, ino: int, name: bytes) -> bytes:
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            rows.inode(cur, v, ino)
            acl = read_acl(cur, v, ino, name)
        if acl is None:
            raise XfsError(errno.ENODATA, f"no ACL {rows.show(name)} on inode {ino}")
        return acls.encode(acl)

    def _set_acl(self, caller: Identity, vol: str, ino: int, name: bytes, value: bytes) -> None:
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            _may_set_acl(caller, node, name, removing=False)
            acl = acls.decode(value)
            if node.is_dir:
                self.perm_changes += 1  # (xfs/mrc/reach.py)
            now = self._store.clock()
            if name == acls.DEFAULT:
                write_acl(cur, v, ino, name, acl)
                rows.set_inode(cur, v, node, ctime_ns=now)
                return
            # posix_acl_update_mode: the permission bits follow the ACL; S_ISGID goes
            # unless the caller is in the group; an ACL the mode can say is not kept
            mode = node.mode & ~0o777 | acls.mode_bits(acl)
            if not perms.in_group(caller, node.attr.group):
                mode &= ~stat.S_ISGID
            write_acl(cur, v, ino, name, None if acl.is_minimal() else acl)
            rows.set_inode(cur, v, node, mode=mode, ctime_ns=now)

    def _remove_acl(self, caller: Identity, vol: str, ino: int, name: bytes) -> None:
        """Removing an ACL that is not there succeeds, as on Linux; the mode stays."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            if _may_set_acl(caller, node, name, removing=True) and write_acl(
                cur, v, ino, name, None
            ):
                rows.set_inode(cur, v, node, ctime_ns=self._store.clock())
                if node.is_dir:
                    self.perm_changes += 1

    # ---------------------------------------------------------------- xattrs
    def getxattr(self, caller: Identity, vol: str, ino: int, name: bytes) -> bytes:
        _check_name(name)
        if name in acls.NAMES:
            return self._get_acl(vol, ino, name)
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
        if name in acls.NAMES:  # (flags do not apply to ACLs, as on Linux)
            self._set_acl(caller, vol, ino, name, value)
            return
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
        # (a name outside the namespaces is the MRC's own, as xfs.policy: never listed)
        return [n for n in names if perms.xattr_namespace(n) and perms.xattr_visible(caller, n)]

    def removexattr(self, caller: Identity, vol: str, ino: int, name: bytes) -> None:
        _check_name(name)
        if name in acls.NAMES:
            self._remove_acl(caller, vol, ino, name)
            return
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
