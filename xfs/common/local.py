"""The local socket of an OSD: how a mount on the same host reads objects itself.

Each OSD listens on an abstract Unix socket named after its uuid (``socket_name``), so a
mount finds the OSDs of its own host (and network namespace) by trying to connect, and
nothing on disk needs cleaning up. Both ends check the other's uid (SO_PEERCRED): only
root or the user the process itself runs as is trusted, so neither a local user can ask
an OSD for descriptors nor can one pose as an OSD to a mount.

On a connection, each request is one message: a 4-byte big-endian length, then the
msgpack of a record. A reply to ``LocalOpen`` is ``LocalOpened``; with code 0 a
descriptor comes with it (SCM_RIGHTS). See docs/design/local-reads.md.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import TypeVar

import msgpack
import trio

from xfs.proto.codec import Record

LENGTH = struct.Struct(">I")
MESSAGE_LIMIT = 64 * 1024  # a LocalOpen holds an XCap and an XLocSet: a few KiB
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid

R = TypeVar("R", bound=Record)


def socket_name(osd_uuid: str) -> bytes:
    """The abstract socket address of an OSD (a leading NUL byte: no file)."""
    return b"\0xfs-osd-" + osd_uuid.encode()


def peer_uid(sock: trio.socket.SocketType) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
    return int(_CREDS.unpack(raw)[1])


def trusted(uid: int) -> bool:
    """Whether a peer running as ``uid`` may use (or serve) local reads."""
    return uid in (0, os.geteuid())


async def send(sock: trio.socket.SocketType, record: Record, fd: int | None = None) -> None:
    body = msgpack.packb(record.to_wire(), use_bin_type=True)
    data = LENGTH.pack(len(body)) + body
    ancillary = (
        [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    )
    sent = await sock.sendmsg([data], ancillary)
    while sent < len(data):
        sent += await sock.send(data[sent:])


async def receive(sock: trio.socket.SocketType, kind: type[R]) -> tuple[R, list[int]] | None:
    """One message and the descriptors that came with it; None at end of stream.
    ValueError for a message that is too long or does not decode as ``kind``."""
    fds: list[int] = []
    buf = b""
    need = LENGTH.size
    while len(buf) < need:
        data, ancillary, _, _ = await sock.recvmsg(need - len(buf), socket.CMSG_SPACE(4 * 4))
        for level, kind_, payload in ancillary:
            if level == socket.SOL_SOCKET and kind_ == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(array.array("i", payload[:usable]))
        if not data:
            _close(fds)
            if buf:
                raise ValueError("message cut short")
            return None
        buf += data
        if need == LENGTH.size and len(buf) >= LENGTH.size:
            (length,) = LENGTH.unpack(buf[: LENGTH.size])
            if length > MESSAGE_LIMIT:
                _close(fds)
                raise ValueError(f"message of {length} bytes (limit {MESSAGE_LIMIT})")
            need += length
    try:
        record = kind.from_wire(msgpack.unpackb(buf[LENGTH.size :], raw=False))
    except Exception as e:
        _close(fds)
        raise ValueError(f"not a {kind.__name__}: {e}") from None
    return record, fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
