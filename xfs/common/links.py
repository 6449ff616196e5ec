"""Links: one mutual-TLS connection as the RPC layer uses it, in two implementations.

The RPC layer (``xfs.common.rpc``) sends whole frames and receives whole frames; how the
bytes cross TLS is a link's business:

- ``StreamLink``, the control plane: ``trio.SSLStream`` over a trio socket, no threads.
  A small request costs no hand-off between threads, so a round trip is a fraction of
  what a threaded link costs; its bulk throughput (~380 MiB/s here) is more than
  metadata needs. The MRC serves on it, and clients and OSDs reach the MRC with it.
- ``ThreadLink``, the data plane: ``xfs.common.tls.TLSConnection``, OpenSSL driven from
  blocking threads with the GIL released (~3x trio's bulk throughput). OSDs serve on it.

A peer may use either: TLS on the wire is the same. See docs/design/transport.md.
"""

from __future__ import annotations

import enum
import socket
import ssl
import struct
from typing import Protocol

import trio

from xfs.common.framing import FIRST_ALLOCATION, HEADER, check_length
from xfs.common.tls import TLSConnection
from xfs.proto.errors import ProtocolError, Unavailable

_RECV_CHUNK = 256 << 10
Chunk = bytes | bytearray | memoryview
SEND_TIMEOUT = 30  # seconds a frame's send may go without progress before the link closes


class Transport(enum.StrEnum):
    STREAM = "stream"  # trio.SSLStream: control plane
    THREADS = "threads"  # blocking OpenSSL in threads: data plane


class Link(Protocol):
    """One established, authenticated-by-TLS connection."""

    def peer_certificate(self) -> bytes: ...

    async def send(self, *chunks: Chunk) -> None:
        """Send the chunks of one whole frame; frames of concurrent senders never
        interleave."""
        ...

    async def recv_frame(self, limit: int) -> bytearray:
        """The next frame's body; its length is checked against ``limit`` first. One
        receiver at a time."""
        ...

    def close(self) -> None:
        """Close at once; a blocked ``recv_frame`` or ``send`` ends with Unavailable."""
        ...


# --------------------------------------------------------------------------- stream
class StreamLink:
    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._send_lock = trio.Lock()
        self._closed = False

    @classmethod
    async def handshake(
        cls, sock: trio.socket.SocketType, ctx: ssl.SSLContext, *, server_side: bool
    ) -> StreamLink:
        """Run the TLS handshake; the caller owns the deadline. Closes ``sock`` on failure."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = trio.SSLStream(trio.SocketStream(sock), ctx, server_side=server_side)
        try:
            await stream.do_handshake()
        except BaseException:
            sock.close()
            raise
        return cls(stream)

    def peer_certificate(self) -> bytes:
        der = self._stream.getpeercert(binary_form=True)
        if not der:
            raise ProtocolError("peer presented no certificate")
        return der

    async def send(self, *chunks: Chunk) -> None:
        try:
            async with self._send_lock:
                with trio.fail_after(SEND_TIMEOUT):
                    for chunk in chunks:
                        await self._stream.send_all(chunk)
        except trio.TooSlowError:
            self.close()  # a frame half sent: nothing more can follow it
            raise Unavailable(f"send made no progress for {SEND_TIMEOUT:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise Unavailable(f"send failed: {e}") from None

    async def recv_frame(self, limit: int) -> bytearray:
        header = await self._read_exactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        check_length(length, limit)
        return await self._read_exactly(length)

    async def _read_exactly(self, n: int) -> bytearray:
        buf = self._buf
        while len(buf) < n:
            try:
                # at most FIRST_ALLOCATION at a time: the buffer follows what arrives
                want = min(max(_RECV_CHUNK, n - len(buf)), FIRST_ALLOCATION)
                data = await self._stream.receive_some(want)
            except trio.BrokenResourceError as e:
                cause = e.__cause__
                if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
                    raise ProtocolError(f"TLS error: {cause.reason}") from None
                raise Unavailable("connection closed by peer") from None
            except (trio.ClosedResourceError, OSError):
                raise Unavailable("connection closed") from None
            if not data:
                raise Unavailable("connection closed by peer")
            buf += data
        out = buf[:n]
        del buf[:n]
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # a trio socket's close wakes every task blocked on it (ClosedResourceError)
        self._stream.transport_stream.socket.close()


# --------------------------------------------------------------------------- threads
class ThreadLink:
    """A ``TLSConnection`` driven from trio: receives in one thread at a time, sends
    from any number of threads (the connection orders whole frames).

    The handshake runs in trio, over the same ``SSLObject`` and memory BIOs the
    connection then uses from threads: a peer that is slow to finish it (or never does)
    holds no thread, only a task and a socket, until the caller's deadline."""

    def __init__(self, tls: TLSConnection) -> None:
        self._tls = tls
        # each link its own threads: a peer that stops reading blocks its own sender,
        # never a pool that other connections need
        self._reader = trio.CapacityLimiter(1)
        self._writer = trio.CapacityLimiter(1)

    @classmethod
    async def handshake(
        cls, sock: trio.socket.SocketType, ctx: ssl.SSLContext, *, server_side: bool
    ) -> ThreadLink:
        """Run the TLS handshake; the caller owns the deadline. Closes ``sock`` on failure."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = ctx.wrap_bio(incoming, outgoing, server_side=server_side)
        try:
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
        raw.setblocking(True)
        # a send that makes no progress for this long fails (and closes the connection)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0))
        return cls(TLSConnection(raw, sslobj, incoming, outgoing))

    def peer_certificate(self) -> bytes:
        return self._tls.peer_certificate()

    async def send(self, *chunks: Chunk) -> None:
        await trio.to_thread.run_sync(
            self._tls.send, *chunks, limiter=self._writer, abandon_on_cancel=True
        )

    async def recv_frame(self, limit: int) -> bytearray:
        return await trio.to_thread.run_sync(
            self._tls.recv_frame, limit, limiter=self._reader, abandon_on_cancel=True
        )

    def close(self) -> None:
        self._tls.close()


# --------------------------------------------------------------------------- dialing
async def connect_link(
    host: str, port: int, ctx: ssl.SSLContext, transport: Transport, timeout: float
) -> Link:
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
            if transport is Transport.THREADS:
                return await ThreadLink.handshake(sock, ctx, server_side=False)
            return await StreamLink.handshake(sock, ctx, server_side=False)
        except trio.BrokenResourceError as e:
            reason = getattr(e.__cause__, "reason", None) or str(e.__cause__ or e)
            raise Unavailable(f"TLS handshake with {where} failed: {reason}") from None
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
