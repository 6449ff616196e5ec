"""A minimal pyfuse3 + trio pass-through file system: the Python FUSE ceiling.

    python bench/passthrough.py SOURCE_DIR MOUNTPOINT [--attr-timeout S] [--writeback]
                                [--allow-other]

Each operation is a system call or two on SOURCE_DIR, inline (no threads): its cost over
the local disk is that of FUSE + pyfuse3 + trio, which no Python FUSE file system beats.
Inode numbers are the source's st_ino (the source root shows as 1); a dict maps inode ->
path, with lookup counts for `forget`; file handles are the descriptors themselves.
Runs in the foreground until SIGTERM/SIGINT or unmount, then prints request statistics
(count and sizes of reads and writes, count of lookups and getattrs).
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import signal
import sys

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE


def _errors(fn):
    """Turn OSError into FUSEError: pyfuse3 survives nothing else."""
    @functools.wraps(fn)
    async def wrapper(*args):
        try:
            return await fn(*args)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
    return wrapper


class Passthrough(pyfuse3.Operations):
    def __init__(self, source: str, attr_timeout: float = 1.0, writeback: bool = False):
        super().__init__()
        self.enable_writeback_cache = writeback
        self.source = os.fsencode(os.path.abspath(source))
        self.root_ino = os.lstat(self.source).st_ino
        self.paths: dict[int, bytes] = {ROOT: self.source}
        self.nlookup: dict[int, int] = {}
        self.timeout = attr_timeout
        self.dirs: dict[int, list] = {}
        self.dirs_path: dict[int, bytes] = {}  # opendir handle -> its path (fsyncdir)
        self.next_dh = 1
        self.stats = dict.fromkeys(("read", "read_bytes", "read_max",
                                    "write", "write_bytes", "write_max",
                                    "lookup", "getattr"), 0)

    def _ino(self, st_ino: int) -> int:  # swap the source root's number and 1
        return ROOT if st_ino == self.root_ino else self.root_ino if st_ino == ROOT else st_ino

    def _attr(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._ino(st.st_ino)
        a.entry_timeout = a.attr_timeout = self.timeout
        a.st_mode, a.st_nlink = st.st_mode, st.st_nlink
        a.st_uid, a.st_gid, a.st_rdev = st.st_uid, st.st_gid, st.st_rdev
        a.st_size, a.st_blksize, a.st_blocks = st.st_size, st.st_blksize, st.st_blocks
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        return a

    def _path(self, ino: int) -> bytes:
        try:
            return self.paths[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _remember(self, path: bytes, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = self._attr(st)
        self.paths[a.st_ino] = path
        self.nlookup[a.st_ino] = self.nlookup.get(a.st_ino, 0) + 1
        return a

    def _flags(self, flags: int) -> int:
        flags &= ~os.O_CREAT
        if self.enable_writeback_cache:  # the kernel may read through any handle
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            flags &= ~os.O_APPEND  # and it computes append offsets itself
        return flags

    def _own(self, path: bytes, ctx: pyfuse3.RequestContext) -> None:
        if os.geteuid() == 0 and (ctx.uid or ctx.gid):
            os.lchown(path, ctx.uid, ctx.gid)

    @_errors
    async def lookup(self, parent_inode, name, ctx=None):
        self.stats["lookup"] += 1
        path = os.path.join(self._path(parent_inode), name)
        return self._remember(path, os.lstat(path))

    async def forget(self, inode_list):
        for ino, n in inode_list:
            left = self.nlookup.get(ino, 0) - n
            if left > 0:
                self.nlookup[ino] = left
            else:
                self.nlookup.pop(ino, None)
                if ino != ROOT:
                    self.paths.pop(ino, None)

    @_errors
    async def getattr(self, inode, ctx=None):
        self.stats["getattr"] += 1
        return self._attr(os.lstat(self._path(inode)))

    @_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        if fields.update_size:
            if fh is not None:
                os.ftruncate(fh, attr.st_size)
            else:
                os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, attr.st_mode & 0o7777, follow_symlinks=False)
        if fields.update_uid or fields.update_gid:
            os.lchown(path, attr.st_uid if fields.update_uid else -1,
                      attr.st_gid if fields.update_gid else -1)
        if fields.update_atime or fields.update_mtime:
            st = os.lstat(path)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        return self._attr(os.lstat(path))

    @_errors
    async def opendir(self, inode, ctx):
        path = self._path(inode)
        names = os.listdir(path)  # bytes in, bytes out
        dh, self.next_dh = self.next_dh, self.next_dh + 1
        self.dirs[dh] = [(n, os.path.join(path, n)) for n in names]
        self.dirs_path[dh] = path
        return dh

    @_errors
    async def readdir(self, fh, start_id, token):
        entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, path = entries[i]
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed since opendir
            if not pyfuse3.readdir_reply(token, name, self._attr(st), i + 1):
                break
            self._remember(path, st)  # readdir_reply took a lookup reference

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)
        self.dirs_path.pop(fh, None)

    @_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        path = os.path.join(self._path(parent_inode), name)
        os.mkdir(path, mode)
        self._own(path, ctx)
        return self._remember(path, os.lstat(path))

    @_errors
    async def rmdir(self, parent_inode, name, ctx):
        os.rmdir(os.path.join(self._path(parent_inode), name))

    @_errors
    async def unlink(self, parent_inode, name, ctx):
        os.unlink(os.path.join(self._path(parent_inode), name))

    @_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)  # (no RENAME_NOREPLACE or EXCHANGE)
        old = os.path.join(self._path(parent_inode_old), name_old)
        new = os.path.join(self._path(parent_inode_new), name_new)
        os.rename(old, new)
        for ino, path in list(self.paths.items()):  # it and everything below it moved
            if path == old or path.startswith(old + b"/"):
                self.paths[ino] = new + path[len(old):]

    @_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        path = os.path.join(self._path(new_parent_inode), new_name)
        os.link(self._path(inode), path)
        return self._remember(path, os.lstat(path))

    @_errors
    async def fsyncdir(self, fh, datasync):
        fd = os.open(self._path(ROOT) if fh not in self.dirs else self.dirs_path[fh],
                     os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @_errors
    async def statfs(self, ctx):
        sv, s = os.statvfs(self.source), pyfuse3.StatvfsData()
        for f in ("bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "favail",
                  "namemax"):
            setattr(s, "f_" + f, getattr(sv, "f_" + f))
        return s

    @_errors
    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=os.open(self._path(inode), self._flags(flags)))

    @_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        path = os.path.join(self._path(parent_inode), name)
        fd = os.open(path, self._flags(flags) | os.O_CREAT, mode)
        self._own(path, ctx)
        return pyfuse3.FileInfo(fh=fd), self._remember(path, os.fstat(fd))

    def _count(self, op: str, n: int) -> None:  # what request sizes the kernel sends
        st = self.stats
        st[op] += 1
        st[op + "_bytes"] += n
        st[op + "_max"] = max(st[op + "_max"], n)

    @_errors
    async def read(self, fh, off, size):
        self._count("read", size)
        return os.pread(fh, size, off)

    @_errors
    async def write(self, fh, off, buf):
        self._count("write", len(buf))
        return os.pwrite(fh, buf, off)

    async def flush(self, fh):
        pass  # data already went to the source with each write

    @_errors
    async def fsync(self, fh, datasync):
        (os.fdatasync if datasync else os.fsync)(fh)

    @_errors
    async def release(self, fh):
        os.close(fh)


async def _serve() -> None:
    async with trio.open_nursery() as nursery:
        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("--attr-timeout", type=float, default=1.0,
                   help="entry and attribute cache timeout in seconds (default 1.0)")
    p.add_argument("--writeback", action="store_true", help="enable the kernel writeback cache")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users in (FUSE allow_other: root, or user_allow_other in "
                        "/etc/fuse.conf); the kernel checks their permissions "
                        "(default_permissions)")
    args = p.parse_args(argv)
    os.umask(0)  # modes arrive already masked by the kernel
    ops = Passthrough(args.source, args.attr_timeout, args.writeback)
    options = set(pyfuse3.default_options) | {"fsname=passthrough", "default_permissions"}
    if args.allow_other:
        options.add("allow_other")
    pyfuse3.init(ops, args.mountpoint, options)
    try:
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
        print("passthrough stats: " + " ".join(f"{k}={v}" for k, v in ops.stats.items()),
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
