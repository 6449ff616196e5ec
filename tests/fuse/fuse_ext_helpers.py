"""Processes for tests/fuse/test_fuse_ext.py, run as scripts so import order is real.

`python fuse_ext_helpers.py mount MOUNTPOINT LOG` mounts a tiny in-memory file system
(files `a`, `b`, `nofalloc`) whose lock operations use an in-process lock table; each
lock, fallocate and closing call is appended to LOG as one JSON line. It prints
`ready` once mounted.

`python fuse_ext_helpers.py agent` reads JSON commands on stdin and prints one JSON
result per command, so a test can drive a locking process step by step.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOCK_STRUCT = "hhxxxxqqixxxx"  # struct flock on x86_64: type, whence, start, len, pid
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


# --------------------------------------------------------------------------- agent


class Interrupted(Exception):
    """Raised by the SIGALRM handler, so an interrupted F_SETLKW is not retried."""


def _on_alarm(signum: int, frame: object) -> None:
    raise Interrupted


def _agent_command(fds: dict[int, int], cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    if op == "open":
        fd = os.open(cmd["path"], cmd.get("flags", os.O_RDWR))
        fds[fd] = fd
        return {"fd": fd}
    if op == "dup":
        fd = os.dup(cmd["fd"])
        return {"fd": fd}
    if op == "close":
        os.close(cmd["fd"])
        return {}
    if op == "fcntl":
        arg = struct.pack(FLOCK_STRUCT, cmd["type"], os.SEEK_SET, cmd["start"], cmd["len"], 0)
        if cmd.get("alarm"):
            signal.alarm(cmd["alarm"])
        try:
            out = fcntl.fcntl(cmd["fd"], cmd["cmd"], arg)
        finally:
            signal.alarm(0)
        type_, _, start, length, pid = struct.unpack(FLOCK_STRUCT, out)
        return {"type": type_, "start": start, "len": length, "pid": pid}
    if op == "flock":
        fcntl.flock(cmd["fd"], cmd["flags"])
        return {}
    if op == "fallocate":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        if libc.fallocate(cmd["fd"], cmd["mode"], cmd["offset"], cmd["length"]) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return {"size": os.fstat(cmd["fd"]).st_size}
    if op == "posix_fallocate":
        os.posix_fallocate(cmd["fd"], cmd["offset"], cmd["length"])
        return {"size": os.fstat(cmd["fd"]).st_size}
    raise ValueError(f"unknown op {op!r}")


def agent() -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    fds: dict[int, int] = {}
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            result = _agent_command(fds, cmd)
        except OSError as exc:
            result = {"errno": exc.errno}
        except Interrupted:
            result = {"interrupted": True}
        print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- mount


def mount(mountpoint: str, log_path: str) -> None:
    # The import order is what this helper tests: fuse_ext before pyfuse3.
    from xfs.client import fuse_ext

    # isort: split
    import pyfuse3
    import trio

    Lock = fuse_ext.Lock
    log_file = Path(log_path).open("a")  # noqa: SIM115 - lives as long as the process

    def record(**event: Any) -> None:
        log_file.write(json.dumps(event) + "\n")
        log_file.flush()

    @dataclass
    class Held:
        flock: bool  # a flock(2) lock, else POSIX or OFD
        ino: int
        fh: int
        owner: int
        type: int
        start: int
        end: int
        pid: int

    class LockFs(pyfuse3.Operations):
        """Root directory with three files; locks in an in-process table."""

        def __init__(self) -> None:
            super().__init__()
            self.names = {b"a": 2, b"b": 3, b"nofalloc": 4}
            self.data = {ino: bytearray() for ino in self.names.values()}
            self.open_files: dict[int, int] = {}  # fh -> ino
            self.next_fh = 1
            self.locks: list[Held] = []
            self.changed = trio.Event()

        # -- the file system
        async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = inode
            if inode == pyfuse3.ROOT_INODE:
                attr.st_mode = stat.S_IFDIR | 0o755
                attr.st_nlink = 2
            elif inode in self.data:
                attr.st_mode = stat.S_IFREG | 0o666
                attr.st_nlink = 1
                attr.st_size = len(self.data[inode])
            else:
                raise pyfuse3.FUSEError(errno.ENOENT)
            attr.st_blksize = 4096
            attr.st_blocks = (attr.st_size + 511) // 512
            attr.attr_timeout = 0
            attr.entry_timeout = 0
            return attr

        async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> Any:
            if parent_inode != pyfuse3.ROOT_INODE or name not in self.names:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return await self.getattr(self.names[name])

        async def opendir(self, inode: int, ctx: Any) -> Any:
            return inode

        async def readdir(self, fh: Any, start_id: int, token: Any) -> None:
            for i, (name, ino) in enumerate(sorted(self.names.items())):
                if i < start_id:
                    continue
                if not pyfuse3.readdir_reply(token, name, await self.getattr(ino), i + 1):
                    return

        async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
            fh = self.next_fh
            self.next_fh += 1
            self.open_files[fh] = inode
            return pyfuse3.FileInfo(fh=fh)

        async def read(self, fh: Any, off: int, size: int) -> bytes:
            return bytes(self.data[self.open_files[fh]][off : off + size])

        async def write(self, fh: Any, off: int, buf: bytes) -> int:
            data = self.data[self.open_files[fh]]
            if len(data) < off:
                data.extend(b"\0" * (off - len(data)))
            data[off : off + len(buf)] = buf
            return len(buf)

        async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
            if fields.update_size:
                del self.data[inode][attr.st_size :]
            return await self.getattr(inode)

        async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
            st = pyfuse3.StatvfsData()
            st.f_bsize = st.f_frsize = 4096
            st.f_blocks = st.f_bfree = st.f_bavail = 1 << 20
            st.f_namemax = 255
            return st

        async def flush(self, fh: Any) -> None:
            pass  # lock_owner_closing already dropped the owner's locks

        async def release(self, fh: Any) -> None:
            del self.open_files[fh]

        # -- the lock table
        def _conflict(self, flock: bool, ino: int, owner: int, lock: Any) -> Held | None:
            for held in self.locks:
                if (
                    held.flock == flock
                    and held.ino == ino
                    and held.owner != owner
                    and held.start <= lock.end
                    and lock.start <= held.end
                    and fcntl.F_WRLCK in (held.type, lock.type)
                ):
                    return held
            return None

        def _drop(self, keep: Any) -> None:
            before = len(self.locks)
            self.locks = [held for held in self.locks if keep(held)]
            if len(self.locks) != before:
                self.changed.set()
                self.changed = trio.Event()

        def _set(self, flock: bool, ino: int, fh: int, owner: int, lock: Any) -> None:
            pieces: list[Held] = []
            for held in self.locks:
                mine = held.flock == flock and held.ino == ino and held.owner == owner
                if mine and held.start <= lock.end and lock.start <= held.end:
                    if held.start < lock.start:
                        pieces.append(Held(**{**held.__dict__, "end": lock.start - 1}))
                    if held.end > lock.end:
                        pieces.append(Held(**{**held.__dict__, "start": lock.end + 1}))
                else:
                    pieces.append(held)
            if lock.type != fcntl.F_UNLCK:
                pieces.append(
                    Held(flock, ino, fh, owner, lock.type, lock.start, lock.end, lock.pid)
                )
            self.locks = pieces
            self.changed.set()
            self.changed = trio.Event()

        async def _acquire(
            self, flock: bool, ino: int, fh: int, owner: int, lock: Any, sleep: bool, busy: int
        ) -> None:
            while lock.type != fcntl.F_UNLCK and self._conflict(flock, ino, owner, lock):
                if not sleep:
                    raise pyfuse3.FUSEError(busy)
                await self.changed.wait()
            # No await between the conflict check above and this update.
            self._set(flock, ino, fh, owner, lock)

        async def getlk(self, ino: int, fh: int, owner: int, lock: Any) -> Any:
            record(op="getlk", ino=ino, owner=owner, type=lock.type)
            held = self._conflict(False, ino, owner, lock)
            if held is None:
                return Lock(fcntl.F_UNLCK, lock.start, lock.end, 0)
            return Lock(held.type, held.start, held.end, held.pid)

        async def setlk(self, ino: int, fh: int, owner: int, lock: Any, sleep: bool) -> None:
            record(
                op="setlk",
                ino=ino,
                owner=owner,
                type=lock.type,
                start=lock.start,
                end=lock.end,
                pid=lock.pid,
                sleep=sleep,
            )
            await self._acquire(False, ino, fh, owner, lock, sleep, errno.EAGAIN)

        async def flock(self, ino: int, fh: int, owner: int, op: int) -> None:
            record(op="flock", ino=ino, owner=owner, flock_op=op)
            kind = op & ~fcntl.LOCK_NB
            type_ = {fcntl.LOCK_SH: fcntl.F_RDLCK, fcntl.LOCK_EX: fcntl.F_WRLCK}.get(
                kind, fcntl.F_UNLCK
            )
            lock = Lock(type_, 0, fuse_ext.LOCK_EOF, 0)
            sleep = not op & fcntl.LOCK_NB
            await self._acquire(True, ino, fh, owner, lock, sleep, errno.EWOULDBLOCK)

        async def fallocate(self, ino: int, fh: int, mode: int, offset: int, length: int) -> None:
            record(op="fallocate", ino=ino, mode=mode, offset=offset, length=length)
            if mode != 0 or ino == self.names[b"nofalloc"]:
                raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
            data = self.data[ino]
            if len(data) < offset + length:
                data.extend(b"\0" * (offset + length - len(data)))

        def lock_owner_closing(
            self, fh: int, owner: int, flock_release: bool, is_release: bool
        ) -> None:
            record(
                op="closing", fh=fh, owner=owner, flock_release=flock_release, is_release=is_release
            )
            ino = self.open_files[fh]
            if is_release:
                self._drop(lambda held: held.fh != fh)
            else:
                self._drop(lambda held: held.flock or held.ino != ino or held.owner != owner)

    ops = LockFs()
    requests = fuse_ext.install(ops)
    pyfuse3.init(ops, mountpoint, {"fsname=xfs-locktest"})
    fuse_ext.verify_installed()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(requests.run)
            print("ready", flush=True)
            await pyfuse3.main()
            requests.stop()

    try:
        trio.run(serve)
    finally:
        pyfuse3.close(unmount=True)


def unhooked() -> None:
    """Imports pyfuse3 first: install() must refuse."""
    import pyfuse3

    # isort: split
    from xfs.client import fuse_ext

    try:
        fuse_ext.install(pyfuse3.Operations())
    except fuse_ext.LockHookError as exc:
        print(f"refused: {exc}", flush=True)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "agent":
        agent()
    elif command == "mount":
        mount(sys.argv[2], sys.argv[3])
    elif command == "unhooked":
        unhooked()
    else:
        raise SystemExit(f"unknown command {command!r}")
