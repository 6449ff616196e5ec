"""One mount serves several local users, each with their own (auto-enrolled) credential."""

from __future__ import annotations

import contextlib
import datetime
import errno
import grp
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
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
    # the home volume's root is 0711 root (see running_grid): a user cannot list it
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


@pytest.mark.timeout(120)
def test_a_write_by_another_user_clears_set_id_bits(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    """As on ext4: a write or truncate by anyone without CAP_FSETID clears set-user-ID,
    and set-group-ID when the group may execute; O_APPEND included (its handles bypass
    the kernel's page cache, so the mount does it). The same steps on the local disk give
    the same modes."""
    _, bob = users
    writes = {
        "append": "printf more >> {f}",
        "pwrite": "printf x | dd of={f} bs=1 seek=1 conv=notrunc status=none",
        "truncate": "truncate -s 1 {f}",
    }
    # (a group-writable S_ISGID file without group-execute: see the README's
    # deliberate differences, the kernel does not tell the file system of that case)
    modes = (0o4777, 0o2777, 0o6777, 0o4776)

    def run_in(where: Path) -> dict[tuple[str, int], int]:
        seen = {}
        for how, script in writes.items():
            for mode in modes:
                f = where / f"setid-{how}-{mode:o}"
                f.write_bytes(b"data")
                os.chmod(f, mode)
                ok(as_user(bob, script.format(f=f), where))
                seen[how, mode] = os.stat(f).st_mode & 0o7777
        return seen

    local = Path(tempfile.mkdtemp(prefix="xfs-setid-", dir="/tmp"))
    try:
        os.chmod(local, 0o777)
        on_disk = run_in(local)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    on_xfs = run_in(shared)
    assert on_xfs == on_disk, {k: (oct(on_xfs[k]), oct(on_disk[k])) for k in on_disk}
    for how in writes:
        assert on_xfs[how, 0o4777] == 0o777 and on_xfs[how, 0o6777] == 0o777, how


def _account(*args: str) -> None:
    run(["useradd", "-M", "-s", "/usr/sbin/nologin", *args], timeout=TIMEOUT)


def _drop_account(name: str) -> None:
    for cmd in (["userdel", name], ["groupdel", name]):
        subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, check=False)


def owner_on_the_mrc(grid: Grid, path: Path) -> str:
    """The owner principal the MRC holds for ``path`` (read from its store, read-only)."""
    rows = grid.store_rows("SELECT owner FROM inodes WHERE ino = ?", (os.stat(path).st_ino,))
    return str(rows[0][0])


@pytest.mark.timeout(120)
def test_a_reused_uid_is_another_user(grid: Grid, shared: Path) -> None:
    """userdel bob; useradd -u <bob's uid> carol: carol is carol@local, reads none of bob's
    0600 files, owns what she creates, and bob's certificate is revoked."""
    from xfs.client.sessions import ACCOUNT_RECHECK
    from xfs.common import ca

    tag = secrets.token_hex(3)
    bob, carol = f"xfst_bob_{tag}", f"xfst_carol_{tag}"
    try:
        _account(bob)
        uid = pwd.getpwnam(bob).pw_uid
        ok(as_user(bob, "umask 077 && printf 'bob only' > bobs", shared))
        old_cert = grid.state / "credentials" / str(uid) / "cert.pem"
        serial = ca.read_cert(old_cert).serial_number
        run(["userdel", bob], timeout=TIMEOUT)
        _account("-u", str(uid), carol)
        time.sleep(ACCOUNT_RECHECK + 1)  # the mount looks at the uid's account again
        denied = as_user(carol, "cat bobs", shared)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
        ok(as_user(carol, "printf 'carol' > carols", shared))
        assert owner_on_the_mrc(grid, shared / "carols") == f"{carol}@local"
        assert owner_on_the_mrc(grid, shared / "bobs") == f"{bob}@local"
        assert ca.revoked_at(grid.state / "ca" / "local", serial) is not None
        assert (grid.state / "credentials" / ".retired" / f"{uid}-{serial:x}").is_dir()
        new = ca.read_cert(grid.state / "credentials" / str(uid) / "cert.pem")
        assert new.serial_number != serial
    finally:
        _drop_account(carol)
        _drop_account(bob)


