"""Links: one mutual-TLS connection as the RPC layer uses it.

The RPC layer (``xfs.common.rpc``) sends whole frames and receives whole frames; a
``TLSLink`` carries them. It drives an ``ssl.SSLObject`` over two memory BIOs from trio,
on a non-blocking socket: OpenSSL encrypts or decrypts a whole frame in one call, and no
thread is involved, so a small request costs no hand-off between threads and a 1 MiB
frame crosses TLS in one C call. Measured here (loopback, two processes, 1 MiB requests
with small answers, and small round trips), against the two links it replaced
(docs/design/transport.md):

=================================  ==========  ================
link                               1 MiB RPCs  small round trip
=================================  ==========  ================
``trio.SSLStream``                 443 MiB/s   232 µs
blocking OpenSSL in threads        765 MiB/s   455 µs
``TLSLink``                        878 MiB/s   144 µs
=================================  ==========  ================
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from xfs.common.framing import FIRST_ALLOCATION, HEADER, check_length
from xfs.proto.errors import ProtocolError, Unavailable

_RECV_CHUNK = 256 << 10
Chunk = bytes | bytearray | memoryview
SEND_TIMEOUT = 30  # seconds a frame's send may go without progress before the link closes


class Link(Protocol):
    """One established, authenticated-by-TLS connection."""

    def peer_certificate(self) -> bytes: ...

    async def send(self, *chunks: Chunk) -> None:
        """Send the chunks of one whole frame; frames of concurrent senders never
        interleave."""
        ...

    async def recv_frame(
        self, limit: int, admit: Callable[[int], Awaitable[None]] | None = None
    ) -> bytearray:
        """The next frame's body; its length is checked against ``limit`` first, and
        ``admit`` (a budget: see xfs.common.budget) awaited with it before the body is
        read. One receiver at a time."""
        ...

    def close(self) -> None:
        """Close at once; a blocked ``recv_frame`` or ``send`` ends with Unavailable."""
        ...


class TLSLink:
    """An ``SSLObject`` over memory BIOs, driven from trio on a non-blocking socket.

    A send or receive calls the socket at once and waits for trio only when the kernel
    says it would block: the common case costs two system calls and no trio machinery.
    Trio runs one task at a time, so the SSL object needs no lock. Senders are ordered by
    a trio lock (a frame's records go out whole); one task receives. Bytes that reading
    makes OpenSSL send (TLS post-handshake messages) go out under the same lock, after
    any frame being sent: records leave in the order OpenSSL made them."""

    def __init__(
        self,
        sock: socket.socket,
        sslobj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._ssl = sslobj
        self._in = incoming
        self._out = outgoing
        self._send_lock = trio.Lock()
        self._recv_buf = bytearray(_RECV_CHUNK)
        self._waited = False  # the frame being received waited for the socket
        self._closed = False

    @classmethod
    async def handshake(
        cls, sock: trio.socket.SocketType, ctx: ssl.SSLContext, *, server_side: bool
    ) -> TLSLink:
        """Run the TLS handshake; the caller owns the deadline. Closes ``sock`` on failure."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            sslobj = ctx.wrap_bio(incoming, outgoing, server_side=server_side)
            while True:
                try:
                    sslobj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                await _send_all(sock, outgoing.read())
                data = await sock.recv(_RECV_CHUNK)
                if not data:
                    raise Unavailable("peer closed the connection during the TLS handshake")
                incoming.write(data)
            await _send_all(sock, outgoing.read())
            raw = socket.socket(fileno=sock.detach())
        except BaseException:
            sock.close()
            raise
        return cls(raw, sslobj, incoming, outgoing)

    def peer_certificate(self) -> bytes:
        der = self._ssl.getpeercert(binary_form=True)
        if not der:
            raise ProtocolError("peer presented no certificate")
        return der

    # ------------------------------------------------------------------ sending
    async def send(self, *chunks: Chunk) -> None:
        async with self._send_lock:
            if self._closed:
                raise Unavailable("connection closed")
            try:
                for chunk in chunks:
                    self._ssl.write(chunk)
            except ssl.SSLError as e:
                self.close()
                raise Unavailable(f"send failed: {e.reason}") from None
            await self._flush()

    async def _flush(self) -> None:
        """Send what OpenSSL has made (the send lock held). A send that makes no progress
        for SEND_TIMEOUT, fails, or is cancelled half way closes the link: the peer may
        hold part of a record, and nothing can follow it."""
        view = memoryview(self._out.read())
        try:
            while view:
                try:
                    view = view[self._sock.send(view) :]
                except BlockingIOError:
                    with trio.fail_after(SEND_TIMEOUT):
                        await trio.lowlevel.wait_writable(self._sock)
        except trio.TooSlowError:
            self.close()
            raise Unavailable(f"send made no progress for {SEND_TIMEOUT:g} s") from None
        except (trio.ClosedResourceError, OSError) as e:
            self.close()
            raise Unavailable(f"send failed: {e}") from None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ receiving
    async def _fill(self) -> None:
        """Read more ciphertext from the socket into the SSL object."""
        try:
            while True:
                try:
                    n = self._sock.recv_into(self._recv_buf)
                    break
                except BlockingIOError:
                    self._waited = True
                    await trio.lowlevel.wait_readable(self._sock)
        except (trio.ClosedResourceError, OSError):
            raise Unavailable("connection closed") from None
        if n == 0:
            raise Unavailable("connection closed by peer")
        self._in.write(memoryview(self._recv_buf)[:n])

    async def _read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                n = int(self._ssl.read(len(view) - got, view[got:]))
            except ssl.SSLWantReadError:
                n = -1
            except ssl.SSLZeroReturnError:
                raise Unavailable("connection closed by peer") from None
            except ssl.SSLError as e:
                raise ProtocolError(f"TLS error: {e.reason}") from None
            if self._out.pending:  # post-handshake messages that reading made
                async with self._send_lock:
                    if not self._closed:
                        await self._flush()
            if n < 0:
                await self._fill()
            elif n == 0:
                raise Unavailable("connection closed by peer")
            else:
                got += n

    async def recv_frame(
        self, limit: int, admit: Callable[[int], Awaitable[None]] | None = None
    ) -> bytearray:
        """One frame body, refusing lengths over ``limit`` before allocating, and
        awaiting ``admit(length)`` first if given. Memory follows the bytes that arrive,
        not the length a peer announces: a body starts at FIRST_ALLOCATION at most and
        doubles as it fills."""
        self._waited = False
        header = bytearray(HEADER.size)
        await self._read_into(memoryview(header))
        (length,) = HEADER.unpack(header)
        check_length(length, limit)
        if admit is not None:
            await admit(length)
        body = bytearray(min(length, FIRST_ALLOCATION))
        await self._read_into(memoryview(body))
        while len(body) < length:
            start = len(body)
            body.extend(bytes(min(length - start, start)))
            await self._read_into(memoryview(body)[start:])
        if not self._waited:  # all of it was there: let other tasks run before the next
            await trio.lowlevel.checkpoint()
        return body

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Close at once, waking every task that waits on the socket."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


# --------------------------------------------------------------------------- dialing
async def connect_link(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> Link:
    """Open a TCP connection and run the client handshake within ``timeout`` seconds."""
    where = f"{host}:{port}"
    with trio.move_on_after(timeout) as scope:
        try:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            try:
                await sock.connect((host, port))
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            raise Unavailable(f"cannot connect to {where}: {e.strerror or e}") from None
        try:
            return await TLSLink.handshake(sock, ctx, server_side=False)
        except ssl.SSLError as e:
            raise Unavailable(f"TLS handshake with {where} failed: {e.reason}") from None
        except OSError as e:
            raise Unavailable(f"TLS handshake with {where} failed: {e}") from None
    assert scope.cancelled_caught
    raise Unavailable(f"cannot connect to {where}: timed out after {timeout:g} s")


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view) :]
