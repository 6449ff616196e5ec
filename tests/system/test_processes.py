"""The embedded grid's processes: status, down, idempotent up, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, mounted, run, running_grid, xfs_command

pytestmark = [pytest.mark.system]


@pytest.fixture
def own_grid() -> Iterator[Grid]:
    """A grid of the test's own: these tests stop and kill its processes."""
    needs_fuse()
    with running_grid() as g:
        yield g


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(120)
def test_status_lists_three_live_osds_and_the_home_volume(own_grid: Grid) -> None:
    status = own_grid.status()
    osds = status["osds"]
    assert len(osds) == 3
    assert all(o["alive"] for o in osds), osds
    assert len({o["uuid"] for o in osds}) == 3
    assert len({o["address"] for o in osds}) == 3
    names = [v["name"] for v in status["volumes"]]
    assert names == ["home-root"], names
    home = status["volumes"][0]
    assert home["mode"] == 0o700
    assert home["owner"] == "root@local"
    assert home["striping"]["width"] == 1
    # the home volume is replicated: rw, factor 3 over the three OSDs
    policy = json.loads(os.getxattr(own_grid.mnt, "xfs.policy"))
    assert (policy["replication"], policy["factor"], policy["width"]) == ("rw", 3, 1), policy
    # volumes for users: a home volume, and one owned by the caller (not the grid's admin)
    own_grid.admin("volume", "create", "--home", "alice@local")
    own_grid.admin("volume", "create", "scratch")
    made = {v["name"]: v for v in own_grid.status()["volumes"]}
    assert (made["home-alice"]["owner"], made["home-alice"]["mode"]) == ("alice@local", 0o700)
    assert made["scratch"]["owner"] == "root@local"
    # an MRC's refusal is one line and exit 1, not a traceback
    for args, said in (
        (("volume", "create", "home-root"), "exists"),
        (("volume", "delete", "no-such-volume"), "no-such-volume"),
        (("quota", "set", "no-such-volume", "--files", "9"), "no-such-volume"),
        (("quota", "show", "no-such-volume"), "no-such-volume"),
    ):
        refused = own_grid.admin(*args, check=False)
        assert refused.returncode == 1, refused
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("Error: ") and said in line, line


@pytest.mark.timeout(120)
def test_down_leaves_no_process_and_no_mount(own_grid: Grid) -> None:
    pids = own_grid.pids()
    assert set(pids) == {"mrc", "osd1", "osd2", "osd3", "mount"}, pids
    (own_grid.mnt / "probe").write_text("x")
    proc = own_grid.down()
    assert "stopped" in proc.stdout
    assert not mounted(own_grid.mnt)
    for role, pid in pids.items():
        assert _wait_gone(pid, 10), f"{role} (pid {pid}) still running after xfs down"
    assert own_grid.our_processes() == []
    assert own_grid.pids() == {}
    # a second down is harmless and says so
    again = own_grid.down()
    assert "nothing" in again.stdout
    # with the grid down, an admin command says so in one line
    down = own_grid.admin("status", check=False)
    assert down.returncode == 1
    (line,) = down.stderr.strip().splitlines()
    assert line.startswith("Error: mrc.status/1 to 127.0.0.1:") and "refused" in line, line


@pytest.mark.timeout(240)
def test_up_twice_is_idempotent(own_grid: Grid) -> None:
    before = own_grid.pids()
    (own_grid.mnt / "kept").write_bytes(b"data")
    again = own_grid.up()
    assert "xfs: already running: nothing to do" in again.stdout
    assert own_grid.pids() == before
    mounts = Path("/proc/mounts").read_text().splitlines()
    assert sum(1 for line in mounts if str(own_grid.mnt) in line) == 1
    assert (own_grid.mnt / "kept").read_bytes() == b"data"
    assert len(own_grid.our_processes()) == len(before)
    # the stop hint names a command that runs as printed
    (hint,) = [line for line in again.stdout.splitlines() if "stop everything" in line]
    command = hint.split("with: ", 1)[1].split()
    assert command[-3:] == ["down", "--state", str(own_grid.state)]
    assert Path(command[0]).exists() or command[0] == "xfs"