@pytest.mark.timeout(120)
def test_a_group_the_account_left_stops_counting(
    grid: Grid, shared: Path, tmp_path: Path
) -> None:
    """gpasswd -d: through the mount a new process of the user is refused at once; the
    user's own certificate loses the group when it is renewed, at half its lifetime."""
    from xfs.client.credentials import CredentialStore
    from xfs.common import ca

    tag = secrets.token_hex(3)
    gina, proj = f"xfst_gina_{tag}", f"xfst_proj_{tag}"
    try:
        run(["groupadd", proj], timeout=TIMEOUT)
        _account("-G", proj, gina)
        team = shared / f"team-{tag}"
        team.mkdir()
        os.chown(team, 0, grp.getgrnam(proj).gr_gid)
        os.chmod(team, 0o2770)
        (team / "plan").write_text("the plan")
        os.chmod(team / "plan", 0o660)
        assert ok(as_user(gina, f"cat {team}/plan", shared)) == "the plan"
        run(["gpasswd", "-d", gina, proj], timeout=TIMEOUT)
        denied = as_user(gina, f"cat {team}/plan", shared)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied

        # the user's own certificate, as a mount's store keeps it (a store of its own here,
        # with a clock to move): the group goes at the renewal
        run(["gpasswd", "-a", gina, proj], timeout=TIMEOUT)
        now = [time.time()]
        store = CredentialStore(tmp_path / "creds", enroll_ca=grid.state / "ca" / "local",
                                lifetime=600, clock=lambda: now[0])
        uid = pwd.getpwnam(gina).pw_uid
        first = store.get(uid)
        assert f"{proj}@local" in first.identity.groups
        cert = ca.read_cert(first.cert_path)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(
            seconds=600 + 120)
        run(["gpasswd", "-d", gina, proj], timeout=TIMEOUT)
        assert store.get(uid).identity.fingerprint == first.identity.fingerprint
        now[0] += 301
        renewed = store.get(uid)
        assert f"{proj}@local" not in renewed.identity.groups
        assert renewed.identity.fingerprint != first.identity.fingerprint
    finally:
        _drop_account(gina)
        subprocess.run(["groupdel", proj], capture_output=True, timeout=TIMEOUT, check=False)


_ATTACK = """
import fcntl, os, random, sys, threading, time
d, secs = sys.argv[1], float(sys.argv[2])
lock = os.path.join(d, "lock")
open(lock, "w").close()
for i in range(50):
    open(os.path.join(d, f"s{i}"), "w").close()
held = os.open(lock, os.O_RDWR)
fcntl.flock(held, fcntl.LOCK_EX)
stop = time.monotonic() + secs
def waiter():
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the attacker exits
def storm(i):
    r = random.Random(i)
    while time.monotonic() < stop:
        try:
            os.stat(os.path.join(d, f"s{r.randrange(50)}" if i % 2 else f"nx{r.random()}"))
        except FileNotFoundError:
            pass
threads = [threading.Thread(target=waiter, daemon=True) for _ in range(100)]
threads += [threading.Thread(target=storm, args=(i,), daemon=True) for i in range(150)]
for t in threads:
    t.start()
print("running", flush=True)
time.sleep(secs)
os._exit(0)
"""

_VICTIM = """
import json, os, sys, time
d, secs = sys.argv[1], float(sys.argv[2])
worst = {"create": 0.0, "open": 0.0, "read": 0.0, "stat": 0.0}
stop, n = time.monotonic() + secs, 0
while time.monotonic() < stop:
    f = os.path.join(d, f"f{n % 20}")
    t0 = time.monotonic()
    with open(f, "wb") as out:
        out.write(b"v" * 4096)
    t1 = time.monotonic()
    fd = os.open(f, os.O_RDONLY)
    t2 = time.monotonic()
    assert os.read(fd, 8192) == b"v" * 4096
    t3 = time.monotonic()
    os.stat(f)
    t4 = time.monotonic()
    os.close(fd)
    for k, v in (("create", t1 - t0), ("open", t2 - t1), ("read", t3 - t2), ("stat", t4 - t3)):
        worst[k] = max(worst[k], v)
    n += 1
    time.sleep(0.05)
print(json.dumps({"rounds": n, "worst": worst}))
"""


@pytest.mark.timeout(150)
def test_one_users_blocked_locks_and_stat_storm_do_not_starve_another(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    """Alice holds 100 flock waits blocked on her own lock and runs 150 threads of stat
    (half of them names that do not exist) for 30 s; bob's create, open, read and stat
    on the same mount each stay under 1 s meanwhile."""
    alice, bob = users
    a, b = shared / f"atk-{secrets.token_hex(3)}", shared / f"vic-{secrets.token_hex(3)}"
    for d, owner in ((a, alice), (b, bob)):
        d.mkdir(mode=0o700)
        os.chown(d, pwd.getpwnam(owner).pw_uid, -1)
    secs = 30
    attack = subprocess.Popen(
        ["runuser", "-u", alice, "--", "python3", "-c", _ATTACK, str(a), str(secs + 5)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert attack.stdout is not None
        started = attack.stdout.readline().strip()
        assert started == "running", attack.stderr.read() if attack.stderr else started
        time.sleep(2)  # the waiters are blocked, the storm is on
        victim = run(["runuser", "-u", bob, "--", "python3", "-c", _VICTIM, str(b),
                      str(secs)], timeout=secs + 60, check=False)
        assert victim.returncode == 0, victim.stderr
        result = json.loads(victim.stdout)
        assert result["rounds"] > 10, result
        assert all(v < 1.0 for v in result["worst"].values()), result
        print(f"\nbob under alice's attack: {result['rounds']} rounds, worst "
              + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in result["worst"].items()))
    finally:
        attack.kill()
        attack.wait(timeout=TIMEOUT)
