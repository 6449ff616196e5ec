"""Checkpoint sets on a real grid (docs/checkpoints.md): `xfs checkpoint` as a job and
an operator would run it, over real mounts, with OSDs killed for real.

- an application-level version survives the SIGKILL of its file's primary OSD right
  after ``dump`` returns, and restores byte for byte through a second mount;
- a dumping process killed mid-version leaves the previous version intact and the
  broken one invisible;
- ``prune --keep 2`` keeps exactly the newest two;
- ``verify`` finds one byte flipped in one replica (a backup's, which no read visits);
- a second version of an unchanged 100 MiB job adds less than 1 MiB to what the OSDs
  store;
- a worker node's mount under a delegation for one job's directory dumps and restores
  that job, and is refused another job's directory.

Every blocking call on a mount runs with a deadline (``bounded``, or a subprocess
timeout); the grid, its extra mounts and the processes started here are stopped when the
module ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.grid import Grid, run, xfs_command
from tests.system.replicas import (
    MiB,
    bounded,
    file_ids,
    flip_byte,
    replicas_of,
    started_grid,
    store_of,
)

pytestmark = [pytest.mark.system]

CLI_DEADLINE = 180.0


@pytest.fixture(scope="module")
def grid() -> Iterator[Grid]:
    with started_grid(3, "xfs-ckpt-") as g:
        yield g


@pytest.fixture(scope="module")
def second(grid: Grid) -> Path:
    """The volume mounted again, as by another node."""
    return grid.extra_mount("second")


def xfs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([*xfs_command(), "checkpoint", *args], timeout=CLI_DEADLINE, check=check)


def xfs_json(*args: str) -> Any:
    return json.loads(xfs(*args, "--json").stdout)


def sha(path: Path) -> str:
    return bounded(lambda: hashlib.sha256(path.read_bytes()).hexdigest())


def objects_bytes(grid: Grid) -> int:
    """Bytes of object files on every OSD of the grid."""
    total = 0
    for role in grid.osd_roles:
        for root, _, files in os.walk(grid.osd_data(role) / "objects"):
            total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    return total


def test_a_version_survives_its_primary_osd_killed_right_after_dump(
    grid: Grid, second: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state.bin"
    state.write_bytes(os.urandom(24 * MiB + 123))
    job = grid.mnt / "ckpt" / "sim"
    out = xfs_json("dump", str(job), "--backend", "app", "--file", str(state), "--name", "sim")
    assert out["version"] == 1 and out["barrier"]["kind"] == "replicas"
    assert out["barrier"]["replicas"] == 3  # every replica complete when dump returned
    info = replicas_of(job / "v000001" / "state.bin")
    primary = grid.osd_roles_by_uuid()[info["replicas"][0]["osds"][0]]
    grid.kill(primary)
    try:
        restored = tmp_path / "restored"
        xfs("restore", str(second / "ckpt" / "sim"), "--to", str(restored))
        assert sha(restored / "state.bin") == hashlib.sha256(state.read_bytes()).hexdigest()
    finally:
        grid.start(primary)
        grid.wait_osds_alive(3)


def test_a_dump_killed_midway_leaves_the_previous_version(grid: Grid, tmp_path: Path) -> None:
    job = grid.mnt / "ckpt" / "crashy"
    first = tmp_path / "first"
    first.write_bytes(b"good state\n" * 1000)
    xfs("dump", str(job), "--backend", "app", "--file", str(first))
    ready = tmp_path / "ready"
    writer = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from xfs.checkpoint import CheckpointSet
        ckpt = CheckpointSet.open({str(job)!r})
        with ckpt.begin("app", {{"application": "crashy"}}) as draft:
            with draft.open("first") as f:
                for i in range(1000):
                    f.write(os.urandom(64 * 1024))
                    if i == 20:
                        Path({str(ready)!r}).write_text("x")
                    time.sleep(0.05)
            draft.commit()
        """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the writer ended early"
            assert time.monotonic() < deadline, "the writer did not start writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    listed = xfs_json("list", str(job))
    assert [v["version"] for v in listed["versions"]] == [1]
    assert [d["stale"] for d in listed["drafts"]] == [True]
    assert xfs("restore", str(job)).stdout.strip() == str(job / "v000001")
    restored = tmp_path / "restored"
    xfs("restore", str(job), "--to", str(restored))
    assert restored.joinpath("first").read_bytes() == first.read_bytes()
    xfs("prune", str(job), "--keep", "5")
    assert xfs_json("list", str(job))["drafts"] == []
    assert sorted(os.listdir(job)) == [".xfs-checkpoint.json", "v000001"]