@pytest.mark.timeout(240)
def test_up_repairs_what_it_can_and_refuses_what_it_cannot(own_grid: Grid) -> None:
    state = str(own_grid.state)
    ports = json.loads((own_grid.state / "grid.json").read_text())["ports"]
    (own_grid.mnt / "kept").write_bytes(b"data")
    for args, said in (
        (("--osds", "5"), "this grid has 3 OSDs; --osds applies only when a grid is made"),
        (("--set", "mount.attr_timeout=2"), "--set changes the configuration of mount"),
    ):
        refused = own_grid.xfs("up", "--state", state, *args, check=False)
        assert refused.returncode == 1, refused
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("Error: ") and said in line, line
    # the mount process and an OSD die: up unmounts the stale mount and restarts both
    pids = own_grid.pids()
    for role in ("osd2", "mount"):
        os.kill(pids[role], signal.SIGKILL)
        assert _wait_gone(pids[role], 20)
    repaired = own_grid.xfs("up", "--state", state, timeout=120)
    assert f"unmounted the stale mount at {own_grid.mnt}" in repaired.stdout, repaired.stdout
    assert "xfs: restarted osd2, mount" in repaired.stdout, repaired.stdout
    assert (own_grid.mnt / "kept").read_bytes() == b"data"
    own_grid.wait_osds_alive(3)
    # every process on its old port, after a restart too
    assert json.loads((own_grid.state / "grid.json").read_text())["ports"] == ports
    own_grid.down()
    own_grid.up()
    assert json.loads((own_grid.state / "grid.json").read_text())["ports"] == ports


@pytest.mark.timeout(120)
def test_sigterm_makes_the_mrc_exit_zero(own_grid: Grid) -> None:
    # The grid's MRC was started by `xfs up`, which has exited: it is not our child and
    # its exit status cannot be collected. So first SIGTERM that one (it must go within a
    # few seconds), then run the same MRC (same configuration, state and port) as our
    # own child, SIGTERM it by its PID file and collect the status.
    pid = own_grid.pid("mrc")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid, 10), "the MRC did not exit within 10 s of SIGTERM"

    config = own_grid.state / "mrc" / "mrc.toml"
    log = (own_grid.state / "logs" / "mrc-child.log").open("ab")
    child = subprocess.Popen(
        [sys.executable, "-m", "xfs.cli.main", "mrc", "--config", str(config)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    pidfile = own_grid.state / "run" / "mrc.pid"
    pidfile.write_text(f"{child.pid}\n")  # so that the grid's cleanup knows it
    try:
        deadline = time.monotonic() + 30
        while own_grid.xfs("status", "--state", str(own_grid.state), "--json",
                           timeout=30, check=False).returncode != 0:
            assert child.poll() is None, "the MRC exited on start"
            assert time.monotonic() < deadline, "the restarted MRC did not answer"
            time.sleep(0.2)
        start = time.monotonic()
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        assert child.wait(timeout=10) == 0
        assert time.monotonic() - start < 10
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        log.close()
    text = (own_grid.state / "logs" / "mrc-child.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.timeout(120)
def test_a_failed_up_says_why_in_one_line_and_leaves_nothing_running(tmp_path: Path) -> None:
    needs_fuse()
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    mnt.mkdir()
    up = [*xfs_command(), "up", "--state", str(state), "--mountpoint", str(mnt)]
    # a setting no grid of three OSDs on one machine can have: refused before anything starts
    shared = run([*up, "--set", "osd.metrics_port=19999"], timeout=60, check=False)
    (line,) = shared.stderr.strip().splitlines()
    assert shared.returncode == 1 and line.startswith("Error: --set osd.metrics_port"), line
    assert "osd1.metrics_port=" in line, line
    # the MRC cannot start (its metrics port is taken): at once, its reason, and nothing left
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = run([*up, "--set", f"mrc.metrics_port={port}"], timeout=90, check=False)
    (line,) = failed.stderr.strip().splitlines()
    assert failed.returncode == 1, failed
    assert line.startswith(f"Error: mrc did not start: Error: metrics on 127.0.0.1:{port}:"), line
    assert "stopped what this xfs up started" in line, line
    assert _processes_of(state) == [], "xfs up left processes of its grid running"
    assert not mounted(mnt)


def _processes_of(state: Path) -> list[int]:
    """The PIDs of processes whose command line names ``state`` (the grid's processes)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(state).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
