"""Prometheus metrics and background scrubbing of a real grid.

- The MRC, an OSD and the mount each serve metrics on loopback (``metrics_port``), and
  a scrape shows the work just done: requests per method and outcome with their
  latencies, bytes, and the MRC's replica and OSD gauges.
- The MRC scrubs every second here (``scrub_interval``): a byte flipped in a backup
  replica's object, which no read visits, is found and repaired from another replica,
  shown in ``xfs status`` and the metrics, and audited by the OSD."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, running_grid
from tests.system.replicas import file_ids, flip_byte, replicas_of, store_of

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
    settings += ["mrc.scrub_interval=1"]
    with running_grid("xfs-metrics-", settings=settings) as g:
        yield g


def scrape(role: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS[role]}/metrics", timeout=10) as r:
        return str(r.read().decode())


def value(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """The sample ``name{labels...}`` (the labels given must match, others may follow);
    ``default`` if there is none (else the test fails)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    if default is not None:
        return default
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
    assert value(osd, "xfs_bytes_total", 0, service="osd", op="write") + value(
        osd, "xfs_bytes_total", 0, service="osd", op="forward"
    ) >= len(data)  # every OSD holds a replica: as primary or by forward
    assert value(osd, "xfs_osd_total_bytes", service="osd") > 0

    mrc = scrape("mrc")
    assert (
        value(mrc, "xfs_requests_total", service="mrc", method="mrc.osd_heartbeat/1", outcome="ok")
        >= 1
    )
    assert value(mrc, "xfs_osds_alive", service="mrc") == 3
    assert value(mrc, "xfs_replicas_below_factor", service="mrc") == 0


def test_the_scrubber_repairs_a_replica_no_read_visits(grid: Grid) -> None:
    victim = grid.mnt / "rotting.bin"
    data = os.urandom(3 << 20)
    victim.write_bytes(data)
    fid = file_ids(grid, [victim])[victim]
    backup_uuid = replicas_of(victim)["replicas"][2]["osds"][0]
    backup = grid.osd_roles_by_uuid()[backup_uuid]
    flip_byte(store_of(grid, backup).object_path(fid, 2), 4096 * 3 + 7)
    deadline = time.monotonic() + 60
    while True:
        scrub = grid.status().get("scrub") or {}
        if scrub.get("repaired", 0) >= 1:
            break
        assert time.monotonic() < deadline, f"not repaired: {scrub}\n{grid.logs()}"
        time.sleep(0.5)
    assert scrub["unrepaired"] == 0
    scrubbed = grid.xfs("scrub", "--state", str(grid.state), "--osd", backup)
    assert scrubbed.stdout.strip().endswith("clean")  # the copy on disk is sound again
    assert victim.read_bytes() == data
    assert value(scrape("mrc"), "xfs_scrub_repaired", service="mrc") >= 1
    audit = (grid.osd_data(backup) / "audit.log").read_text()
    assert '"action":"scrub"' in audit.replace(" ", "") and "repaired" in audit
    shown = grid.admin("status").stdout
    assert "scrub:" in shown and "repaired 1" in shown


def test_quota_use_is_scraped(grid: Grid) -> None:
    volume = json.loads(grid.admin("status", "--json").stdout)["volumes"][0]["name"]
    grid.admin("quota", "set", volume, "--bytes", "1G", "--files", "100000")
    try:
        (grid.mnt / "quoted").write_bytes(b"q" * 1000)
        mrc = scrape("mrc")
        at = {"service": "mrc", "volume": volume, "principal": ""}
        assert value(mrc, "xfs_quota_limit_bytes", **at) == 1 << 30
        assert value(mrc, "xfs_quota_limit_files", **at) == 100000
        assert value(mrc, "xfs_quota_used_bytes", **at) >= 3000  # three replicas
        assert value(mrc, "xfs_quota_used_files", **at) >= 2
    finally:
        grid.admin("quota", "clear", volume)
