"""Mutual TLS 1.3 connections, driven by blocking threads for throughput.

``trio.SSLStream`` moves ~380 MiB/s on these machines; OpenSSL driven from threads with
the GIL released moves ~3x more. A ``TLSConnection`` therefore owns a blocking socket and
an ``SSLObject`` over memory BIOs: one reader thread decrypts incoming frames while other
threads encrypt and send, the SSL object itself guarded by a lock (OpenSSL objects are not
safe for concurrent use), and whole frames ordered on the wire by a send lock.

Everything here blocks; ``xfs.common.rpc`` calls it through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from xfs.common.framing import FIRST_ALLOCATION, HEADER, check_length
from xfs.proto.errors import ProtocolError, Unavailable

_RECV_CHUNK = 256 << 10


def _context(purpose: ssl.Purpose, cert: Path, key: Path, cadata: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Peers are named by the identity extension of their certificate, checked after the
    # handshake (xfs.common.identity), not by host name.
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cadata=cadata)
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def server_context(cert: Path, key: Path, cadata: str) -> ssl.SSLContext:
    return _context(ssl.Purpose.CLIENT_AUTH, cert, key, cadata)


def client_context(cert: Path, key: Path, cadata: str) -> ssl.SSLContext:
    return _context(ssl.Purpose.SERVER_AUTH, cert, key, cadata)


class TLSConnection:
    """One TLS connection over a blocking socket. One reader thread, any number of senders.
    ``xfs.common.links.ThreadLink.handshake`` makes it, after a handshake run in trio."""

    def __init__(
        self,
        sock: socket.socket,
        sslobj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        self._sock = sock
        self._ssl = sslobj
        self._in = incoming
        self._out = outgoing
        self._ssl_lock = threading.Lock()  # the SSLObject and both BIOs
        self._send_lock = threading.Lock()  # draining _out and sending happen together
        self._recv_buf = bytearray(_RECV_CHUNK)
        self._eof = False
        self._closed = False

    def peer_certificate(self) -> bytes:
        der = self._ssl.getpeercert(binary_form=True)
        if not der:
            raise ProtocolError("peer presented no certificate")
        return der

    # ------------------------------------------------------------------ sending
    def send(self, *chunks: bytes | bytearray | memoryview) -> None:
        """Encrypt and send chunks as one unit on the wire (thread-safe)."""
        try:
            with self._send_lock:
                for chunk in chunks:
                    with self._ssl_lock:
                        self._ssl.write(chunk)
                        data = self._out.read()
                    self._sock.sendall(data)
        except (OSError, ssl.SSLError, ValueError) as e:
            self.close()  # a frame may be half sent (or stuck): nothing may follow it
            raise Unavailable(f"send failed: {e}") from None

    # ------------------------------------------------------------------ receiving
    def _fill(self) -> None:
        """Read more ciphertext from the socket into the SSL object (reader thread only)."""
        try:
            n = self._sock.recv_into(self._recv_buf)
        except OSError as e:
            raise Unavailable(f"receive failed: {e}") from None
        if n == 0:
            self._eof = True
            raise Unavailable("connection closed by peer")
        with self._ssl_lock:
            self._in.write(memoryview(self._recv_buf)[:n])
        if self._out.pending:  # TLS post-handshake traffic produced by reading
            with self._send_lock:
                with self._ssl_lock:
                    data = self._out.read()
                self._sock.sendall(data)

    def _read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                with self._ssl_lock:
                    n = len(view) - got
                    n = int(self._ssl.read(n, view[got:]))
            except ssl.SSLWantReadError:
                self._fill()
                continue
            except ssl.SSLZeroReturnError:
                raise Unavailable("connection closed by peer") from None
            except ssl.SSLError as e:
                raise ProtocolError(f"TLS error: {e.reason}") from None
            if n == 0:
                raise Unavailable("connection closed by peer")
            got += n

    def recv_frame(self, limit: int) -> bytearray:
        """Receive one frame body, refusing lengths over ``limit`` before allocating."""
        header = bytearray(HEADER.size)
        self._read_into(memoryview(header))
        (length,) = HEADER.unpack(header)
        check_length(length, limit)
        # memory follows the bytes that arrive, not the length a peer announces: a
        # frame starts at FIRST_ALLOCATION at most and doubles as it fills
        body = bytearray(min(length, FIRST_ALLOCATION))
        self._read_into(memoryview(body))
        while len(body) < length:
            start = len(body)
            body.extend(bytes(min(length - start, start)))
            self._read_into(memoryview(body)[start:])
        return body

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Close at once; a reader blocked in ``recv_frame`` wakes with Unavailable."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

