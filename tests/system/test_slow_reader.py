"""A peer that stops reading its responses stalls only its own connection.

An authenticated client (the grid's administrator certificate) sends thousands of
``osd.status`` requests to every OSD and to the MRC and never reads a byte of the
answers; once its socket buffers are full each server's sends to it block. Meanwhile
the mount must go on writing, reading and stat-ing with every call under 1 s: each link
has its own sending thread (``ThreadLink``) or task (``StreamLink``), so a blocked one
holds nothing that other connections need (docs/design/transport.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import grid, needs_fuse
from tests.system.grid import Grid
from xfs.common import framing
from xfs.proto.methods import MRC, OSD, Empty, VolumeName

__all__ = ["grid", "needs_fuse"]

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(180)]

REQUESTS = 60_000  # far more answers than the socket buffers of one connection hold


def client_context(grid: Grid) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    admin = grid.state / "admin"
    ctx.load_cert_chain(admin / "xfs-admin.crt", admin / "xfs-admin.key")
    for ca in (grid.state / "ca").glob("*/ca.crt"):
        ctx.load_verify_locations(ca)
    return ctx


@contextlib.contextmanager
def deaf_clients(grid: Grid) -> Iterator[None]:
    record = json.loads((grid.state / "grid.json").read_text())
    ports, volume = record["ports"], record["volume"]
    ctx = client_context(grid)
    socks: list[ssl.SSLSocket] = []
    try:
        for role, port in ports.items():
            raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            s = ctx.wrap_socket(raw)
            socks.append(s)
            if role == "mrc":
                frame = framing.encode_request(1, MRC.volume_get.wire_name,
                                               VolumeName(volume).to_wire())
            else:
                frame = framing.encode_request(1, OSD.status.wire_name, Empty().to_wire())
            s.settimeout(0.5)
            sent = 0
            with contextlib.suppress(TimeoutError, OSError):
                while sent < REQUESTS:  # until the server stops reading us
                    s.sendall(frame)
                    sent += 1
            assert sent > 1000, f"{role} took only {sent} requests"
        yield
    finally:
        for s in socks:
            s.close()


def timed(what: str, fn: object, *args: object) -> object:
    start = time.monotonic()
    result = fn(*args)  # type: ignore[operator]
    took = time.monotonic() - start
    assert took < 1.0, f"{what} took {took:.2f} s beside a peer that does not read"
    return result


def test_a_peer_that_stops_reading_stalls_only_itself(grid: Grid) -> None:
    work = grid.mnt / "beside-a-deaf-peer"
    work.mkdir()
    data = os.urandom(1 << 20)
    (work / "warm").write_bytes(data)
    with deaf_clients(grid):
        # the servers answer the backlog until every send to the deaf peer blocks; what
        # must hold from then on is that nothing else waits for those blocked sends
        time.sleep(3.0)
        for n in range(10):
            path = work / f"f{n}"

            def write(p: Path = path) -> None:
                fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)

            timed("write + fsync of 1 MiB", write)
            assert timed("read of 1 MiB", path.read_bytes) == data
            timed("stat", os.stat, path)
