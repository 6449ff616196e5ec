"""The kernel answers a second stat from its caches, in the home volume's 0700 root too.

The mount runs with ``default_permissions``, so the kernel may cache entries and
attributes in every directory for ``entry_timeout``/``attr_timeout`` (10 s by default).
Each test makes its files, waits until every cache entry the set-up left has expired,
stats the files once (pass 1: lookups the MRC answers), stops the MRC with SIGSTOP and
stats them again (pass 2). A request that reached the stopped MRC would wait for it (up
to the mount's 30 s ``io_timeout``), so pass 2 finishing within a short absolute
deadline means the kernel answered it. A control stat of a name the kernel does not know
must, in the same stop, still be waiting after a while.

Refusals are different: the kernel checks again with fresh attributes before it returns
EACCES (fs/fuse/dir.c, fuse_permission: "If permission is denied, try to refresh file
attributes"), a GETATTR that the mount passes to the MRC. So while the MRC is stopped,
another user's access to a 0700 directory waits, and is EACCES once the MRC runs again:
a refusal is never answered from the cache, and never lifted by it either.

Every stat runs in a child process: one blocked in a FUSE request the daemon has
already received cannot be killed until the request is answered, so the test never
waits on one before it has let the MRC go on (SIGCONT, always, in a ``finally``). The
children chdir with ``env -C`` (after ``Popen`` has returned) and use relative paths,
which also lets local accounts work below the home volume's 0700 root.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.grid import Grid, run
from tests.system.replicas import bounded
from xfs.common import config
from xfs.common.config import MountConfig

pytestmark = [pytest.mark.fuse, pytest.mark.system]

FILES = 200
STOPPED_DEADLINE = 10.0  # seconds pass 2 may take with the MRC stopped (io_timeout is 30)
CONTROL_WAIT = 2.0  # seconds an uncached lookup must go on waiting with the MRC stopped
CHILD_DEADLINE = 60.0  # seconds for a child while the MRC runs, and to reap one after
ACCOUNT_TIMEOUT = 30.0
# (the venv's interpreter lives under /root: use the system's, which anyone may run;
# -I keeps the working directory, in the mount, off sys.path)
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

# argv: ACTION NAME...; prints {"took": seconds, "results": {name: stat fields or errno}}
CHILD = r"""
import errno, json, os, sys, time
action, names = sys.argv[1], sys.argv[2:]
results = {}
start = time.monotonic()
for name in names:
    try:
        if action == "create":
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        if action == "list":
            results[name] = len(os.listdir(name))
            continue
        s = os.stat(name)
        results[name] = [s.st_ino, s.st_mode, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns]
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps({"took": time.monotonic() - start, "results": results}))
"""


class Children:
    """Child processes that create, stat or list names relative to a directory.

    ``close`` kills any still running and reaps them all (with a deadline): call it
    after the MRC runs again, since a child blocked on it only dies once answered.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self, cwd: Path, action: str, names: list[str], user: str | None = None
    ) -> subprocess.Popen[str]:
        argv = [PYTHON, "-I", "-c", CHILD, action, *names]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        # env (as root) changes directory after exec, so Popen never waits on the mount
        proc = subprocess.Popen(
            ["env", "-C", str(cwd), *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen[str], deadline: float) -> dict[str, Any] | None:
        """The child's report if it ends before ``deadline`` (time.monotonic()); None if
        it is still running then (it is left running: ``close`` deals with it)."""
        try:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
        assert proc.returncode == 0, f"child exited {proc.returncode}: {out}{err}"
        report: dict[str, Any] = json.loads(out)
        return report

    def run(
        self, cwd: Path, action: str, names: list[str], user: str | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        deadline = deadline if deadline is not None else time.monotonic() + CHILD_DEADLINE
        report = self.result(self.start(cwd, action, names, user), deadline)
        assert report is not None, f"{action} of {len(names)} names in {cwd} missed its deadline"
        return report

    def close(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=CHILD_DEADLINE)
        alive = [proc.pid for proc in procs if proc.poll() is None]
        assert not alive, f"children {alive} still alive {CHILD_DEADLINE:g} s after SIGKILL"


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.close()


@contextlib.contextmanager
def mrc_stopped(grid: Grid) -> Iterator[None]:
    """SIGSTOP the grid's MRC (ours: Grid.pid checks); SIGCONT it however the body ends."""
    pid = grid.pid("mrc")
    assert pid is not None, f"no MRC running\n{grid.logs()}"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def local_accounts(*roles: str) -> Iterator[tuple[str, ...]]:
    """Fresh local accounts ``xfsk_<role>_<tag>`` (no home), always removed afterwards."""
    tag = secrets.token_hex(3)
    created: list[str] = []
    try:
        for role in roles:
            name = f"xfsk_{role}_{tag}"
            run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], timeout=ACCOUNT_TIMEOUT)
            created.append(name)
        yield tuple(created)
    finally:
        left = []
        for name in created:
            gone = subprocess.run(["userdel", name], capture_output=True, text=True,
                                  timeout=ACCOUNT_TIMEOUT, check=False)
            if gone.returncode != 0:
                left.append(f"{name}: {gone.stderr.strip()}")
            subprocess.run(["groupdel", name], capture_output=True, timeout=ACCOUNT_TIMEOUT,
                           check=False)
        assert not left, f"accounts not removed: {left}"


def cache_timeout(grid: Grid) -> float:
    """The longest time the kernel may keep an entry or attributes of this mount."""
    mount = config.load(MountConfig, grid.state / "mount" / "mount.toml")
    return max(mount.attr_timeout, mount.entry_timeout)