def test_prune_keeps_the_newest_two(grid: Grid, tmp_path: Path) -> None:
    job = grid.mnt / "ckpt" / "pruned"
    state = tmp_path / "state"
    for i in range(5):
        state.write_bytes(f"step {i}\n".encode() * 100)
        xfs("dump", str(job), "--backend", "app", "--file", str(state))
    out = xfs_json("prune", str(job), "--keep", "2")
    assert out == {"deleted": [1, 2, 3], "kept": [4, 5]}
    assert sorted(os.listdir(job)) == [".xfs-checkpoint.json", "v000004", "v000005"]
    assert (job / "v000005" / "state").read_bytes() == b"step 4\n" * 100
    xfs("keep", str(job), "1")  # retention: applied by the next dump
    xfs("dump", str(job), "--backend", "app", "--file", str(state))
    assert [v["version"] for v in xfs_json("list", str(job))["versions"]] == [6]


def test_verify_finds_a_byte_flipped_in_one_replica(grid: Grid, tmp_path: Path) -> None:
    job = grid.mnt / "ckpt" / "rot"
    state = tmp_path / "state.bin"
    state.write_bytes(os.urandom(3 * MiB))
    (tmp_path / "other").write_bytes(b"fine")
    xfs(
        "dump",
        str(job),
        "--backend",
        "app",
        "--file",
        str(state),
        "--file",
        str(tmp_path / "other"),
    )
    assert xfs("verify", str(job)).stdout.strip() == "v000001: ok"
    victim = job / "v000001" / "state.bin"
    fid = file_ids(grid, [victim])[victim]
    backup_uuid = replicas_of(victim)["replicas"][2]["osds"][0]
    backup = grid.osd_roles_by_uuid()[backup_uuid]
    store = store_of(grid, backup)
    flip_byte(store.object_path(fid, 1), 4242)
    result = xfs("verify", str(job), check=False)
    assert result.returncode == 1, result.stdout
    assert "Error: 1 problem(s) in v000001" in result.stderr
    (problem,) = [line for line in result.stdout.splitlines() if "state.bin" in line]
    assert "replica 3" in problem and backup_uuid in problem and "corrupt" in problem
    assert "object 1" in problem
    assert "other" not in result.stdout  # the sound file is not blamed
    # the reader's view is unharmed: the primary's copy is sound
    assert sha(victim) == hashlib.sha256(state.read_bytes()).hexdigest()


