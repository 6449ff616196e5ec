"""The namespace of the MRC: inodes and directory entries, over the store.

Every operation takes the caller's ``Identity`` first and is ONE synchronous transaction:
nothing awaits between a permission check and the mutation it guards, so no other
request can interleave. Refusals are ``XfsError`` with the errno Linux would give.
Volumes are named by their name (``vol``); inode numbers are per volume.
Volume operations and xattrs are mixed in from ``volumes`` and ``xattrs``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from xfs.mrc import acl as acls
from xfs.mrc import inodes as rows
from xfs.mrc import perms, policies, quotas
from xfs.mrc.clients import ClientOps, register_open
from xfs.mrc.dirleases import DirLeaseOps, take_ino, taken_by
from xfs.mrc.dirseq import DirSeq
from xfs.mrc.perms import R_OK, W_OK, X_OK
from xfs.mrc.reach import Reach
from xfs.mrc.sql import Cursor, MetaStore
from xfs.mrc.volumes import VolumeOps
from xfs.mrc.xattrs import XattrOps, read_acl, write_acl
from xfs.proto.errors import XfsError
from xfs.proto.records import (
    PATH_MAX,
    ROOT_INO,
    Attr,
    DirEntry,
    Identity,
    UpdatePolicy,
    XLocSet,
)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4  # leave a whiteout (a 0:0 character device) at the source name
WHITEOUT_MODE = stat.S_IFCHR  # permission bits 0000, device number 0:0
LINK_MAX = 65000
# how old a client's time for a create under its directory lease may be (else: now)
CLIENT_TIME_SLACK = 5_000_000_000

_Where = tuple[Cursor, rows.Vol, int]  # cursor, volume, now


def _deny(code: int, what: str) -> XfsError:
    return XfsError(code, f"permission denied: {what}")


def _need(caller: Identity, node: rows.Inode, mask: int, what: str) -> None:
    if not perms.may(caller, node.attr, mask, node.access_acl):
        raise _deny(errno.EACCES, what)


def _inherited(
    caller: Identity,
    cur: Cursor,
    v: rows.Vol,
    dir_: rows.Inode,
    mode: int,
    umask: int,
    is_dir: bool,
) -> tuple[str, str, int, acls.Acl | None, acls.Acl | None]:
    """(owner, group, permission bits, access ACL, default ACL) of a new entry in
    ``dir_``: under a default ACL the umask is not applied, the default ACL limited by
    the requested mode becomes the access ACL (posix_acl_create), and a new directory
    takes it as its own default too."""
    default = read_acl(cur, v, dir_.ino, acls.DEFAULT)
    owner, group, bits = perms.new_entry(
        caller, dir_.attr, mode, umask if default is None else 0, is_dir
    )
    if default is None:
        return owner, group, bits, None, None
    access, bits = acls.inherit(default, bits)
    return owner, group, bits, access, default if is_dir else None


def _store_acls(
    cur: Cursor,
    v: rows.Vol,
    node: rows.Inode,
    access: acls.Acl | None,
    default: acls.Acl | None,
) -> Attr:
    """Store the inherited ACLs of a new inode; its attributes as they now are."""
    if default is not None:
        write_acl(cur, v, node.ino, acls.DEFAULT, default)
    if access is None:
        return node.attr
    write_acl(cur, v, node.ino, acls.ACCESS, access)
    return dataclasses.replace(node.attr, acl=True)


class Namespace(VolumeOps, XattrOps, ClientOps, DirLeaseOps):
    """The MRC's namespace operations over one ``MetaStore``."""

    def __init__(self, store: MetaStore) -> None:
        self._store = store
        self.dirseq = DirSeq(time.time_ns())  # see xfs/mrc/dirseq.py
        # moved on by every change to a directory's permissions or place (xfs/mrc/reach.py)
        self.perm_changes = 0
        self._reach = Reach(store, self)

    def batch(self) -> AbstractContextManager[None]:
        """The changes made inside as one transaction (``MetaStore.batch``): no await inside."""
        return self._store.batch()

    def _touch_dir(
        self, cur: Cursor, v: rows.Vol, ino: int, now: int, nlink_delta: int = 0
    ) -> None:
        """A directory's entries changed (every such change comes through here)."""
        rows.touch_dir(cur, v, ino, now, nlink_delta)
        self.dirseq.changed(v.id, ino)

    def reach(
        self, caller: Identity, vol: str, inos: tuple[int, ...], vid: str | None = None
    ) -> None:
        """EACCES unless ``caller`` reaches every inode of ``inos`` as a path walk from
        the root would (search on a directory above it at every level, through one of
        its links), or has it open (see ``xfs.mrc.reach``)."""
        self._reach.check(caller, vol, inos, vid)

    def may_hold(self, caller: Identity, volume_id: str, ino: int, mask: int) -> None:
        """EACCES unless ``caller`` reaches the inode and may access it for ``mask`` as
        it is now (what an XCap's rights need: see ``xfs.mrc.xcaps.grant``)."""
        name = self.volume_by_id(volume_id)[0]
        self.reach(caller, name, (ino,), volume_id)
        self.access(caller, name, ino, mask)

    def volume_by_id(self, volume_id: str) -> tuple[str, str]:
        """(name, owner) of the volume of id ``volume_id``."""
        with self._store.read() as cur:
            row = cur.execute(
                "SELECT name, owner FROM volumes WHERE id = ?", (volume_id,)
            ).fetchone()
        if row is None:
            raise XfsError(errno.ESTALE, f"no volume {volume_id}")
        return str(row[0]), str(row[1])

    # ------------------------------------------------------------------ helpers
    def _parent(
        self, caller: Identity, cur: Cursor, v: rows.Vol, parent: int, mask: int
    ) -> rows.Inode:
        """Directory ``parent``, after checking ``mask`` on it (X: search it)."""
        node = rows.directory(cur, v, parent)
        _need(caller, node, mask, f"directory {parent} in volume {v.name!r}")
        return node

    def _child(self, cur: Cursor, v: rows.Vol, parent: int, name: bytes) -> rows.Inode:
        found = rows.entry(cur, v, parent, name)
        if found is None:
            raise XfsError(errno.ENOENT, f"no entry {rows.show(name)} in directory {parent}")
        return rows.inode(cur, v, found[0])

    def _make(
        self,
        caller: Identity,
        vol: str,
        parent: int,
        name: bytes,
        mode: int,
        umask: int,
        *,
        rdev: int = 0,
        target: bytes | None = None,
        xloc: XLocSet | None = None,
    ) -> Attr:
        """Create entry ``name`` (a new inode of type ``S_IFMT(mode)``) in ``parent``."""
        rows.check_name(name)
        is_dir = stat.S_ISDIR(mode)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            now = self._store.clock()
            dir_ = self._parent(caller, cur, v, parent, X_OK)
            if rows.entry(cur, v, parent, name) is not None:
                raise XfsError(errno.EEXIST, f"entry {rows.show(name)} exists in {parent}")
            _need(caller, dir_, W_OK | X_OK, f"create {rows.show(name)} in {parent}")
            owner, group, bits, access, default = _inherited(
                caller, cur, v, dir_, mode, umask, is_dir
            )
            if target is not None:  # symbolic links: 0777 and no ACLs
                bits, access, default = 0o777, None, None
            node = rows.new_inode(
                cur,
                v,
                mode=stat.S_IFMT(mode) | bits,
                nlink=2 if is_dir else 1,
                owner=owner,
                group=group,
                now=now,
                rdev=rdev,
                xloc=xloc,
                target=target,
                size=len(target) if target is not None else 0,
            )
            attr = _store_acls(cur, v, node, access, default)
            if is_dir:  # a new directory inherits its parent's replication policy (a copy)
                policies.inherit(cur, v.id, parent, node.ino)
            rows.add_entry(cur, v, parent, name, node.ino)
            self._touch_dir(cur, v, parent, now, nlink_delta=1 if is_dir else 0)
            return attr

    def _truncate(
        self, cur: Cursor, v: rows.Vol, node: rows.Inode, size: int, now: int
    ) -> rows.Inode:
        return rows.set_inode(
            cur,
            v,
            node,
            size=size,
            truncate_epoch=node.truncate_epoch + 1,
            mtime_ns=now,
            ctime_ns=now,
        )

    # ------------------------------------------------------------------ lookups
    def lookup(self, caller: Identity, vol: str, parent: int, name: bytes) -> Attr:
        """The attributes of entry ``name`` of directory ``parent`` (needs search on it).
        ``.`` and ``..`` name the directory and its parent (the root's is itself)."""
        dots = name in (b".", b"..")
        if not dots:
            rows.check_name(name)
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            self._parent(caller, cur, v, parent, X_OK)
            if dots:
                up = parent if name == b"." else rows.parent_of(cur, v, parent)
                return rows.inode(cur, v, up).attr
            return self._child(cur, v, parent, name).attr

    def getattr(self, caller: Identity, vol: str, ino: int) -> Attr:
        with self._store.read() as cur:
            return rows.inode(cur, rows.volume(cur, vol), ino).attr

    def access(self, caller: Identity, vol: str, ino: int, mask: int) -> None:
        """EACCES unless the caller has every bit of ``mask`` (R_OK|W_OK|X_OK; F_OK=0)."""
        if mask & ~(R_OK | W_OK | X_OK):
            raise XfsError(errno.EINVAL, f"bad access mask {mask:#o}")
        with self._store.read() as cur:
            node = rows.inode(cur, rows.volume(cur, vol), ino)
        _need(caller, node, mask, f"access {mask:#o} to inode {ino}")

    def readlink(self, caller: Identity, vol: str, ino: int) -> bytes:
        with self._store.read() as cur:
            node = rows.inode(cur, rows.volume(cur, vol), ino)
        if node.target is None:
            raise XfsError(errno.EINVAL, f"inode {ino} is not a symbolic link")
        return node.target

    def readdir(
        self, caller: Identity, vol: str, ino: int, cursor: int, limit: int
    ) -> list[DirEntry]:
        """At most ``limit`` entries after ``cursor`` (0: from the start), in cursor order.

        A cursor stays with its entry until the entry goes, so a listing continued from
        the last cursor seen misses no entry that stayed and repeats none.
        """
        if limit < 0:
            raise XfsError(errno.EINVAL, f"readdir limit {limit}")
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            self._parent(caller, cur, v, ino, R_OK)
            found = cur.execute(
                f"SELECT d.name, d.cursor, {', '.join('i.' + c for c in rows.ATTR_COLS)}, "
                f"{rows.access_acl_sql('i')} IS NOT NULL "
                "FROM dentries d JOIN inodes i ON i.volume = d.volume AND i.ino = d.ino "
                "WHERE d.volume = ? AND d.parent = ? AND d.cursor > ? "
                "ORDER BY d.cursor LIMIT ?",
                (acls.ACCESS, v.id, ino, cursor, limit),
            ).fetchall()
        blksize = v.striping.stripe_size
        return [
            DirEntry(
                name=bytes(r[0]), attr=rows.row_to_attr(r[2:-1], blksize, bool(r[-1])), cursor=r[1]
            )
            for r in found
        ]

    # ------------------------------------------------------------------ attributes
    def setattr(
        self,
        caller: Identity,
        vol: str,
        ino: int,
        *,
        mode: int | None = None,
        owner: str | None = None,
        group: str | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        atime_now: bool = False,
        mtime_now: bool = False,
        ctime_now: bool = False,
        writer: bool = False,
    ) -> tuple[Attr, XLocSet | None]:
        """chmod, chown, truncate and utimens in one, checked as Linux does.

        ``writer``: the caller truncates through a descriptor it opened for writing (it
        showed that open's XCap), so the mode bits are not checked again, as ftruncate(2).
        ``ctime_now`` alone (chown to -1, -1) only sets ctime, which anyone may.

        The XLocSet is returned whenever a size was set on a regular file with a layout:
        the OSDs must be truncated too (even to an unchanged size: the MRC's size may lag
        what the OSDs hold).
        """
        if size is not None and size < 0:
            raise XfsError(errno.EINVAL, f"negative size {size} for inode {ino}")
        if owner == "" or group == "":
            raise XfsError(errno.EINVAL, f"empty owner or group for inode {ino}")
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            now = self._store.clock()
            fields: dict[str, object] = {}
            xloc = None
            if size is not None:
                if node.is_dir:
                    raise XfsError(errno.EISDIR, f"cannot truncate directory {ino}")
                if not stat.S_ISREG(node.mode):
                    raise XfsError(errno.EINVAL, f"cannot truncate inode {ino}: not a file")
                if not writer:
                    _need(caller, node, W_OK, f"truncate inode {ino}")
                _writable(node)
                grows = quotas.charge(node.mode, size, node.xloc) - quotas.charge(
                    node.mode, node.attr.size, node.xloc
                )
                quotas.check_bytes(cur, v.id, node.attr.owner, f"truncate inode {ino}", grows)
                fields.update(size=size, truncate_epoch=node.truncate_epoch + 1, mtime_ns=now)
                xloc = node.layout()
            new_mode = node.mode
            if owner is not None or group is not None:
                if not perms.may_chown(caller, node.attr, owner, group):
                    raise _deny(errno.EPERM, f"chown of inode {ino} to {owner}:{group}")
                new_mode = perms.chown_result(caller, node.attr)
                if owner is not None and owner != node.attr.owner:
                    # the new owner's quotas take the inode (ext4's chown does the same)
                    what = f"chown of inode {ino} to {owner}"
                    quotas.check_files(cur, v.id, owner, what, 1, moving=True)
                    now_size = node.attr.size if size is None else size
                    held = quotas.charge(node.mode, now_size, node.xloc)
                    quotas.check_bytes(cur, v.id, owner, what, held, moving=True)
                if owner is not None:
                    fields["owner"] = owner
                if group is not None:
                    fields["grp"] = group
            if mode is not None:
                if perms.may_chmod(caller, node.attr):
                    new_mode = perms.chmod_result(caller, node.attr, mode, group or node.attr.group)
                elif perms.may_drop_setid(caller, node.attr, mode, node.access_acl):
                    new_mode = stat.S_IFMT(node.mode) | (mode & 0o7777)  # a writer's kill-priv
                else:
                    raise _deny(errno.EPERM, f"chmod of inode {ino}")
            if new_mode != node.mode or mode is not None:
                fields["mode"] = new_mode
            explicit = (atime_ns is not None and not atime_now) or (
                mtime_ns is not None and not mtime_now
            )
            touch = atime_now and mtime_now
            if size is None and (atime_now or mtime_now) and not touch:
                explicit = True  # one time set to now, the other left alone (UTIME_OMIT)
            if (explicit or atime_now or mtime_now) and size is None:
                # (with a size, the times are the truncate's own: W was checked above)
                denial = perms.utimens_denial(caller, node.attr, explicit, touch, node.access_acl)
                if denial is not None:
                    raise _deny(denial, f"set times of inode {ino}")
                if atime_now or atime_ns is not None:
                    fields["atime_ns"] = now if atime_now else atime_ns
                if mtime_now or mtime_ns is not None:
                    fields["mtime_ns"] = now if mtime_now else mtime_ns
            if fields or ctime_now:  # every change sets ctime
                fields["ctime_ns"] = now
            access = node.access_acl
            if access is not None and new_mode & 0o777 != node.mode & 0o777:
                write_acl(cur, v, ino, acls.ACCESS, acls.chmod(access, new_mode))  # in sync
            if node.is_dir and fields.keys() & {"mode", "owner", "grp"}:
                self.perm_changes += 1
            node = rows.set_inode(cur, v, node, **fields)
            return node.attr, xloc

    def update_size(
        self,
        caller: Identity,
        vol: str,
        ino: int,
        size: int,
        mtime_ns: int | None = None,
        *,
        epoch: int | None = None,
    ) -> Attr:
        """A writer reached ``size``: the file grows to it (never shrinks), and mtime and
        ctime become ``mtime_ns`` (or now). The writer's XCap was checked by the caller;
        permission was checked when the file was opened. With ``epoch`` (the XCap's
        truncate epoch) older than the file's, nothing changes: a truncate came after."""
        if size < 0:
            raise XfsError(errno.EINVAL, f"negative size {size} for inode {ino}")
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            if node.is_dir:
                raise XfsError(errno.EISDIR, f"inode {ino} is a directory")
            if not stat.S_ISREG(node.mode):
                raise XfsError(errno.EINVAL, f"inode {ino} is not a regular file")
            if epoch is not None and epoch < node.truncate_epoch:
                return node.attr
            t = self._store.clock() if mtime_ns is None else mtime_ns
            node = rows.set_inode(
                cur, v, node, size=max(size, node.attr.size), mtime_ns=t, ctime_ns=t
            )
            return node.attr

    # ------------------------------------------------------------------ creation
    def mknod(
        self,
        caller: Identity,
        vol: str,
        parent: int,
        name: bytes,
        mode: int,
        rdev: int,
        umask: int,
    ) -> Attr:
        """A regular file (without layout), FIFO, socket or (super only) device node. A
        whiteout (character device 0:0) needs no privilege, as on Linux since 5.8."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise XfsError(errno.EPERM, f"mknod of directory {rows.show(name)}: use mkdir")
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            whiteout = kind == stat.S_IFCHR and rdev == 0
            if not caller.is_super and not whiteout:
                raise _deny(errno.EPERM, f"device node {rows.show(name)} (super only)")
        elif kind in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
            rdev = 0
        else:
            raise XfsError(errno.EINVAL, f"mknod of {rows.show(name)}: bad type {mode:#o}")
        return self._make(caller, vol, parent, name, kind | (mode & 0o7777), umask, rdev=rdev)

    def mkdir(
        self, caller: Identity, vol: str, parent: int, name: bytes, mode: int, umask: int
    ) -> Attr:
        return self._make(caller, vol, parent, name, stat.S_IFDIR | (mode & 0o7777), umask)

    def symlink(self, caller: Identity, vol: str, parent: int, name: bytes, target: bytes) -> Attr:
        if not target:
            raise XfsError(errno.ENOENT, f"symlink {rows.show(name)}: empty target")
        if len(target) >= PATH_MAX:
            raise XfsError(errno.ENAMETOOLONG, f"symlink target of {len(target)} bytes")
        if b"\0" in target:
            raise XfsError(errno.EINVAL, f"symlink {rows.show(name)}: NUL in target")
        return self._make(caller, vol, parent, name, stat.S_IFLNK | 0o777, 0, target=bytes(target))

    def create(
        self,
        caller: Identity,
        vol: str,
        parent: int,
        name: bytes,
        mode: int,
        flags: int,
        umask: int,
        xloc: XLocSet | None,
        client: str | None = None,
        *,
        ino: int | None = None,
        time_ns: int | None = None,
    ) -> tuple[Attr, XLocSet | None, int]:
        """open(O_CREAT): a new regular file with layout ``xloc``, or, if ``name``
        exists and O_EXCL is not set, ``open`` of it. Returns (attr, xloc, truncate
        epoch); an existing file without a layout gets ``xloc``. (The kernel calls create
        only after a negative lookup: an existing entry here is a race.) ``xloc`` None
        (only with ``ino``): the file has no layout until its first open.

        With ``ino`` (a create made under ``client``'s directory lease): the new file
        gets that number, from the client's reserved ranges, and the client's time
        ``time_ns`` if it is at most ``CLIENT_TIME_SLACK`` old; an entry that already
        leads to ``ino`` is this create sent again, and is only opened again."""
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise XfsError(errno.EINVAL, f"create {rows.show(name)}: not a regular file mode")
        rows.check_name(name)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            now = self._store.clock()
            if time_ns is not None and now - CLIENT_TIME_SLACK <= time_ns <= now:
                now = time_ns
            dir_ = self._parent(caller, cur, v, parent, X_OK)
            found = rows.entry(cur, v, parent, name)
            if found is not None and ino is not None:
                assert client is not None
                if found[0] != ino or not taken_by(cur, client, v.id, ino):
                    raise XfsError(errno.EEXIST, f"entry {rows.show(name)} exists in {parent}")
                # sent again: its first sending made it, with a number this client took
                node = rows.inode(cur, v, ino)
                register_open(cur, caller, client, v.id, ino, flags)
                return node.attr, node.layout() or xloc, node.truncate_epoch
            if found is not None:
                if flags & os.O_EXCL:
                    raise XfsError(errno.EEXIST, f"entry {rows.show(name)} exists in {parent}")
                node = rows.inode(cur, v, found[0])
                if node.is_dir:
                    raise XfsError(errno.EISDIR, f"entry {rows.show(name)} is a directory")
                node = self._open(caller, cur, v, node, flags, now)
                if not stat.S_ISREG(node.mode):
                    raise XfsError(
                        errno.EEXIST, f"entry {rows.show(name)} exists, not a regular file"
                    )
                if node.xloc is None and xloc is not None:
                    node = rows.set_inode(cur, v, node, xloc=rows.encode_xloc(xloc))
                if client is not None:
                    register_open(cur, caller, client, v.id, node.ino, flags)
                return node.attr, node.layout() or xloc, node.truncate_epoch
            _need(caller, dir_, W_OK | X_OK, f"create {rows.show(name)} in {parent}")
            owner, group, bits, access, _ = _inherited(caller, cur, v, dir_, mode, umask, False)
            if ino is not None:
                assert client is not None
                take_ino(cur, client, v.id, ino)
            node = rows.new_inode(
                cur,
                v,
                mode=stat.S_IFREG | bits,
                nlink=1,
                owner=owner,
                group=group,
                now=now,
                xloc=xloc,
                ino=ino,
            )
            attr = _store_acls(cur, v, node, access, None)
            rows.add_entry(cur, v, parent, name, node.ino)
            self._touch_dir(cur, v, parent, now)
            if client is not None:
                register_open(cur, caller, client, v.id, node.ino, flags)
            return attr, xloc, node.truncate_epoch

    def file_dir(self, vol: str, ino: int) -> int:
        """A directory that holds a name of file ``ino`` (the root for an orphan): where
        the placement policy of a late layout is looked up."""
        with self._store.read() as cur:
            v = rows.volume(cur, vol)
            parent = rows.parent_of(cur, v, ino)
        return ROOT_INO if parent == ino else parent

    def give_layout(self, vol: str, ino: int, xloc: XLocSet) -> tuple[Attr, XLocSet, int]:
        """Give a regular file that has no layout yet (made when no OSD was known) the
        layout ``xloc``; (attr, its layout, truncate epoch) as they then are."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            if node.xloc is None and stat.S_ISREG(node.attr.mode):
                node = rows.set_inode(cur, v, node, xloc=rows.encode_xloc(xloc))
            layout = node.layout()
            if layout is None:
                raise XfsError(errno.EINVAL, f"inode {ino} has no data to open")
            return node.attr, layout, node.truncate_epoch

    def open(
        self,
        caller: Identity,
        vol: str,
        ino: int,
        flags: int,
        client: str | None = None,
        *,
        check: bool = True,
    ) -> tuple[Attr, XLocSet | None, int]:
        """Check ``flags``' access (unless ``check`` is False: the caller showed an XCap
        for it); O_TRUNC empties a regular file (new truncate epoch). With ``client``,
        the file is registered as open there (see ``clients``).
        Returns (attr, xloc, truncate epoch)."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            node = rows.inode(cur, v, ino)
            node = self._open(caller, cur, v, node, flags, self._store.clock(), check=check)
            if client is not None:
                register_open(cur, caller, client, v.id, node.ino, flags)
            return node.attr, node.layout(), node.truncate_epoch

    def _open(
        self,
        caller: Identity,
        cur: Cursor,
        v: rows.Vol,
        node: rows.Inode,
        flags: int,
        now: int,
        *,
        check: bool = True,
    ) -> rows.Inode:
        mask = perms.open_mask(flags)
        if mask is None:
            raise XfsError(errno.EINVAL, f"bad open flags {flags:#x} for inode {node.ino}")
        if stat.S_ISLNK(node.mode):
            raise XfsError(errno.ELOOP, f"inode {node.ino} is a symbolic link")
        if node.is_dir and mask & W_OK:
            raise XfsError(errno.EISDIR, f"inode {node.ino} is a directory")
        if flags & os.O_DIRECTORY and not node.is_dir:
            raise XfsError(errno.ENOTDIR, f"inode {node.ino} is not a directory")
        if check:
            _need(caller, node, mask, f"open inode {node.ino} with flags {flags:#x}")
        if mask & W_OK or flags & os.O_TRUNC:
            _writable(node)
        if flags & os.O_TRUNC and stat.S_ISREG(node.mode):
            node = self._truncate(cur, v, node, 0, now)
        return node

    # ------------------------------------------------------------------ replica sets
    def update_xloc(
        self, vid: str, ino: int, change: Callable[[XLocSet], XLocSet]
    ) -> tuple[XLocSet, int]:
        """Apply ``change`` (see ``replicas``) to a file's XLocSet in one transaction.

        Returns the XLocSet now stored and the file's truncate epoch. No permission
        check: the callers (replication handlers, the healer) have made theirs.
        """
        with self._store.transaction() as cur:
            old, epoch = _layout_row(cur, vid, ino)
            new = change(old)
            if new != old:
                blob = rows.encode_xloc(new)
                owner, mode, size, was = cur.execute(
                    "UPDATE inodes SET xloc = ? WHERE volume = ? AND ino = ? "
                    "RETURNING owner, mode, size, ?",
                    (blob, vid, ino, rows.encode_xloc(old)),
                ).fetchone()
                rows.recharge(cur, vid, mode, (owner, size, was), {"xloc": blob})
            return new, epoch

    def layout_of(self, vid: str, ino: int) -> tuple[XLocSet, int]:
        """A file's XLocSet and truncate epoch by volume id (ESTALE: no such file)."""
        with self._store.read() as cur:
            return _layout_row(cur, vid, ino)

    def is_open(self, vol: str, ino: int) -> bool:
        """Whether any client has the inode open."""
        with self._store.read() as cur:
            return rows.is_open(cur, rows.volume(cur, vol).id, ino)

    def replicated_files(
        self, after: tuple[str, int] = ("", 0), limit: int = 500, *, everything: bool = False
    ) -> list[tuple[str, int, XLocSet]]:
        """Files whose XLocSet is replicated (or will be; with ``everything``, all files
        with a layout), in (volume id, ino) order, from after ``after``."""
        with self._store.read() as cur:
            found = cur.execute(
                "SELECT volume, ino, xloc FROM inodes WHERE xloc IS NOT NULL "
                "AND (volume, ino) > (?, ?) ORDER BY volume, ino LIMIT ?",
                (*after, limit),
            ).fetchall()
        out = []
        for vid, ino, blob in found:
            xloc = rows.decode_xloc(blob)
            if everything or xloc.replicated or xloc.factor > 1:
                out.append((vid, ino, xloc))
        if not out and found and len(found) == limit:  # a batch of unreplicated files
            return self.replicated_files((found[-1][0], found[-1][1]), limit, everything=everything)
        return out

    def link(self, caller: Identity, vol: str, ino: int, new_parent: int, new_name: bytes) -> Attr:
        rows.check_name(new_name)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            now = self._store.clock()
            node = rows.inode(cur, v, ino)
            if node.attr.nlink == 0:
                raise XfsError(errno.ENOENT, f"inode {ino} has no name left to link to")
            dir_ = self._parent(caller, cur, v, new_parent, X_OK)
            if rows.entry(cur, v, new_parent, new_name) is not None:
                raise XfsError(errno.EEXIST, f"entry {rows.show(new_name)} exists in {new_parent}")
            denial = perms.link_denial(caller, node.attr, node.access_acl)
            if denial is not None:  # (Linux checks this before the directory's permission)
                raise _deny(denial, f"hard link to inode {ino}")
            _need(caller, dir_, W_OK | X_OK, f"link {rows.show(new_name)} in {new_parent}")
            if node.attr.nlink >= LINK_MAX:
                raise XfsError(errno.EMLINK, f"inode {ino} has {LINK_MAX} links")
            rows.add_entry(cur, v, new_parent, new_name, ino)
            self._touch_dir(cur, v, new_parent, now)
            return rows.set_inode(cur, v, node, nlink=node.attr.nlink + 1, ctime_ns=now).attr

    # ------------------------------------------------------------------ removal
    def _removable(
        self, caller: Identity, cur: Cursor, v: rows.Vol, parent: int, name: bytes
    ) -> rows.Inode:
        """The inode of ``name`` in ``parent``, if the caller may remove that entry."""
        rows.check_name(name)
        dir_ = self._parent(caller, cur, v, parent, X_OK)
        node = self._child(cur, v, parent, name)
        _need(caller, dir_, W_OK | X_OK, f"remove {rows.show(name)} from {parent}")
        if not perms.sticky_allows(caller, dir_.attr, node.attr):
            raise _deny(errno.EPERM, f"{rows.show(name)} in sticky directory {parent}")
        return node

    def unlink(
        self, caller: Identity, vol: str, parent: int, name: bytes, ino: int | None = None
    ) -> int | None:
        """Remove a non-directory entry. Returns the pending deletion id if that was the
        last link of a file with objects on OSDs, else None.

        With ``ino`` (an unlink made under a directory lease): the entry must lead to
        that inode (else ESTALE); an entry already gone is this unlink sent again."""
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            now = self._store.clock()
            if ino is not None:
                self._parent(caller, cur, v, parent, X_OK)
                found = rows.entry(cur, v, parent, name)
                if found is None:
                    return None
                if found[0] != ino:
                    raise XfsError(
                        errno.ESTALE, f"entry {rows.show(name)} leads to {found[0]}, not {ino}"
                    )
            node = self._removable(caller, cur, v, parent, name)
            if node.is_dir:
                raise XfsError(errno.EISDIR, f"{rows.show(name)} is a directory: use rmdir")
            rows.remove_entry(cur, v, parent, name)
            self._touch_dir(cur, v, parent, now)
            return rows.drop_link(cur, v, node, now)

    def rmdir(self, caller: Identity, vol: str, parent: int, name: bytes) -> None:
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            now = self._store.clock()
            node = self._removable(caller, cur, v, parent, name)
            if not node.is_dir:
                raise XfsError(errno.ENOTDIR, f"{rows.show(name)} is not a directory")
            if node.ino == ROOT_INO:
                raise XfsError(errno.EBUSY, "the root directory cannot be removed")
            if rows.has_entries(cur, v, node.ino):
                raise XfsError(errno.ENOTEMPTY, f"directory {rows.show(name)} is not empty")
            rows.remove_entry(cur, v, parent, name)
            self._touch_dir(cur, v, parent, now, nlink_delta=-1)
            rows.drop_inode(cur, v, node.ino, None)

    # ------------------------------------------------------------------ rename
    def rename(
        self,
        caller: Identity,
        vol: str,
        parent: int,
        name: bytes,
        new_parent: int,
        new_name: bytes,
        flags: int = 0,
    ) -> int | None:
        """Move entry ``name`` of ``parent`` to ``new_name`` of ``new_parent``, replacing
        what is there (RENAME_NOREPLACE: refuse; RENAME_EXCHANGE: swap the two).
        RENAME_WHITEOUT (not with EXCHANGE) leaves a whiteout at ``name`` in the same
        transaction: a character device 0:0 with permission bits 0000, owned by the
        caller, as overlayfs' upper directories need. Like Linux since 5.8 ("vfs: allow
        unprivileged whiteout creation"), it needs no privilege: a 0:0 device is no device.
        Returns the pending deletion id if a replaced file lost its last link."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) or (
            flags & RENAME_EXCHANGE and flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)
        ):
            raise XfsError(errno.EINVAL, f"bad rename flags {flags:#x}")
        rows.check_name(name)
        rows.check_name(new_name)
        with self._store.transaction() as cur:
            v = rows.volume(cur, vol)
            return _Rename(self, caller, cur, v, self._store.clock()).run(
                parent, name, new_parent, new_name, flags
            )


class _Rename:
    """One rename, inside the caller's transaction (split out for readability)."""

    def __init__(self, ns: Namespace, caller: Identity, cur: Cursor, v: rows.Vol, now: int) -> None:
        self.ns, self.caller, self.cur, self.v, self.now = ns, caller, cur, v, now

    def run(
        self, parent: int, name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> int | None:
        cur, v, caller = self.cur, self.v, self.caller
        src_dir = self.ns._parent(caller, cur, v, parent, X_OK)
        dst_dir = self.ns._parent(caller, cur, v, new_parent, X_OK)
        src = self.ns._child(cur, v, parent, name)
        found = rows.entry(cur, v, new_parent, new_name)
        dst = None if found is None else rows.inode(cur, v, found[0])
        exchange = bool(flags & RENAME_EXCHANGE)
        if dst is None and exchange:
            raise XfsError(errno.ENOENT, f"no entry {rows.show(new_name)} in {new_parent}")
        if dst is not None and flags & RENAME_NOREPLACE:
            raise XfsError(errno.EEXIST, f"entry {rows.show(new_name)} exists in {new_parent}")
        # Loops: a directory may not go below itself; the target may not be above the
        # source (for a plain rename it is then non-empty, as Linux reports).
        if src.is_dir and rows.is_ancestor(cur, v, src.ino, new_parent):
            raise XfsError(errno.EINVAL, f"cannot move directory {rows.show(name)} into itself")
        if dst is not None and dst.is_dir and rows.is_ancestor(cur, v, dst.ino, parent):
            code = errno.EINVAL if exchange else errno.ENOTEMPTY
            raise XfsError(code, f"{rows.show(new_name)} is an ancestor of {rows.show(name)}")
        if dst is not None and dst.ino == src.ino:
            return None  # two links to one inode: nothing to do (POSIX)
        self._may_remove(src_dir, src, parent, name)
        if dst is not None:
            self._may_remove(dst_dir, dst, new_parent, new_name)
            if not exchange and src.is_dir and not dst.is_dir:
                raise XfsError(errno.ENOTDIR, f"{rows.show(new_name)} is not a directory")
            if not exchange and not src.is_dir and dst.is_dir:
                raise XfsError(errno.EISDIR, f"{rows.show(new_name)} is a directory")
        else:
            _need(caller, dst_dir, W_OK | X_OK, f"create {rows.show(new_name)} in {new_parent}")
        if src.is_dir or (dst is not None and dst.is_dir):
            self.ns.perm_changes += 1  # what lies below it is reached another way
        if parent != new_parent:
            # a directory changing parent rewrites its "..": Linux wants write on it
            for node, n in ((src, name), (dst if exchange else None, new_name)):
                if node is not None and node.is_dir:
                    _need(caller, node, W_OK, f"move directory {rows.show(n)}")
        if exchange:
            assert dst is not None
            self._exchange(parent, name, src, new_parent, new_name, dst)
            return None
        pending = None
        if dst is not None:
            if dst.is_dir and rows.has_entries(cur, v, dst.ino):
                raise XfsError(errno.ENOTEMPTY, f"directory {rows.show(new_name)} not empty")
            rows.remove_entry(cur, v, new_parent, new_name)
            if dst.is_dir:
                self.ns._touch_dir(cur, v, new_parent, self.now, nlink_delta=-1)
                rows.drop_inode(cur, v, dst.ino, None)
            else:
                pending = rows.drop_link(cur, v, dst, self.now)
        rows.remove_entry(cur, v, parent, name)
        if flags & RENAME_WHITEOUT:
            self._whiteout(src_dir, parent, name)
        rows.add_entry(cur, v, new_parent, new_name, src.ino)
        moved_dir = src.is_dir and parent != new_parent
        self.ns._touch_dir(cur, v, parent, self.now, nlink_delta=-1 if moved_dir else 0)
        self.ns._touch_dir(cur, v, new_parent, self.now, nlink_delta=1 if moved_dir else 0)
        rows.set_inode(cur, v, src, ctime_ns=self.now)
        return pending

    def _whiteout(self, dir_: rows.Inode, parent: int, name: bytes) -> None:
        """A new whiteout at ``name`` of ``dir_``, made as mknod would make it (the
        directory's setgid group and default ACL apply; Linux file systems do the same)."""
        cur, v = self.cur, self.v
        owner, group, bits, access, _ = _inherited(self.caller, cur, v, dir_, 0, 0, False)
        node = rows.new_inode(
            cur,
            v,
            mode=WHITEOUT_MODE | bits,
            nlink=1,
            owner=owner,
            group=group,
            now=self.now,
        )
        _store_acls(cur, v, node, access, None)
        rows.add_entry(cur, v, parent, name, node.ino)

    def _may_remove(self, dir_: rows.Inode, node: rows.Inode, parent: int, name: bytes) -> None:
        _need(self.caller, dir_, W_OK | X_OK, f"rename {rows.show(name)} in {parent}")
        if not perms.sticky_allows(self.caller, dir_.attr, node.attr):
            raise _deny(errno.EPERM, f"{rows.show(name)} in sticky directory {parent}")

    def _exchange(
        self,
        parent: int,
        name: bytes,
        src: rows.Inode,
        new_parent: int,
        new_name: bytes,
        dst: rows.Inode,
    ) -> None:
        cur, v, now = self.cur, self.v, self.now
        for p, n, ino in ((parent, name, dst.ino), (new_parent, new_name, src.ino)):
            cur.execute(
                "UPDATE dentries SET ino = ?, cursor = ? "
                "WHERE volume = ? AND parent = ? AND name = ?",
                (ino, rows.next_cursor(cur), v.id, p, n),
            )
        shift = 0
        if parent != new_parent and src.is_dir != dst.is_dir:
            shift = 1 if dst.is_dir else -1  # subdirectories moving into ``parent``
        self.ns._touch_dir(cur, v, parent, now, nlink_delta=shift)
        self.ns._touch_dir(cur, v, new_parent, now, nlink_delta=-shift)
        rows.set_inode(cur, v, src, ctime_ns=now)
        rows.set_inode(cur, v, dst, ctime_ns=now)


def _writable(node: rows.Inode) -> None:
    """A sealed (read-only replicated) file refuses writes and truncates."""
    layout = node.layout()
    if layout is not None and layout.update_policy is UpdatePolicy.RONLY:
        raise XfsError(errno.EPERM, f"inode {node.ino} is sealed (read-only replicated)")


def _layout_row(cur: Cursor, vid: str, ino: int) -> tuple[XLocSet, int]:
    """A file's XLocSet and truncate epoch (ESTALE: no such file, or no layout)."""
    row = cur.execute(
        "SELECT xloc, truncate_epoch FROM inodes WHERE volume = ? AND ino = ?", (vid, ino)
    ).fetchone()
    if row is None or row[0] is None:
        raise XfsError(errno.ESTALE, f"no file {vid}:{ino} (stale)")
    return rows.decode_xloc(row[0]), int(row[1])
