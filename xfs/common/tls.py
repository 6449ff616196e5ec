"""The TLS 1.3 contexts of every xfs link: mutual authentication, no session tickets.

Links themselves (how frames cross TLS) are ``xfs.common.links``."""

from __future__ import annotations

import ssl
from pathlib import Path


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
