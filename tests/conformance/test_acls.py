"""POSIX ACLs on the mount, compared with Linux on a local disk: getfacl/setfacl through
system.posix_acl_*, what the ACLs grant to real local accounts (each with its own grid
credential), chmod and the mask, default ACLs and the umask; and ``xfs acl``, which shows
and sets the same ACLs by grid names."""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.posix import (
    TIMEOUT,
    Accounts,
    compare_users,
    give,
    local_accounts,
    outcome,
    same,
    tree,
)
from tests.system.grid import Grid, Workdirs, run, xfs_command

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]

SETFACL = shutil.which("setfacl") or "/usr/bin/setfacl"
GETFACL = shutil.which("getfacl") or "/usr/bin/getfacl"


@pytest.fixture(scope="module")
def acc(grid: Grid) -> Iterator[Accounts]:
    if not shutil.which("setfacl"):
        pytest.skip("needs setfacl and getfacl (the acl package: scripts/bootstrap.sh)")
    with local_accounts() as a:
        yield a


def sh(root: Path, *argv: str) -> str:
    """Exit status and output of a command run in ``root``."""
    proc = run(list(argv), cwd=root, timeout=TIMEOUT, check=False)
    return f"{proc.returncode}: {proc.stdout}{proc.stderr}"


def getfacl(root: Path, *names: str) -> str:
    return sh(root, GETFACL, *names)


def linux_acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


MINIMAL = linux_acl((0x01, 6, 0xFFFFFFFF), (0x04, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF))