def test_an_unchanged_100_mib_job_adds_under_1_mib(grid: Grid, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    for i in range(4):
        (workdir / f"part{i}").write_bytes(os.urandom(25 * MiB))
    (workdir / "log").write_text("started\n")
    job = grid.mnt / "ckpt" / "steady"
    first = xfs_json("dump", str(job), "--dir", str(workdir))
    assert first["bytes_new"] == 100 * MiB + 8
    before = objects_bytes(grid)
    second_version = xfs_json("dump", str(job), "--dir", str(workdir))
    added = objects_bytes(grid) - before
    assert second_version["bytes_new"] == 0 and second_version["parent"] == 1
    assert added < MiB, f"the second version added {added} bytes"
    assert os.stat(job / "v000002" / "part0").st_nlink == 2  # one copy, two names
    manifest = xfs_json("show", str(job))
    assert all(f["from_parent"] for f in manifest["files"])


def test_a_delegated_worker_dumps_its_job_only(grid: Grid, tmp_path: Path) -> None:
    jobs = grid.mnt / "ckpt-jobs"

    def make_jobs() -> None:
        for j in ("mine", "other"):
            (jobs / j).mkdir(parents=True)

    bounded(make_jobs)
    # the worker node's certificate, and the user's delegation of one job's directory
    creds = tmp_path / "worker-credentials"
    certs = tmp_path / "worker-cert"
    creds.mkdir()
    certs.mkdir()
    run(
        [
            *xfs_command(),
            "ca",
            "issue-user",
            "--ca",
            str(grid.state / "ca" / "local"),
            "--name",
            "wn1",
            "--role",
            "worker",
            "--out",
            str(certs),
        ]
    )
    (creds / "0").mkdir(mode=0o700)
    for src, dst in (("wn1.crt", "cert.pem"), ("wn1.key", "key.pem")):
        (creds / "0" / dst).write_bytes((certs / src).read_bytes())
        os.chmod(creds / "0" / dst, 0o600)
    token = tmp_path / "job.token"
    run(
        [
            *xfs_command(),
            "delegate",
            "create",
            "/ckpt-jobs/mine",
            "--to",
            "wn1@local",
            "--out",
            str(token),
            "--state",
            str(grid.state),
        ]
    )
    worker = grid.extra_mount(
        "worker",
        settings=f'credentials = "{creds}"\nallow_other = false',
        drop=("enroll_ca",),
        delegation=token,
    )
    state = tmp_path / "state"
    state.write_bytes(b"the job's state\n")
    out = xfs_json(
        "dump", str(worker / "ckpt-jobs" / "mine"), "--backend", "app", "--file", str(state)
    )
    assert out["version"] == 1
    restored = tmp_path / "restored"
    xfs("restore", str(worker / "ckpt-jobs" / "mine"), "--to", str(restored))
    assert (restored / "state").read_bytes() == state.read_bytes()
    # the user sees what the worker stored, as theirs
    assert (jobs / "mine" / "v000001" / "state").read_bytes() == state.read_bytes()
    refused = xfs(
        "dump",
        str(worker / "ckpt-jobs" / "other"),
        "--backend",
        "app",
        "--file",
        str(state),
        check=False,
    )
    assert refused.returncode == 1 and "Permission denied" in refused.stderr, refused
    assert os.listdir(jobs / "other") == []


# ---------------------------------------------------------------------------- CRIU
MEMJOB = """
import hashlib, os, sys, time
out = sys.argv[1]
data = bytearray(os.urandom(1 << 20)) * 40  # 40 MiB the restored process must still hold
digest = hashlib.sha256(data).hexdigest()
n = 0
while True:
    n += 1
    with open(out + ".tmp", "w") as f:
        f.write(f"{n} {hashlib.sha256(data).hexdigest() if n % 50 == 0 else digest}\\n")
    os.replace(out + ".tmp", out)
    time.sleep(0.05)
"""


def criu_or_skip() -> None:
    from xfs.checkpoint import criu

    try:
        criu.available()
    except criu.CriuError as e:
        pytest.skip(f"no usable CRIU here: {e.strerror}")


def progress(out: Path) -> tuple[int, str]:
    """(the job's counter, the digest of its memory) as it last wrote them."""
    deadline = time.monotonic() + 30
    while True:
        try:
            n, digest = out.read_text().split()
            return int(n), digest
        except (OSError, ValueError):
            assert time.monotonic() < deadline, f"the job wrote nothing to {out}"
            time.sleep(0.05)


def gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_criu_dump_survives_an_osd_and_restores_on_another_mount(
    grid: Grid, second: Path, tmp_path: Path
) -> None:
    criu_or_skip()
    script = tmp_path / "memjob.py"
    script.write_text(MEMJOB)
    out = tmp_path / "progress"
    job = grid.mnt / "ckpt" / "criujob"
    started = xfs(
        "run",
        str(job),
        "--log",
        str(tmp_path / "job.log"),
        "--",
        sys.executable,
        str(script),
        str(out),
    )
    pid = int(started.stdout.split()[1].rstrip(":"))
    restored: int | None = None
    killed: str | None = None
    try:
        while progress(out)[0] < 5:
            time.sleep(0.05)
        before, digest = progress(out)
        dumped = xfs_json("dump", str(job), "--backend", "criu")
        assert dumped["version"] == 1 and dumped["barrier"]["replicas"] == 3
        assert gone(pid), "the dumped process still runs"
        manifest = xfs_json("show", str(job))
        assert manifest["source"]["pids"] == [pid] and manifest["backend"] == "criu"
        pages = max(manifest["files"], key=lambda f: f["size"])
        assert pages["size"] > 40 * MiB
        info = replicas_of(job / "v000001" / pages["path"])
        killed = grid.osd_roles_by_uuid()[info["replicas"][0]["osds"][0]]
        grid.kill(killed)
        back = xfs_json("restore", str(second / "ckpt" / "criujob"))
        restored = int(back["pid"])
        deadline = time.monotonic() + 30
        while progress(out)[0] <= before + 60:  # past a recomputed digest (every 50)
            assert time.monotonic() < deadline, "the restored job makes no progress"
            time.sleep(0.1)
        assert progress(out)[1] == digest  # its memory came back whole
    finally:
        for p in (pid, restored):
            if p is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        if killed is not None:
            grid.start(killed)
            grid.wait_osds_alive(3)


def test_a_dump_criu_refuses_is_never_published(grid: Grid, tmp_path: Path) -> None:
    criu_or_skip()
    job = grid.mnt / "ckpt" / "refused"
    # a child in the test's own session: CRIU refuses a shell job without --shell-job
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL
    )
    try:
        result = xfs("dump", str(job), "--backend", "criu", "--pid", str(proc.pid), check=False)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: criu dump failed (exit") and "log: /var/tmp" in line
        assert proc.poll() is None  # CRIU let it run on
        assert xfs_json("list", str(job)) | {"keep": None} == {
            "job": "refused",
            "keep": None,
            "versions": [],
            "drafts": [],
        }
    finally:
        proc.kill()
        proc.wait(timeout=30)
