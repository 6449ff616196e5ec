"""Remote file locks and fallocate for the xfs FUSE client.

pyfuse3 registers no getlk, setlk, flock or fallocate operation, so the kernel keeps
POSIX and flock locks local to one mount, and its flush/release drop the lock owner.
The C module `xfs.client._fuse_ext` adds those operations to the session pyfuse3
creates (see its header comment); this module routes them to the file system.

Import order is the one rule: this module must be imported before pyfuse3, in every
process that mounts. Write the composition root's imports as::

    from xfs.client import fuse_ext  # before pyfuse3: see xfs.client.fuse_ext
    # isort: split
    import pyfuse3

and mount with::

    requests = fuse_ext.install(ops)            # before pyfuse3.init()
    pyfuse3.init(ops, mountpoint, options)
    fuse_ext.verify_installed()                 # right after pyfuse3.init()
    async with trio.open_nursery() as nursery:
        await nursery.start(requests.run)
        await pyfuse3.main()
        requests.stop()                         # before pyfuse3.close()

`install` and `verify_installed` raise `LockHookError` when the operations could not be
added, so a mount never silently falls back to locks local to one node.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

_PYFUSE3_FIRST = "pyfuse3" in sys.modules

_dlopen_flags = sys.getdlopenflags()
# RTLD_GLOBAL puts the module's fuse_session_new ahead of libfuse's for pyfuse3.
sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
try:
    from xfs.client import _fuse_ext
finally:
    sys.setdlopenflags(_dlopen_flags)

import pyfuse3  # noqa: E402 - must load after _fuse_ext
import trio  # noqa: E402

log = logging.getLogger(__name__)

LOCK_EOF = _fuse_ext.LOCK_EOF
"""`Lock.end` of a lock that runs to the end of the file (the kernel's OFFSET_MAX)."""


class LockHookError(RuntimeError):
    """The lock operations could not be added to pyfuse3's FUSE session."""


@dataclass(frozen=True)
class Lock:
    """A byte-range lock as the kernel describes it."""

    type: int
    """fcntl.F_RDLCK, fcntl.F_WRLCK or fcntl.F_UNLCK."""
    start: int
    end: int
    """Inclusive; LOCK_EOF for a lock to the end of the file."""
    pid: int
    """The locking process, as seen by the kernel of the mount that sent the request."""


class LockOperations(Protocol):
    """What a file system implements to serve remote locks (beside pyfuse3.Operations).

    Every coroutine answers by returning or by raising pyfuse3.FUSEError; any other
    exception becomes EIO and is logged. Blocking calls (`setlk` with sleep, `flock`
    without LOCK_NB) may be cancelled when the locking process gets a signal or the
    mount stops; they must then leave no lock granted.
    """

    async def getlk(self, ino: int, fh: int, owner: int, lock: Lock) -> Lock:
        """Return a lock that conflicts with `lock`, or one of type F_UNLCK."""
        ...

    async def setlk(self, ino: int, fh: int, owner: int, lock: Lock, sleep: bool) -> None:
        """Take or release (F_UNLCK) `lock` for `owner`.

        On conflict raise FUSEError(EAGAIN) when not `sleep`, else wait for the lock.
        """
        ...

    async def flock(self, ino: int, fh: int, owner: int, op: int) -> None:
        """flock(2): op is LOCK_SH, LOCK_EX or LOCK_UN, or'ed with LOCK_NB.

        On conflict with LOCK_NB raise FUSEError(EWOULDBLOCK).
        """
        ...

    async def fallocate(self, ino: int, fh: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2); raise FUSEError(EOPNOTSUPP) for modes not supported."""
        ...

    def lock_owner_closing(
        self, fh: int, owner: int, flock_release: bool, is_release: bool
    ) -> None:
        """Note that `owner` is closing `fh`; called before flush(fh) or release(fh).

        On flush (is_release False): drop the POSIX locks `owner` holds on the file,
        as close(2) does; the kernel sends no unlock for them. On release: drop the
        flock locks of `owner` if `flock_release` (else `owner` is meaningless) and
        the OFD locks taken through `fh`. Must not block; may record work that the
        file system's flush/release coroutines then finish.
        """
        ...


Reply = Callable[[], Awaitable[Lock | None]]


class LockRequests:
    """Serves the lock and fallocate requests of one FUSE session.

    Each request runs as its own task in the nursery of `run`, so a process waiting
    for a lock does not hold one of pyfuse3's workers. Every request is answered
    exactly once: with the operation's result, its FUSEError, EIO for any other
    exception, or EINTR when the requesting process was interrupted or `stop` ran.
    """

    def __init__(self, ops: LockOperations) -> None:
        self._ops = ops
        self._nursery: trio.Nursery | None = None
        self._stop_scope: trio.CancelScope | None = None
        self._pending: dict[int, trio.CancelScope] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve requests until `stop` (or cancellation); answer pending ones EINTR."""
        with trio.CancelScope() as self._stop_scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._nursery = None

    def stop(self) -> None:
        """Stop serving; requests still waiting are answered EINTR."""
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    def pending(self) -> int:
        """How many requests are being served now."""
        return len(self._pending)

    # Called by the C module, in the trio thread, while pyfuse3 processes a request.

    def _dispatch(self, kind: str, req: int, *args: int | bool) -> bool:
        """Start serving `req`; False makes the C side answer EIO."""
        if self._nursery is None:
            log.error("FUSE %s request while LockRequests.run is not running", kind)
            return False
        call = self._call(kind, args)
        scope = trio.CancelScope()
        self._pending[req] = scope
        self._nursery.start_soon(self._serve, kind, req, scope, call, name=f"fuse-{kind}")
        return True

    def _interrupted(self, req: int) -> None:
        scope = self._pending.get(req)
        if scope is not None:
            scope.cancel()

    def _call(self, kind: str, args: tuple[int | bool, ...]) -> Reply:
        ops = self._ops
        if kind == "getlk":
            ino, fh, owner, type_, start, end, pid = (int(a) for a in args)
            return lambda: ops.getlk(ino, fh, owner, Lock(type_, start, end, pid))
        if kind == "setlk":
            ino, fh, owner, type_, start, end, pid = (int(a) for a in args[:7])
            sleep = bool(args[7])
            return _none(lambda: ops.setlk(ino, fh, owner, Lock(type_, start, end, pid), sleep))
        if kind == "flock":
            ino, fh, owner, op = (int(a) for a in args)
            return _none(lambda: ops.flock(ino, fh, owner, op))
        if kind == "fallocate":
            ino, fh, mode, offset, length = (int(a) for a in args)
            return _none(lambda: ops.fallocate(ino, fh, mode, offset, length))
        raise ValueError(f"unknown FUSE request kind {kind!r}")

    async def _serve(self, kind: str, req: int, scope: trio.CancelScope, call: Reply) -> None:
        err = errno.EIO
        lock: Lock | None = None
        try:
            with scope:
                lock = await call()
                err = 0
            if scope.cancelled_caught:
                err = errno.EINTR
        except pyfuse3.FUSEError as exc:
            err = exc.errno
        except trio.Cancelled:
            err = errno.EINTR
            raise
        except Exception:
            log.exception("FUSE %s failed; answering EIO", kind)
        finally:
            self._pending.pop(req, None)
            _reply(kind, req, err, lock)

    def _closing(self, fh: int, owner: int, flock_release: bool, is_release: bool) -> None:
        try:
            self._ops.lock_owner_closing(fh, owner, flock_release, is_release)
        except Exception:
            log.exception("lock_owner_closing(fh=%d) failed", fh)


def _none(call: Callable[[], Awaitable[None]]) -> Reply:
    async def run() -> Lock | None:
        await call()
        return None

    return run


def _reply(kind: str, req: int, err: int, lock: Lock | None) -> None:
    """Answer `req`; never raises, so no request is left unanswered."""
    try:
        if err == 0 and kind == "getlk":
            if not isinstance(lock, Lock):
                raise TypeError(f"getlk returned {lock!r}, not a Lock")
            res = _fuse_ext.reply_lock(req, lock.type, lock.start, lock.end, lock.pid)
        else:
            res = _fuse_ext.reply_err(req, err)
    except Exception:
        log.exception("FUSE %s: bad reply; answering EIO", kind)
        res = _fuse_ext.reply_err(req, errno.EIO)
    if res != 0:
        # ENOENT: the kernel gave up on the request (interrupted process).
        log.debug("FUSE %s: reply failed: %s", kind, os.strerror(-res))


_sessions_at_install: int | None = None


def install(ops: LockOperations) -> LockRequests:
    """Route the lock and fallocate requests of the next FUSE session to `ops`.

    Call before pyfuse3.init(), then `verify_installed()` after it, and run the
    returned `LockRequests` beside pyfuse3.main(). `ops` is the pyfuse3.Operations
    object: it must implement flush, since a flush answered ENOSYS makes the kernel
    stop sending flush, and with it the unlock on close.
    """
    global _sessions_at_install
    if _PYFUSE3_FIRST or not _fuse_ext.hook_is_default():
        raise LockHookError(
            "pyfuse3 was loaded before xfs.client.fuse_ext, so FUSE locks would stay "
            "local to this node: import xfs.client.fuse_ext before pyfuse3"
        )
    if getattr(type(ops), "flush", None) is pyfuse3.Operations.flush:
        raise LockHookError(f"{type(ops).__name__} must implement flush for remote locks")
    requests = LockRequests(ops)
    _fuse_ext.set_handlers(requests._dispatch, requests._closing, requests._interrupted)
    _sessions_at_install = _fuse_ext.sessions_hooked()
    return requests


def verify_installed() -> None:
    """Raise LockHookError unless the session pyfuse3.init() just made has the lock ops."""
    if _sessions_at_install is None:
        raise LockHookError("fuse_ext.install() was not called before pyfuse3.init()")
    if _fuse_ext.sessions_hooked() <= _sessions_at_install:
        raise LockHookError(
            "pyfuse3.init() did not create its FUSE session through xfs.client._fuse_ext; "
            "FUSE locks would stay local to this node"
        )
