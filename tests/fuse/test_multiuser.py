"""One mount serves several local users, each with their own (auto-enrolled) credential."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.grid import Grid, Workdirs, run

pytestmark = [pytest.mark.fuse, pytest.mark.system]

TIMEOUT = 30


@contextlib.contextmanager
def local_accounts(*roles: str) -> Iterator[tuple[str, ...]]:
    """Fresh local accounts ``xfst_<role>_<tag>``, always removed afterwards."""
    tag = secrets.token_hex(3)
    created: list[str] = []
    try:
        for role in roles:
            name = f"xfst_{role}_{tag}"
            run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], timeout=TIMEOUT)
            created.append(name)
        yield tuple(created)
    finally:
        for name in created:
            subprocess.run(["userdel", name], capture_output=True, timeout=TIMEOUT, check=False)
            # useradd may have made a group of the same name; userdel removes it, but be sure
            with contextlib.suppress(Exception):
                subprocess.run(["groupdel", name], capture_output=True, timeout=TIMEOUT,
                               check=False)


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[str, str]]:
    """Two fresh local accounts, always removed afterwards."""
    with local_accounts("alice", "bob") as (alice, bob):
        yield alice, bob


def as_user(name: str, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as local user ``name`` (no check: the caller looks at the result)."""
    return run(["runuser", "-u", name, "--", "sh", "-c", script], cwd=cwd, timeout=TIMEOUT,
               check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture
def shared(workdirs: Workdirs) -> Path:
    d, _ = workdirs.pair("shared")
    os.chmod(d, 0o1777)
    assert (d.stat().st_mode & 0o7777) == 0o1777
    return d


@pytest.mark.timeout(120)
def test_private_files_of_two_users(grid: Grid, users: tuple[str, str], shared: Path) -> None:
    alice, bob = users
    # the home volume's root is 0700 root: a user cannot even look in
    denied = as_user(alice, f"ls {grid.mnt}", Path("/"))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    # each user makes a private file in the shared, sticky directory
    for name in users:
        ok(as_user(name, f"umask 077 && printf 'secret of {name}\\n' > {name}.txt "
                         f"&& chmod 0600 {name}.txt", shared))
    listing = ok(as_user(alice, "ls -ln . && ls -l .", shared))
    for name in users:
        st = (shared / f"{name}.txt").stat()
        entry = pwd.getpwnam(name)
        assert (st.st_uid, st.st_gid) == (entry.pw_uid, entry.pw_gid)
        assert st.st_mode & 0o7777 == 0o600
        assert any(line.split()[2:3] == [name] and line.endswith(f"{name}.txt")
                   for line in listing.splitlines()), listing
    # owners read their own, and not the other's
    for me, other in ((alice, bob), (bob, alice)):
        assert ok(as_user(me, f"cat {me}.txt", shared)) == f"secret of {me}\n"
        theirs = as_user(me, f"cat {other}.txt", shared)
        assert theirs.returncode != 0
        assert "Permission denied" in theirs.stderr, theirs.stderr
        # nor write, rename over, or delete it (sticky directory)
        assert as_user(me, f"printf x >> {other}.txt", shared).returncode != 0
        gone = as_user(me, f"rm -f {other}.txt", shared)
        assert gone.returncode != 0 and "not permitted" in gone.stderr, gone
        assert as_user(me, f"chmod 666 {other}.txt", shared).returncode != 0
    # root is the VO's super user: it reads both
    for name in users:
        assert (shared / f"{name}.txt").read_text() == f"secret of {name}\n"
    # the files are unchanged
    for name in users:
        assert ok(as_user(name, f"cat {name}.txt", shared)) == f"secret of {name}\n"
    # these refusals were the kernel's (default_permissions: docs/design/permissions.md),
    # made before any request reached xfs; the MRC's audit log holds only its own, which
    # tests/rpc/ provoke directly, and stays intact
    from xfs.common import audit

    log = grid.state / "mrc" / "data" / "audit.log"
    assert audit.verify(log).ok


@pytest.mark.timeout(120)
def test_errno_seen_by_a_process_of_the_other_user(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    alice, bob = users
    ok(as_user(alice, "printf mine > only-alice && chmod 600 only-alice", shared))
    # a Python process running as bob gets EACCES, not EPERM or EIO
    script = (
        "import errno, sys\n"
        "try:\n"
        "    open(sys.argv[1]).read()\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
        "else:\n"
        "    print('read')\n"
    )
    # (the venv's interpreter lives under /root: use the system's, which anyone may run)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    proc = run(["runuser", "-u", bob, "--", python, "-c", script,
                str(shared / "only-alice")], timeout=TIMEOUT)
    assert proc.stdout.strip() == errno.errorcode[errno.EACCES]
    # group and other bits are honoured: 0644 lets bob read, 0640 does not
    ok(as_user(alice, "chmod 644 only-alice", shared))
    assert ok(as_user(bob, "cat only-alice", shared)) == "mine"
    ok(as_user(alice, "chmod 640 only-alice", shared))
    assert "Permission denied" in as_user(bob, "cat only-alice", shared).stderr
    # a directory of alice's, 0700, keeps bob out of it
    ok(as_user(alice, "mkdir -m 700 adir && printf x > adir/f", shared))
    out = as_user(bob, "ls adir", shared)
    assert out.returncode != 0 and "Permission denied" in out.stderr
    # alice's own credential was enrolled for her uid and is hers alone
    uid = pwd.getpwnam(alice).pw_uid
    key = grid.state / "credentials" / str(uid) / "key.pem"
    st = key.stat()
    assert st.st_uid == uid and st.st_mode & 0o077 == 0