def let_caches_expire(grid: Grid) -> None:
    """Wait until nothing the set-up put in the kernel's caches is valid any more, so
    that pass 1 fetches (and pass 2 relies on) only what pass 1 itself looked up."""
    time.sleep(cache_timeout(grid) + 1.0)


def names(n: int = FILES) -> list[str]:
    return [f"f{i:04d}" for i in range(n)]


@pytest.mark.timeout(180)
def test_second_stat_in_the_home_volume_needs_no_mrc(grid: Grid, children: Children) -> None:
    d = grid.mnt / f"kcache-root-{secrets.token_hex(3)}"  # in the home volume's 0700 root
    bounded(d.mkdir)
    bounded(lambda: os.chmod(grid.mnt, 0o700))  # as `xfs up` makes it (the fixture: 0711)
    try:
        second_stat_needs_no_mrc(grid, children, d)
    finally:
        bounded(lambda: os.chmod(grid.mnt, 0o711))


def second_stat_needs_no_mrc(grid: Grid, children: Children, d: Path) -> None:
    assert bounded(lambda: grid.mnt.stat().st_mode & 0o777) == 0o700
    files = names()
    children.run(d, "create", files)
    let_caches_expire(grid)

    first = children.run(d, "stat", files)
    assert all(isinstance(v, list) for v in first["results"].values()), first
    with mrc_stopped(grid):
        stopped_at = time.monotonic()
        deadline = stopped_at + STOPPED_DEADLINE
        second = children.result(children.start(d, "stat", files), deadline)
        assert second is not None, (
            f"pass 2 not done {STOPPED_DEADLINE:g} s after the MRC stopped: a stat reached it")
        # control: a name the kernel does not know needs the MRC, which is stopped
        control = children.start(d, "stat", ["not-there"])
        assert children.result(control, time.monotonic() + CONTROL_WAIT) is None, (
            "an uncached lookup was answered while the MRC was stopped: it was not stopped")
        stopped_for = time.monotonic() - stopped_at
    assert second["results"] == first["results"]
    # once the MRC goes on, the control's lookup is answered
    late = children.result(control, time.monotonic() + CHILD_DEADLINE)
    assert late is not None and late["results"] == {"not-there": "ENOENT"}, late
    print(f"\n{FILES} stats as root: pass 1 {first['took'] * 1e3:.1f} ms, pass 2 (MRC "
          f"stopped) {second['took'] * 1e3:.1f} ms; MRC stopped for {stopped_for:.1f} s")


@pytest.mark.timeout(240)
def test_local_accounts_get_cached_stats_and_fresh_refusals(grid: Grid) -> None:
    # the children go first (closing), the accounts after: userdel refuses a user
    # that still has a process
    with local_accounts("a", "b") as (alice, bob), contextlib.closing(Children()) as children:
        d = grid.mnt / f"kcache-users-{secrets.token_hex(3)}"
        private, public = d / "alice", d / "pub"

        def make() -> None:
            d.mkdir(mode=0o755)
            public.mkdir(mode=0o755)
            (public / "file").write_bytes(b"")
            private.mkdir(mode=0o700)
            os.chown(private, pwd.getpwnam(alice).pw_uid, -1)

        bounded(make)
        files = names()
        made = children.run(private, "create", files, user=alice)
        alice_uid = pwd.getpwnam(alice).pw_uid
        assert made["results"][files[0]][2] == alice_uid
        st = bounded(private.stat)
        assert (st.st_uid, st.st_mode & 0o777) == (alice_uid, 0o700)
        # bob: a file in a directory he may search, and a path into alice's 0700 one
        inside = f"alice/{files[0]}"
        let_caches_expire(grid)

        first = children.run(private, "stat", files, user=alice)
        assert all(isinstance(v, list) and v[2] == alice_uid
                   for v in first["results"].values()), first
        bob_first = children.run(d, "stat", ["pub/file"], user=bob)
        assert isinstance(bob_first["results"]["pub/file"], list), bob_first
        refused = children.run(d, "stat", [inside], user=bob)
        assert refused["results"] == {inside: "EACCES"}, refused
        listed = children.run(d, "list", ["alice"], user=bob)
        assert listed["results"] == {"alice": "EACCES"}, listed

        with mrc_stopped(grid):
            stopped_at = time.monotonic()
            deadline = stopped_at + STOPPED_DEADLINE
            second = children.result(children.start(private, "stat", files, user=alice),
                                     deadline)
            assert second is not None, (
                f"alice's pass 2 not done {STOPPED_DEADLINE:g} s after the MRC stopped")
            # bob's permitted stat comes from the cache too (attributes and ACLs)
            bob_second = children.result(children.start(d, "stat", ["pub/file"], user=bob),
                                         deadline)
            assert bob_second is not None, "bob's permitted stat waited for the stopped MRC"
            # his refusal is checked again with fresh attributes: it waits for the MRC
            refusal = children.start(d, "stat", [inside], user=bob)
            assert children.result(refusal, time.monotonic() + CONTROL_WAIT) is None, (
                "bob was refused without a fresh GETATTR: has fuse_permission changed?")
            stopped_for = time.monotonic() - stopped_at
        assert second["results"] == first["results"]
        assert bob_second["results"] == bob_first["results"]
        late = children.result(refusal, time.monotonic() + CHILD_DEADLINE)
        assert late is not None and late["results"] == {inside: "EACCES"}, late
        print(f"\n{FILES} stats as {alice}: pass 1 {first['took'] * 1e3:.1f} ms, pass 2 "
              f"(MRC stopped) {second['took'] * 1e3:.1f} ms; {bob}: a permitted stat from "
              f"the cache, a refusal waited for the MRC, then EACCES; MRC stopped for "
              f"{stopped_for:.1f} s")
