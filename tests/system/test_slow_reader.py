"""A peer that stops reading its responses stalls only its own connection.

An authenticated client (the grid's administrator certificate) sends thousands of
``osd.status`` requests to every OSD and to the MRC and never reads a byte of the
answers; once its socket buffers are full each server's sends to it block. Meanwhile
the mount must go on writing, reading and stat-ing with every call under 1 s: an answer
that cannot be sent blocks only the task that sends it, on its own link's socket, so a
blocked link holds nothing that other connections need (docs/design/transport.md).
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
from tests.system.mount_calls import write_read_stat
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
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # a small receive window: the server's sends to us block after a few hundred
            # answers instead of after the megabytes loopback would otherwise take in
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.settimeout(10)
            raw.connect(("127.0.0.1", int(port)))
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


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_servers_idle(grid: Grid, within: float = 90.0) -> None:
    """Until the MRC and the OSDs use under 10% of a core over half a second."""
    pids = [pid for role, pid in grid.pids().items() if role != "mount"]
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + within
    while True:
        before = [cpu_ticks(pid) for pid in pids]
        time.sleep(0.5)
        used = max(cpu_ticks(pid) - b for pid, b in zip(pids, before, strict=True))
        if used < 0.05 * hz:
            return
        assert time.monotonic() < deadline, "the servers are still busy with the backlog"


def test_a_peer_that_stops_reading_stalls_only_itself(grid: Grid) -> None:
    work = grid.mnt / "beside-a-deaf-peer"
    work.mkdir()
    data = os.urandom(1 << 20)
    (work / "warm").write_bytes(data)
    with deaf_clients(grid):
        # the servers answer the backlog until every send to the deaf peer blocks (the
        # peer's socket buffers take most answers first); what must hold from then on is
        # that nothing else waits for those blocked sends
        wait_servers_idle(grid)
        for n in range(10):
            write_read_stat(work / f"f{n}", data)
