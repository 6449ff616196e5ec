"""The MRCs' PostgreSQL fails over to its synchronous standby: nothing acknowledged lost.

Two real PostgreSQL clusters: a primary, and a streaming standby made from it with
``pg_basebackup`` and replicated synchronously (``synchronous_standby_names = '*'``:
a commit returns once the standby has flushed it). Two MRCs of a grid keep their store
there, through a connection string that names both servers and asks for the writable
one (``target_session_attrs=read-write``). A mount creates and writes files as fast as it
can; the primary is stopped the hard way (immediate shutdown: no checkpoint, as a crash),
the standby promoted. The serving MRC loses its connection and ends (``LeadershipLost``);
the standby MRC connects to the promoted server and takes over; the mount carries on.
Every create the mount acknowledged before the crash is there with its data, and fsck
of the promoted store is clean (docs/design/metadata-ha.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, running_grid
from xfs.common import pgcluster
from xfs.common.pgcluster import Cluster

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]

TAKEOVER = 60.0  # seconds from the promotion until the mount makes progress again

STORM = r"""
import os, sys
d, log, stop = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(d, exist_ok=True)
with open(log, "a", buffering=1) as out:
    i = 0
    while not os.path.exists(stop) and i < 20000:
        name = f"f{i}"
        try:
            fd = os.open(os.path.join(d, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, name.encode() * 50)
            finally:
                os.close(fd)
        except OSError as e:
            out.write(f"! {name} {e.errno}\n")
        else:
            out.write(name + "\n")
        i += 1
"""


def replicated_pair(root: Path) -> tuple[Cluster, Cluster]:
    """A primary with database xfs, and a synchronous streaming standby of it, running."""
    primary, standby = Cluster(root / "primary"), Cluster(root / "standby")
    primary.init()
    with (primary.data / "postgresql.conf").open("a") as f:
        f.write("synchronous_standby_names = '*'\n")  # commits wait for the standby's flush
    primary.stop()
    primary.start()
    standby.root.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(standby.root, pgcluster.SERVER_ACCOUNT, pgcluster.SERVER_ACCOUNT)
    standby._run(
        pgcluster.program("pg_basebackup"), "-D", str(standby.data), "-h", str(primary.root),
        "-p", str(pgcluster.PORT), "-U", pgcluster.ROLE, "-R", "-X", "stream",
    )
    with (standby.data / "postgresql.conf").open("a") as f:
        f.write(f"unix_socket_directories = '{standby.root}'\n")
        f.write("synchronous_standby_names = ''\n")  # once promoted: no standby to wait for
    standby.start()
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
        ).fetchone() != (1,):
            assert time.monotonic() < deadline, "the standby did not become synchronous"
            time.sleep(0.1)
    return primary, standby


@pytest.fixture(scope="module")
def databases() -> Iterator[tuple[Cluster, Cluster]]:
    needs_fuse()
    why = pgcluster.available()
    if why:
        pytest.skip(f"no PostgreSQL here: {why}")
    root = Path(tempfile.mkdtemp(prefix="xfs-pgrepl-", dir="/tmp"))
    os.chmod(root, 0o755)  # the server's account reaches the clusters' directories
    try:
        yield replicated_pair(root)
    finally:
        for cluster in (Cluster(root / "standby"), Cluster(root / "primary")):
            cluster.remove()
        shutil.rmtree(root, ignore_errors=True)


def both(primary: Cluster, standby: Cluster) -> str:
    """The store's address: both servers, the writable one chosen."""
    port = pgcluster.PORT
    return (
        f"postgresql://{pgcluster.ROLE}@/xfs?host={primary.root},{standby.root}"
        f"&port={port},{port}&target_session_attrs=read-write"
    )


@pytest.fixture(scope="module")
def grid(databases: tuple[Cluster, Cluster]) -> Iterator[Grid]:
    store = json.dumps(both(*databases))
    with running_grid(
        metadata="postgresql", mrcs=2, settings=[f"mrc.store={store}", f"mrc2.store={store}"]
    ) as g:
        yield g


def acknowledged(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line and line[0] != "!"]


def test_a_promoted_standby_database_has_everything_acknowledged(
    grid: Grid, databases: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    primary, standby = databases
    log, stop = tmp_path / "storm.log", tmp_path / "stop"
    log.touch()
    writer = subprocess.Popen(
        [sys.executable, "-c", STORM, str(grid.mnt / "storm"), str(log), str(stop)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged(log)) < 200:
            assert time.monotonic() < deadline, "the storm did not get going"
            assert writer.poll() is None
            time.sleep(0.05)
        pid = primary.pid()
        assert pid is not None
        os.kill(pid, 3)  # SIGQUIT: PostgreSQL's immediate shutdown, as a crash
        deadline = time.monotonic() + 30
        while primary.pid() == pid:
            assert time.monotonic() < deadline, "the primary did not stop"
            time.sleep(0.05)
        before = set(acknowledged(log))
        standby._run(pgcluster.program("pg_ctl"), "-D", str(standby.data), "-w", "promote")
        promoted = time.monotonic()
        while len(acknowledged(log)) <= len(before) + 20:
            assert time.monotonic() - promoted < TAKEOVER, (
                f"no progress {TAKEOVER:g} s after the promotion\n{grid.logs()}"
            )
            assert writer.poll() is None
            time.sleep(0.05)
        took = time.monotonic() - promoted
        stop.touch()
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    finally:
        stop.touch()
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    names = acknowledged(log)
    failed = [line for line in log.read_text().splitlines() if line.startswith("!")]
    print(f"the mount carried on {took:.1f} s after the promotion; {len(names)} creates "
          f"acknowledged, {len(failed)} failed: {failed[:10]}")
    assert len(failed) <= 10 and all(line.split()[2] == "5" for line in failed), failed
    present = {p.name: p for p in (grid.mnt / "storm").iterdir()}
    missing = [n for n in names if n not in present]
    assert not missing, f"{len(missing)} acknowledged creates lost: {missing[:10]}"
    assert before <= set(names)
    for n in sorted(before)[-20:] + names[-20:]:
        assert present[n].read_bytes() == n.encode() * 50
    # one MRC serves the promoted store; the one that lost its connection ended
    ended = [r for r in grid.mrc_roles if grid.pid(r) is None]
    assert len(ended) <= 1, ended
    for role in ended:
        said = (grid.state / "logs" / f"{role}.log").read_text(errors="replace")
        assert "and with it the lead" in said, said[-2000:]
        grid.start(role)  # and comes back as the standby
    checked = grid.xfs("fsck", "--store", both(primary, standby), check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith(": clean"), checked.stdout
