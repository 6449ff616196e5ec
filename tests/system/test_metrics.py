"""Prometheus metrics of a real grid: the MRC, an OSD and the mount each serve them on
loopback (``metrics_port``), and a scrape shows the work just done: requests per method
and outcome with their latencies, bytes, and the MRC's replica and OSD gauges."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, running_grid

pytestmark = [pytest.mark.system]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORTS = {"mrc": free_port(), "osd1": free_port(), "mount": free_port()}


@pytest.fixture(scope="module")
def grid() -> Iterator[Grid]:
    needs_fuse()
    settings = [f"{role}.metrics_port={port}" for role, port in PORTS.items()]
    with running_grid("xfs-metrics-", settings=settings) as g:
        yield g


def scrape(role: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS[role]}/metrics", timeout=10) as r:
        return str(r.read().decode())


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels...}`` (the labels given must match, others may follow)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{labels} in the scrape")


def test_a_scrape_shows_the_work_done(grid: Grid) -> None:
    data = os.urandom(3 << 20)
    (grid.mnt / "measured").write_bytes(data)
    assert (grid.mnt / "measured").read_bytes() == data
    (grid.mnt / "full").mkdir()
    (grid.mnt / "full" / "f").write_bytes(b"x")
    with pytest.raises(OSError):
        os.rmdir(grid.mnt / "full")  # ENOTEMPTY, counted as such

    mount = scrape("mount")
    assert value(mount, "xfs_bytes_total", service="mount", op="write") >= len(data)
    assert value(mount, "xfs_requests_total", method="fuse.write", outcome="ok") >= 1
    assert value(mount, "xfs_requests_total", method="fuse.rmdir", outcome="ENOTEMPTY") >= 1
    assert value(mount, "xfs_request_seconds_count", method="fuse.write") >= 1

    osd = scrape("osd1")
    assert value(osd, "xfs_bytes_total", service="osd", op="write") + value(
        osd, "xfs_bytes_total", service="osd", op="forward"
    ) >= len(data)  # every OSD holds a replica: as primary or by forward
    assert value(osd, "xfs_osd_total_bytes", service="osd") > 0

    mrc = scrape("mrc")
    assert (
        value(mrc, "xfs_requests_total", service="mrc", method="mrc.osd_heartbeat/1", outcome="ok")
        >= 1
    )
    assert value(mrc, "xfs_osds_alive", service="mrc") == 3
    assert value(mrc, "xfs_replicas_below_factor", service="mrc") == 0
