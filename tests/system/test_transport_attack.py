"""Peers that never finish their TLS handshake do not stop a legitimate mount.

500 idle connections that send nothing and 45 that dribble a TLS ClientHello one byte
every 2 s, spread over the MRC and every OSD of a running grid, while the mount writes,
reads and stats: each of its calls must finish within 1 s. Handshakes run in trio
without holding a thread, each within ``handshake_timeout``, and a server keeps at most
``max_handshakes`` in progress (a new one makes the oldest give way): see
docs/design/transport.md. Every socket here is on loopback and closed by the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import grid, needs_fuse
from tests.system.grid import Grid
from tests.system.mount_calls import write_read_stat

__all__ = ["grid", "needs_fuse"]

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(180)]

IDLE = 500
DRIBBLERS = 45
# the start of a TLS record carrying a ClientHello: enough to look like one
HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) * 8


def server_ports(grid: Grid) -> list[int]:
    """The ports of the MRC and of every OSD (from the embedded grid's record)."""
    ports = json.loads((grid.state / "grid.json").read_text())["ports"]
    return [int(port) for port in ports.values()]


@contextlib.contextmanager
def attack(ports: list[int]) -> Iterator[list[socket.socket]]:
    """Open the idle and dribbling connections; a thread feeds the dribblers."""
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        for i in range(IDLE + DRIBBLERS):
            s = socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=5)
            socks.append(s)
        dribblers = socks[IDLE:]

        def dribble() -> None:
            pos = 0
            while not stop.wait(2.0) and pos < len(HELLO):
                for s in dribblers:
                    with contextlib.suppress(OSError):
                        s.send(HELLO[pos : pos + 1])
                pos += 1

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        yield socks
        stop.set()
        t.join(timeout=10)
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_idle_and_dribbling_handshakes_do_not_stop_a_mount(grid: Grid, tmp_path: Path) -> None:
    ports = server_ports(grid)
    work = grid.mnt / "under-attack"
    work.mkdir()
    data = os.urandom(1 << 20)
    (work / "warm").write_bytes(data)  # the mount's own connections are up
    with attack(ports):
        time.sleep(1.0)  # every server now holds (or drops) a crowd of handshakes
        deadline = time.monotonic() + 12  # past handshake_timeout: some are dropped
        n = 0
        while time.monotonic() < deadline:
            write_read_stat(work / f"f{n}", data)
            n += 1
        assert n >= 5
    # a new connection is served as soon as the crowd is gone
    assert (work / "warm").read_bytes() == data


ANNOUNCERS = 16
ANNOUNCED = 64 << 20  # the largest data frame an OSD takes
RSS_BOUND = 48 << 20  # 16 x FIRST_ALLOCATION (1.06 MiB) plus room for the allocator


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_frames_announced_but_not_sent_cost_no_memory(grid: Grid) -> None:
    """16 authenticated connections each announce a 64 MiB frame and send 5 bytes of it:
    the OSD's memory grows by what arrived (a frame's buffer starts at FIRST_ALLOCATION
    and doubles as it fills), not by 1 GiB; and the mount goes on working meanwhile."""
    from tests.system.test_slow_reader import client_context

    ports = json.loads((grid.state / "grid.json").read_text())["ports"]
    role = next(r for r in ports if r != "mrc")
    pid = grid.pids()[role]
    ctx = client_context(grid)
    work = grid.mnt / "announced"
    work.mkdir()
    data = os.urandom(1 << 20)
    write_read_stat(work / "warm", data)
    before = rss(pid)
    socks = []
    try:
        for _ in range(ANNOUNCERS):
            raw = socket.create_connection(("127.0.0.1", int(ports[role])), timeout=10)
            s = ctx.wrap_socket(raw)
            socks.append(s)
            s.sendall(ANNOUNCED.to_bytes(4, "big") + b"\x94\x00\x01\xa1x")
        time.sleep(2.0)  # the OSD has read every header and the 5 bytes
        for n in range(3):
            write_read_stat(work / f"f{n}", data)
        grown = rss(pid) - before
        assert grown < RSS_BOUND, f"the OSD grew by {grown >> 20} MiB"
    finally:
        for s in socks:
            s.close()
