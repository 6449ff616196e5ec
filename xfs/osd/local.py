"""The OSD's local socket: descriptors of files' object directories for mounts on this
host (``xfs.common.local``; docs/design/local-reads.md).

A peer that is not root or this OSD's own user is refused and audited. A request is
checked as a read would be (``OSDHandlers.open_local``); a refusal is answered with its
errno, a grant with the descriptor.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

from xfs.common import audit as audits
from xfs.common import local
from xfs.common.audit import Audit
from xfs.proto.errors import XfsError
from xfs.proto.methods import LocalOpen, LocalOpened

log = logging.getLogger(__name__)

ACTION = "osd.local_open"
IDLE = 60.0  # seconds a connection may wait between requests
MAX_CONNECTIONS = 64


class LocalServer:
    def __init__(
        self, uuid: str, grant: Callable[[LocalOpen], Awaitable[int]], audit: Audit
    ) -> None:
        self._uuid = uuid
        self._grant = grant
        self._audit = audit
        self._connections = 0  # served now (counted at accept, so the bound holds)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            try:
                await sock.bind(local.socket_name(self._uuid))
            except OSError as e:  # (another process of this uuid): reads go over TLS
                log.warning("no local reads: binding the local socket failed: %s", e)
                task_status.started()
                return
            sock.listen(16)
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await sock.accept()
                    if self._connections >= MAX_CONNECTIONS:
                        conn.close()  # local peers are trusted, but not without bound
                        continue
                    self._connections += 1
                    nursery.start_soon(self._serve, conn)

    async def _serve(self, conn: trio.socket.SocketType) -> None:
        try:
            with conn:
                uid = local.peer_uid(conn)
                if not local.trusted(uid):
                    why = f"local peer runs as uid {uid}, neither root nor this OSD's user"
                    self._audit.record(audits.DENY, f"uid:{uid}", ACTION, "EPERM", why=why)
                    return
                while True:
                    with trio.move_on_after(IDLE) as idle:
                        try:
                            message = await local.receive(conn, LocalOpen)
                        except ValueError as e:
                            self._audit.record(
                                audits.DENY, f"uid:{uid}", ACTION, "EINVAL", why=str(e)
                            )
                            return
                        except OSError:
                            return
                    if idle.cancelled_caught or message is None:
                        return  # idle too long, or the peer closed
                    request, fds = message
                    for fd in fds:  # (a client sends none)
                        os.close(fd)
                    try:
                        await self._answer(conn, uid, request)
                    except OSError:  # the peer went
                        return
        finally:
            self._connections -= 1

    async def _answer(self, conn: trio.socket.SocketType, uid: int, request: LocalOpen) -> None:
        try:
            fd = await self._grant(request)
        except XfsError as e:
            if e.code in (errno.EACCES, errno.EPERM):
                self._audit.record(
                    audits.DENY,
                    f"uid:{uid}",
                    ACTION,
                    errno.errorcode[e.code],
                    why=e.message,
                    file=request.xcap.file_id,
                )
            await local.send(conn, LocalOpened(e.code, e.message))
            return
        except Exception:  # a bug must not end the OSD: the mount reads over TLS
            log.exception("granting a local read of %s failed", request.xcap.file_id)
            await local.send(conn, LocalOpened(errno.EIO, "internal error"))
            return
        try:
            await local.send(conn, LocalOpened(0), fd)
        finally:
            os.close(fd)