def test_getfacl_setfacl_round_trip(acc: Accounts, workdirs: Workdirs) -> None:
    bob, team = acc.bob, acc.team

    def scenario(root: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        f = root / "f"
        f.write_bytes(b"f")
        os.chmod(f, 0o644)
        out["set"] = sh(root, SETFACL, "-m", f"u:{bob}:r,g:{team}:rw", "f")
        out["get"] = getfacl(root, "f")
        out["mode"] = oct(os.stat(f).st_mode)  # at once: no stale cached mode
        out["list"] = sorted(os.listxattr(f))
        out["raw"] = os.getxattr(f, "system.posix_acl_access").hex()
        for mode in (0o600, 0o664, 0o640):  # chmod moves the mask
            os.chmod(f, mode)
            out[f"chmod {mode:o}"] = getfacl(root, "f")
        out["set mask"] = sh(root, SETFACL, "-m", "m::rwx", "f") + getfacl(root, "f")
        out["-x"] = sh(root, SETFACL, "-x", f"u:{bob}", "f") + getfacl(root, "f")
        # getfacl's output is setfacl's input: the ACL copies to another file
        (root / "g").write_bytes(b"g")
        out["copy"] = sh(root, "sh", "-c", f"{GETFACL} f | {SETFACL} --set-file=- g")
        out["copied"] = getfacl(root, "g")
        out["-b"] = sh(root, SETFACL, "-b", "f") + getfacl(root, "f")
        out["-b mode"] = oct(os.stat(f).st_mode)
        out["-b list"] = sorted(os.listxattr(f))
        out["--set minimal"] = sh(root, SETFACL, "--set", "u::rwx,g::r,o::-", "f")
        out["--set minimal get"] = (getfacl(root, "f"), sorted(os.listxattr(f)))
        # the raw xattrs, as Linux answers them
        out["default on a file"] = outcome(os.setxattr, f, "system.posix_acl_default", MINIMAL)
        out["get default of a file"] = outcome(os.getxattr, f, "system.posix_acl_default")
        out["remove default of a file"] = outcome(os.removexattr, f, "system.posix_acl_default")
        out["remove missing ACL"] = outcome(os.removexattr, f, "system.posix_acl_access")
        out["bad version"] = outcome(
            os.setxattr, f, "system.posix_acl_access", struct.pack("<I", 1) + MINIMAL[4:]
        )
        out["no mask"] = outcome(
            os.setxattr, f, "system.posix_acl_access",
            MINIMAL + struct.pack("<HHI", 0x02, 4, acc.uid(bob)),
        )
        out["empty"] = outcome(os.setxattr, f, "system.posix_acl_access", struct.pack("<I", 2))
        os.symlink("f", root / "l")
        out["symlink"] = sh(root, GETFACL, "-P", "l")
        return out

    same(*workdirs.pair("acl-roundtrip"), scenario)


def test_default_acls_are_inherited(acc: Accounts, workdirs: Workdirs) -> None:
    bob, team = acc.bob, acc.team

    def scenario(root: Path) -> tuple[dict[str, Any], dict[str, tuple[Any, ...]]]:
        out: dict[str, Any] = {}
        os.mkdir(root / "d", 0o755)
        out["-d"] = sh(root, SETFACL, "-d", "-m", f"u:{bob}:rwx,g:{team}:rx", "d")
        out["d"] = getfacl(root, "d")
        old = os.umask(0o077)  # not applied under a default ACL
        try:
            os.close(os.open(root / "d" / "f", os.O_CREAT | os.O_WRONLY, 0o666))
            os.mkdir(root / "d" / "s", 0o777)
            os.mkfifo(root / "d" / "p", 0o640)
            os.close(os.open(root / "d" / "s" / "g", os.O_CREAT | os.O_WRONLY, 0o600))
            os.symlink("f", root / "d" / "l")
        finally:
            os.umask(old)
        out["children"] = getfacl(root, "d/f", "d/s", "d/p", "d/s/g")
        out["-k"] = sh(root, SETFACL, "-k", "d") + getfacl(root, "d")
        old = os.umask(0o077)  # without a default ACL the umask applies again
        try:
            os.close(os.open(root / "d" / "h", os.O_CREAT | os.O_WRONLY, 0o666))
        finally:
            os.umask(old)
        out["h"] = getfacl(root, "d/h")
        return out, tree(root, owners=True)

    same(*workdirs.pair("acl-default"), scenario)


def test_other_accounts_through_acls(acc: Accounts, workdirs: Workdirs) -> None:
    """What ACLs grant to real local accounts, each acting with its own grid credential."""
    alice, bob, team = acc.alice, acc.bob, acc.team

    def setup(root: Path) -> None:
        give(root, alice, 0o755)
        for name, owner, mode in (("f", alice, 0o600), ("q", alice, 0o604), ("gf", bob, 0o600)):
            (root / name).write_bytes(name.encode())
            give(root / name, owner, mode)
        os.mkdir(root / "d")
        (root / "d" / "x").write_bytes(b"x")
        give(root / "d" / "x", alice, 0o644)
        give(root / "d", alice, 0o755)

    prelude = f"""
import subprocess, time
def facl(*args):
    p = subprocess.run(["{SETFACL}", *args], capture_output=True, text=True, timeout=30)
    return [p.returncode, p.stderr.strip()]
def read(p):
    with open(p, "rb") as f:
        return f.read().decode()
"""
    bob_before = prelude + """
out["read f"] = e(read, "f")
out["stat d/x"] = e(os.stat, "d/x")
"""
    alice_grants = prelude + f"""
out["bob gets r"] = facl("-m", "u:{bob}:r", "f")
out["bob may not search d"] = facl("-m", "u:{bob}:-", "d")
out["empty mask on q"] = facl("-m", "u:{bob}:-,m::-", "q")
out["not hers"] = facl("-m", "u:{alice}:rw", "gf")
time.sleep(1.5)  # dentries cached before the ACL time out (as after a chmod)
out["stat d/x"] = e(os.stat, "d/x")  # the kernel may cache what alice looks up
"""
    bob_with = prelude + f"""
out["read f"] = e(read, "f")
out["write f"] = e(os.open, "f", os.O_WRONLY)
out["stat d/x"] = e(os.stat, "d/x")
out["list d"] = e(os.listdir, "d")
out["read q (mask empty: other bits)"] = e(read, "q")
out["setfacl on alice's"] = facl("-m", "u:{bob}:rw", "f")
out["team may read gf"] = facl("-m", "g:{team}:r", "gf")
"""
    alice_chmods = prelude + """
out["read gf through team"] = e(read, "gf")
os.chmod("f", 0o600)  # the mask: ---
"""
    bob_masked = prelude + """
out["read f"] = e(read, "f")
"""
    alice_removes = prelude + """
os.chmod("f", 0o640)
out["read f mask r"] = e(read, "f")
out["-b"] = facl("-b", "f")
"""
    compare_users(*workdirs.pair("acl-users"), setup, [
        (bob, bob_before), (alice, alice_grants), (bob, bob_with), (alice, alice_chmods),
        (bob, bob_masked), (alice, alice_removes), (bob, bob_masked),
    ])


def test_xfs_acl_by_grid_names(acc: Accounts, workdirs: Workdirs) -> None:
    alice, bob, team = acc.alice, acc.bob, acc.team
    remote, local = workdirs.pair("acl-cli")
    xfs = xfs_command()
    (remote / "f").write_bytes(b"f")
    os.chmod(remote / "f", 0o640)
    (remote / "d").mkdir()

    def acl_get(*names: str) -> str:
        return run([*xfs, "acl", "get", *names], cwd=remote, timeout=TIMEOUT).stdout

    def acl_set(*args: str, ok: bool = True) -> str:
        proc = run([*xfs, "acl", "set", *args], cwd=remote, timeout=TIMEOUT, check=ok)
        assert (proc.returncode == 0) == ok, proc
        return proc.stderr

    shown = acl_get("f")
    vo = shown.split("# owner: root@", 1)[1].split()[0]
    assert shown == (
        f"# file: f\n# owner: root@{vo}\n# group: root@{vo}\n"
        "user::rw-\ngroup::r--\nother::---\n\n"
    )
    sh(remote, SETFACL, "-m", f"u:{bob}:r,g:{team}:rw", "f")
    assert acl_get("f").splitlines()[3:-1] == [
        "user::rw-", f"user:{bob}@{vo}:r--", "group::r--", f"group:{team}@{vo}:rw-",
        "mask::rw-", "other::---",
    ]
    # a principal this node cannot map shows as the overflow id, and survives setfacl
    acl_set("f", "user:zed@chem:rw")
    assert "user:65534:rw-" in getfacl(remote, "-n", "f")
    sh(remote, SETFACL, "-m", f"u:{alice}:r", "f")
    text = acl_get("f")
    assert "user:zed@chem:rw-" in text and f"user:{alice}@{vo}:r--" in text
    acl_set("-x", "f", "user:zed@chem", f"group:{team}@{vo}")
    text = acl_get("f")
    assert "zed@chem" not in text and team not in text and "mask::r--" in text
    # default ACLs: the missing entries come from the access ACL, as with setfacl -d
    acl_set("-d", "d", f"user:{bob}@{vo}:r-x")
    assert getfacl(remote, "d").splitlines()[6:] == [
        "default:user::rwx", f"default:user:{bob}:r-x", "default:group::r-x",
        "default:mask::r-x", "default:other::r-x", "",
    ]
    assert f"default:user:{bob}@{vo}:r-x" in acl_get("d")
    acl_set("-x", "-d", "d")
    assert "default:" not in getfacl(remote, "d")
    # whole ACLs, removal, and errors in one line
    acl_set("--replace", "f", "u::rw,g::r", "o::-")
    assert acl_get("f").splitlines()[3:-1] == ["user::rw-", "group::r--", "other::---"]
    acl_set("f", f"u:{bob}@{vo}:rw")
    acl_set("-x", "f")
    assert "user:" not in getfacl(remote, "f").replace("user::", "")
    assert oct(os.stat(remote / "f").st_mode) == "0o100660"  # the mode stays
    for args in (("f", f"user:{bob}@{vo}"), ("f", "bogus:x:r"), ("-d", "f", "u:x@y:r")):
        err = acl_set(*args, ok=False)
        assert err.startswith("Error: f: ") and err.count("\n") == 1, err
    err = run([*xfs, "acl", "get", str(local)], timeout=TIMEOUT, check=False).stderr
    assert "not in a mounted xfs volume" in err


def test_every_client_sees_the_same_acls(acc: Accounts, workdirs: Workdirs,
                                         grid: Grid) -> None:
    """The kernel caches ACLs (FUSE_POSIX_ACL) as it caches attributes: a change through
    one mount, ACL or chmod, is what getfacl shows through another after an open there
    (close-to-open), and without one within that mount's attr_timeout."""
    there_root = grid.extra_mount("acl", settings="attr_timeout = 1.0\nentry_timeout = 1.0")
    here, _ = workdirs.pair("acl-two")
    there = there_root / here.name
    (here / "f").write_bytes(b"f")
    os.chmod(here / "f", 0o644)
    assert getfacl(there, "f") == getfacl(here, "f")
    sh(here, SETFACL, "-m", f"u:{acc.bob}:rw", "f")
    shown = eventually(lambda: getfacl(there, "f"), lambda s: f"user:{acc.bob}:rw-" in s)
    assert shown == getfacl(here, "f")
    os.chmod(there / "f", 0o640)
    os.close(os.open(here / "f", os.O_RDONLY))  # close-to-open: attributes and ACL anew
    shown = getfacl(here, "f")
    assert "mask::r--" in shown and shown == getfacl(there, "f")
    sh(there, SETFACL, "-b", "f")
    os.close(os.open(here / "f", os.O_RDONLY))
    assert "user:" not in getfacl(here, "f").replace("user::", "")


def eventually(get: Callable[[], str], ok: Callable[[str], bool], within: float = 10.0) -> str:
    """``get()`` once ``ok`` holds for it; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = get()
        if ok(value) or time.monotonic() > deadline:
            assert ok(value), value
            return value
        time.sleep(0.2)
