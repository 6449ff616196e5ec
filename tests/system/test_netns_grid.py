"""Grids for the replication tests: N OSDs, `xfs up --set`, roles in network namespaces."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, mounted, run
from tests.system.netns import Network

pytestmark = [pytest.mark.system]


@pytest.fixture
def root() -> Iterator[Path]:
    """A fresh directory of /tmp, removed afterwards unless something is still mounted."""
    needs_fuse()
    path = Path(tempfile.mkdtemp(prefix="xfs-netns-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    if not any(mounted(p) for p in path.iterdir() if p.name.startswith("mnt")):
        shutil.rmtree(path, ignore_errors=True)


def _write_and_read(grid: Grid) -> None:
    data = os.urandom(3 << 20) + b"tail"
    (grid.mnt / "probe").write_bytes(data)
    assert (grid.mnt / "probe").read_bytes() == data


def _tcp_from(netns: str, address: str, port: int) -> bool:
    """Whether a TCP connection from namespace ``netns`` to ``address:port`` succeeds
    within 3 s."""
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    argv = ["nsenter", f"--net=/run/netns/{netns}", "--", sys.executable, "-c", code]
    return run(argv, timeout=10, check=False).returncode == 0


@pytest.mark.timeout(120)
def test_five_osds_with_settings(root: Path) -> None:
    grid = Grid(
        root,
        osds=5,
        settings=["mrc.osd_lease=3", "osd.peer_timeout=2", "osd5.peer_timeout=1.5",
                  "mount.io_timeout=20"],
    )
    try:
        grid.up()
        assert grid.roles == ("mrc", "osd1", "osd2", "osd3", "osd4", "osd5", "mount")
        osds = grid.status()["osds"]
        assert len(osds) == 5 and all(o["alive"] for o in osds), osds
        assert set(grid.osd_roles_by_uuid()) == {o["uuid"] for o in osds}
        assert set(grid.pids()) == set(grid.roles)
        _write_and_read(grid)
        state = grid.state
        assert "osd_lease = 3.0" in (state / "mrc" / "mrc.toml").read_text()
        assert "peer_timeout = 2.0" in (state / "osd1" / "osd.toml").read_text()
        assert "peer_timeout = 1.5" in (state / "osd5" / "osd.toml").read_text()
        assert "io_timeout = 20.0" in (state / "mount" / "mount.toml").read_text()
        assert json.loads((state / "grid.json").read_text())["osds"] == 5

        grid.kill("osd5")
        assert grid.pid("osd5") is None
        grid.start("osd5")
        grid.wait_osds_alive(5, timeout=20)
        grid.assert_no_bugs_logged()
    finally:
        grid.cleanup()
    assert grid.our_processes() == []


@pytest.mark.timeout(60)
def test_a_bad_setting_is_refused_with_its_name(root: Path) -> None:
    grid = Grid(root, settings=["osd.no_such_key=1"])
    try:
        proc = grid.xfs("up", "--state", str(grid.state), "--mountpoint", str(grid.mnt),
                        "--set", "osd.no_such_key=1", timeout=30, check=False)
        assert proc.returncode != 0
        assert "no_such_key" in proc.stderr, proc.stderr
        assert grid.pids() == {}
    finally:
        grid.cleanup()


@pytest.mark.timeout(120)
def test_roles_in_namespaces_and_a_partition(root: Path) -> None:
    roles = ["mrc", "osd1", "osd2", "osd3", "mount"]
    with Network(roles, subnet="10.199.0") as net:
        grid = Grid(
            root,
            netns={r: net.netns(r) for r in roles},
            hosts={r: net.address(r) for r in roles if r != "mount"},
        )
        try:
            grid.up()
            osds = grid.status()["osds"]
            assert sorted(o["address"].split(":")[0] for o in osds) == sorted(
                net.address(r) for r in grid.osd_roles
            ), osds
            _write_and_read(grid)

            port = json.loads((grid.state / "grid.json").read_text())["ports"]["osd2"]
            mrc_ns, osd2 = net.netns("mrc"), net.address("osd2")
            assert _tcp_from(mrc_ns, osd2, port)
            net.cut("osd2")
            start = time.monotonic()
            assert not _tcp_from(mrc_ns, osd2, port)
            assert time.monotonic() - start < 8
            assert grid.pid("osd2") is not None  # partitioned, not dead
            net.heal("osd2")
            assert _tcp_from(mrc_ns, osd2, port)
            grid.wait_osds_alive(3, timeout=20)
        finally:
            grid.cleanup()
        assert grid.our_processes() == []
