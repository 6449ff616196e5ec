"""Remote locks through xfs.client.fuse_ext: the kernel's lock requests reach the fs.

A tiny in-memory file system (tests/fuse/fuse_ext_helpers.py) is mounted in a
subprocess; separate agent processes lock files on it, so every conflict seen here
was decided by the file system's lock table, not by the kernel's local one.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
]

HELPERS = Path(__file__).with_name("fuse_ext_helpers.py")
REPO = Path(__file__).resolve().parents[2]
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
DEADLINE = 20.0  # seconds for any single step


class Agent:
    """A separate process that runs lock commands on request."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS), "agent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.pid = self.read(DEADLINE)["pid"]

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("agent did not answer")
        line = self.proc.stdout.readline()
        assert line, "agent exited"
        result: dict[str, Any] = json.loads(line)
        return result

    def blocked(self, seconds: float) -> bool:
        """Whether the last command is still running after `seconds`."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], seconds)
        return not ready

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read(DEADLINE)

    def lock(
        self, fd: int, type_: int, start: int = 0, length: int = 0, cmd: int = fcntl.F_SETLK
    ) -> dict[str, Any]:
        return self.call(op="fcntl", fd=fd, cmd=cmd, type=type_, start=start, len=length)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        self.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Mount:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root.parent / "ops.log"

    def path(self, name: str) -> str:
        return str(self.root / name)

    def events(self, op: str) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [e for e in map(json.loads, lines) if e["op"] == op]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    root = tmp_path / "mnt"
    root.mkdir()
    m = Mount(root)
    fs = subprocess.Popen(
        [sys.executable, str(HELPERS), "mount", str(root), str(m.log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert fs.stdout is not None
        ready, _, _ = select.select([fs.stdout], [], [], DEADLINE)
        assert ready and fs.stdout.readline().strip() == "ready", "mount did not come up"
        yield m
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(root)], capture_output=True, timeout=30)
        fs.kill()
        fs.wait(timeout=30)
        if fs.stdout is not None:
            fs.stdout.close()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.kill()
        for agent in started:
            agent.close()


def spawn(agents: list[Agent], n: int) -> list[Agent]:
    new = [Agent() for _ in range(n)]
    agents.extend(new)
    return new


def test_setlk_conflict_and_getlk(mount: Mount, agents: list[Agent]) -> None:
    a, b = spawn(agents, 2)
    fa = a.call(op="open", path=mount.path("a"))["fd"]
    fb = b.call(op="open", path=mount.path("a"))["fd"]
    assert a.lock(fa, fcntl.F_WRLCK, 100, 50) == {
        "type": fcntl.F_WRLCK,
        "start": 100,
        "len": 50,
        "pid": 0,
    }
    assert b.lock(fb, fcntl.F_WRLCK, 120, 10)["errno"] == 11  # EAGAIN
    assert b.lock(fb, fcntl.F_RDLCK, 0, 100) == {
        "type": fcntl.F_RDLCK,
        "start": 0,
        "len": 100,
        "pid": 0,
    }
    held = b.lock(fb, fcntl.F_WRLCK, 0, 0, cmd=fcntl.F_GETLK)
    assert held["type"] == fcntl.F_WRLCK and held["pid"] == a.pid
    assert (held["start"], held["len"]) == (100, 50)
    assert b.lock(fb, fcntl.F_RDLCK, 200, 0, cmd=fcntl.F_GETLK)["type"] == fcntl.F_UNLCK
    assert {e["pid"] for e in mount.events("setlk")} == {a.pid, b.pid}
    assert mount.events("getlk")


def test_setlkw_waits_for_unlock(mount: Mount, agents: list[Agent]) -> None:
    a, b = spawn(agents, 2)
    fa = a.call(op="open", path=mount.path("a"))["fd"]
    fb = b.call(op="open", path=mount.path("a"))["fd"]
    a.lock(fa, fcntl.F_WRLCK)
    b.send(op="fcntl", fd=fb, cmd=fcntl.F_SETLKW, type=fcntl.F_WRLCK, start=0, len=0)
    assert b.blocked(1.5)
    assert a.lock(fa, fcntl.F_UNLCK)["type"] == fcntl.F_UNLCK
    assert b.read(DEADLINE)["type"] == fcntl.F_WRLCK
    assert any(e["sleep"] for e in mount.events("setlk"))
    assert a.lock(fa, fcntl.F_RDLCK)["errno"] == 11


def test_ofd_locks_reach_the_fs(mount: Mount, agents: list[Agent]) -> None:
    (a,) = spawn(agents, 1)
    f1 = a.call(op="open", path=mount.path("b"))["fd"]
    f2 = a.call(op="open", path=mount.path("b"))["fd"]
    a.lock(f1, fcntl.F_WRLCK, 0, 10, cmd=F_OFD_SETLK)
    # Same process, other open file description: OFD locks conflict.
    assert a.lock(f2, fcntl.F_WRLCK, 5, 1, cmd=F_OFD_SETLK)["errno"] == 11
    held = a.lock(f2, fcntl.F_RDLCK, 0, 0, cmd=F_OFD_GETLK)
    assert held["type"] == fcntl.F_WRLCK and (held["start"], held["len"]) == (0, 10)
    owners = {e["owner"] for e in mount.events("setlk")}
    assert len(owners) == 2
    a.call(op="close", fd=f1)  # last close of f1 releases its OFD lock
    assert a.lock(f2, fcntl.F_WRLCK, 5, 1, cmd=F_OFD_SETLKW)["type"] == fcntl.F_WRLCK


def test_flock_conflict_and_last_close(mount: Mount, agents: list[Agent]) -> None:
    a, b = spawn(agents, 2)
    fa = a.call(op="open", path=mount.path("a"))["fd"]
    fb = b.call(op="open", path=mount.path("a"))["fd"]
    assert a.call(op="flock", fd=fa, flags=fcntl.LOCK_EX) == {}
    assert b.call(op="flock", fd=fb, flags=fcntl.LOCK_EX | fcntl.LOCK_NB)["errno"] == 11
    dup = a.call(op="dup", fd=fa)["fd"]
    a.call(op="close", fd=fa)  # not the last close: the flock lock stays
    assert b.call(op="flock", fd=fb, flags=fcntl.LOCK_SH | fcntl.LOCK_NB)["errno"] == 11
    a.call(op="close", fd=dup)
    assert b.call(op="flock", fd=fb, flags=fcntl.LOCK_EX | fcntl.LOCK_NB) == {}
    assert any(e["flock_release"] for e in mount.events("closing"))
    assert {e["flock_op"] for e in mount.events("flock")} >= {
        fcntl.LOCK_EX,
        fcntl.LOCK_EX | fcntl.LOCK_NB,
        fcntl.LOCK_SH | fcntl.LOCK_NB,
    }


def test_close_releases_posix_locks(mount: Mount, agents: list[Agent]) -> None:
    a, b = spawn(agents, 2)
    fa = a.call(op="open", path=mount.path("a"))["fd"]
    other = a.call(op="open", path=mount.path("a"))["fd"]
    fb = b.call(op="open", path=mount.path("a"))["fd"]
    a.lock(fa, fcntl.F_WRLCK)
    assert b.lock(fb, fcntl.F_RDLCK)["errno"] == 11
    a.call(op="close", fd=other)  # POSIX: closing any fd of the file drops the locks
    assert b.lock(fb, fcntl.F_WRLCK)["type"] == fcntl.F_WRLCK
    closing = mount.events("closing")
    assert any(not e["is_release"] for e in closing)


def test_sigkill_releases_locks(mount: Mount, agents: list[Agent]) -> None:
    a, b, c = spawn(agents, 3)
    fa = a.call(op="open", path=mount.path("a"))["fd"]
    fb = b.call(op="open", path=mount.path("a"))["fd"]
    fc = c.call(op="open", path=mount.path("a"))["fd"]
    a.lock(fa, fcntl.F_WRLCK)
    a.call(op="flock", fd=fa, flags=fcntl.LOCK_EX)
    os.kill(a.pid, signal.SIGKILL)
    a.proc.wait(timeout=DEADLINE)
    assert b.lock(fb, fcntl.F_WRLCK)["type"] == fcntl.F_WRLCK
    assert c.call(op="flock", fd=fc, flags=fcntl.LOCK_EX | fcntl.LOCK_NB) == {}


def test_blocked_waiter_can_be_interrupted_and_killed(mount: Mount, agents: list[Agent]) -> None:
    a, b, c, d = spawn(agents, 4)
    fa, fb, fc, fd = (x.call(op="open", path=mount.path("a"))["fd"] for x in (a, b, c, d))
    a.lock(fa, fcntl.F_WRLCK)
    # A signal whose handler raises: the waiter's F_SETLKW returns EINTR.
    b.send(op="fcntl", fd=fb, cmd=fcntl.F_SETLKW, type=fcntl.F_WRLCK, start=0, len=0, alarm=1)
    assert b.read(DEADLINE) == {"interrupted": True}
    # SIGKILL to a waiter: the process exits instead of hanging until the lock is free.
    c.send(op="fcntl", fd=fc, cmd=fcntl.F_SETLKW, type=fcntl.F_WRLCK, start=0, len=0)
    assert c.blocked(1.0)
    started = time.monotonic()
    os.kill(c.pid, signal.SIGKILL)
    c.proc.wait(timeout=DEADLINE)
    assert time.monotonic() - started < DEADLINE
    # Neither cancelled waiter holds the lock once `a` lets go.
    a.lock(fa, fcntl.F_UNLCK)
    assert d.lock(fd, fcntl.F_WRLCK)["type"] == fcntl.F_WRLCK
    assert b.lock(fb, fcntl.F_RDLCK)["errno"] == 11


def test_fallocate_reaches_the_fs(mount: Mount, agents: list[Agent]) -> None:
    (a,) = spawn(agents, 1)
    fa = a.call(op="open", path=mount.path("a"))["fd"]
    assert a.call(op="fallocate", fd=fa, mode=0, offset=0, length=8192) == {"size": 8192}
    punch = 3  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: refused by the fs
    assert a.call(op="fallocate", fd=fa, mode=punch, offset=0, length=4096)["errno"] == 95
    assert a.call(op="posix_fallocate", fd=fa, offset=0, length=12288) == {"size": 12288}
    # glibc's posix_fallocate falls back to writing zeroes when fallocate(2) is refused.
    fn = a.call(op="open", path=mount.path("nofalloc"))["fd"]
    assert a.call(op="fallocate", fd=fn, mode=0, offset=0, length=4096)["errno"] == 95
    assert a.call(op="posix_fallocate", fd=fn, offset=0, length=4096) == {"size": 4096}
    modes = [(e["ino"], e["mode"]) for e in mount.events("fallocate")]
    assert modes[:3] == [(2, 0), (2, punch), (2, 0)] and (4, 0) in modes


def test_install_refuses_when_pyfuse3_came_first() -> None:
    out = subprocess.run(
        [sys.executable, str(HELPERS), "unhooked"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    ).stdout
    assert out.startswith("refused: pyfuse3 was loaded before xfs.client.fuse_ext")