@pytest.mark.timeout(120)
def test_no_search_permission_means_no_way_through(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    alice, bob = users
    ok(as_user(alice, "mkdir -m 700 private && printf 'for alice only' > private/f", shared))
    # after the kernel's entry cache has expired, bob is kept out: that works
    time.sleep(1.5)
    out = as_user(bob, "cat private/f", shared)
    assert out.returncode != 0 and "Permission denied" in out.stderr, out
    # right after alice used the path, bob must be kept out just the same
    proc = run(["sh", "-c", f"runuser -u {alice} -- cat private/f >/dev/null && "
                            f"runuser -u {bob} -- cat private/f"],
               cwd=shared, timeout=TIMEOUT, check=False)
    assert proc.stdout == "" and "Permission denied" in proc.stderr, proc


@pytest.mark.timeout(120)
def test_a_credential_of_the_wrong_mode_or_owner_is_refused_and_audited(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    """A local user whose key is readable by others (or not theirs) gets EACCES for every
    request, the mount records it in its audit log, and other users carry on."""
    from xfs.common import audit, ca

    alice, _ = users
    with local_accounts("carol", "dave") as (carol, dave):
        for name, owner, mode in ((carol, None, 0o644), (dave, 0, 0o600)):
            entry = pwd.getpwnam(name)
            d = grid.state / "credentials" / str(entry.pw_uid)
            d.mkdir(mode=0o700)
            issued = ca.issue_user(grid.state / "ca" / "local", name, d, groups=(name,))
            issued.cert.replace(d / "cert.pem")
            issued.key.replace(d / "key.pem")
            for p in (d, d / "cert.pem", d / "key.pem"):
                os.chown(p, entry.pw_uid, entry.pw_gid)
            if owner is not None:
                os.chown(d / "key.pem", owner, owner)
            os.chmod(d / "key.pem", mode)
        ok(as_user(alice, "printf open > for-all && chmod 644 for-all", shared))
        for name in (carol, dave):
            denied = as_user(name, "cat for-all", shared)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
        # the well-behaved user on the same mount keeps working
        assert ok(as_user(alice, "cat for-all && printf more >> for-all && cat for-all",
                          shared)) == "openopenmore"
        records = list(audit.records(grid.state / "mount" / "audit.log"))
        for name in (carol, dave):
            uid = pwd.getpwnam(name).pw_uid
            mine = [r for r in records if r["actor"] == f"uid:{uid}"]
            assert mine and mine[0]["event"] == "deny" and mine[0]["outcome"] == "EACCES"
            assert "must be a file owned by uid" in mine[0]["detail"]["why"]
        assert audit.verify(grid.state / "mount" / "audit.log").ok
