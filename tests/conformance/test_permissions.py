"""Permissions enforced by the MRC for each caller's grid identity, compared with Linux.

Two fresh local accounts (alice, who is also in group ``team``, and bob) act through the
one mount; each gets its grid credential by enrolment on first use. Each case runs the
same programs as the same accounts in a local directory and must give the same answers
and leave the same tree (modes, owners, groups)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.posix import (
    Accounts,
    as_user,
    compare_users,
    give,
    local_accounts,
    tree,
)
from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def acc(grid: Grid) -> Iterator[Accounts]:
    with local_accounts() as a:
        yield a


def test_search_permission_on_every_component(acc: Accounts, workdirs: Workdirs) -> None:
    def setup(root: Path) -> None:
        give(root, acc.alice, 0o755)
        for d, mode in (("p", 0o755), ("p/closed", 0o700), ("p/closed/open", 0o777),
                        ("p/searchonly", 0o711), ("p/listonly", 0o744)):
            os.mkdir(root / d)
            (root / d / "f").write_bytes(b"f")
            os.chmod(root / d / "f", 0o666)
            os.chown(root / d / "f", acc.uid(acc.alice), -1)
            give(root / d, acc.alice, mode)

    bob = """
out["stat closed"] = e(os.stat, "p/closed")
out["list closed"] = e(os.listdir, "p/closed")
out["stat through closed"] = e(os.stat, "p/closed/open/f")
out["open through closed"] = e(os.open, "p/closed/open/f", os.O_RDONLY)
out["create through closed"] = e(create, "p/closed/open/new")
out["mkdir through closed"] = e(os.mkdir, "p/closed/open/nd")
out["unlink through closed"] = e(os.unlink, "p/closed/open/f")
out["chdir closed"] = e(os.chdir, "p/closed")
out["stat missing through closed"] = e(os.stat, "p/closed/missing")
out["stat via searchonly"] = e(os.stat, "p/searchonly/f")
out["list searchonly"] = e(os.listdir, "p/searchonly")
out["list listonly"] = sorted(os.listdir("p/listonly"))
out["stat via listonly"] = e(os.stat, "p/listonly/f")
out["read via listonly"] = e(os.open, "p/listonly/f", os.O_RDONLY)
out["access closed/open"] = e(os.access, "p/closed/open", os.R_OK)
"""
    alice = """
out["stat through closed"] = e(os.stat, "p/closed/open/f")
out["create through closed"] = e(create, "p/closed/open/mine")
"""
    # alice first (so the kernel has the path cached), then bob, then alice again
    out = compare_users(*workdirs.pair("search"), setup,
                        [(acc.alice, alice), (acc.bob, bob), (acc.alice, alice)])
    assert out[1]["stat through closed"] == "EACCES"


def test_write_permission_and_precedence(acc: Accounts, workdirs: Workdirs) -> None:
    def setup(root: Path) -> None:
        give(root, acc.alice, 0o755)
        (root / "ro").write_bytes(b"read only")
        give(root / "ro", acc.alice, 0o644)
        (root / "none").write_bytes(b"none")
        give(root / "none", acc.alice, 0o600)
        (root / "exec").write_bytes(b"#!/bin/sh\n")
        give(root / "exec", acc.alice, 0o711)
        os.mkdir(root / "sub")
        give(root / "sub", acc.alice, 0o755)

    bob = """
out["write ro"] = e(os.open, "ro", os.O_WRONLY)
out["rdwr ro"] = e(os.open, "ro", os.O_RDWR)
out["trunc ro"] = e(os.open, "ro", os.O_RDONLY | os.O_TRUNC)
out["truncate ro"] = e(os.truncate, "ro", 0)
out["read ro"] = e(os.open, "ro", os.O_RDONLY)
out["read none"] = e(os.open, "none", os.O_RDONLY)
out["read exec-only"] = e(os.open, "exec", os.O_RDONLY)
out["access ro W"] = e(os.access, "ro", os.W_OK)
out["access ro R"] = os.access("ro", os.R_OK)
out["access exec X"] = os.access("exec", os.X_OK)
out["create in unwritable"] = e(create, "new")
out["O_CREAT existing in unwritable"] = e(os.close, os.open("ro", os.O_RDONLY | os.O_CREAT))
out["mkdir existing in unwritable"] = e(os.mkdir, "sub")
out["mkdir new in unwritable"] = e(os.mkdir, "newdir")
out["unlink in unwritable"] = e(os.unlink, "ro")
out["unlink missing in unwritable"] = e(os.unlink, "missing")
out["rmdir in unwritable"] = e(os.rmdir, "sub")
out["rename in unwritable"] = e(os.rename, "ro", "ro2")
out["link in unwritable"] = e(os.link, "ro", "ro3")
out["symlink in unwritable"] = e(os.symlink, "ro", "ro4")
out["mknod fifo in unwritable"] = e(os.mkfifo, "fifo")
"""
    compare_users(*workdirs.pair("write"), setup, [(acc.bob, bob)])


def test_chmod_and_chown_rules(acc: Accounts, workdirs: Workdirs) -> None:
    team, alice, bob = acc.team, acc.alice, acc.bob

    def setup(root: Path) -> None:
        give(root, alice, 0o777)
        for name in ("a1", "a2", "a3", "a4"):
            (root / name).write_bytes(b"a")
            give(root / name, alice, 0o644)
        os.mkdir(root / "adir")
        give(root / "adir", alice, 0o755)

    alice_body = f"""
import grp, pwd
me = pwd.getpwnam("{alice}")
team = grp.getgrnam("{team}").gr_gid
bobs = pwd.getpwnam("{bob}").pw_gid
out["chmod own"] = e(os.chmod, "a1", 0o600)
out["chown own to self"] = e(os.chown, "a1", me.pw_uid, -1)
out["chgrp to team"] = e(os.chown, "a2", -1, team)
out["chgrp to bob's group"] = e(os.chown, "a3", -1, bobs)
out["give away"] = e(os.chown, "a3", pwd.getpwnam("{bob}").pw_uid, -1)
out["chgrp dir to team"] = e(os.chown, "adir", -1, team)
out["chmod setgid outside group"] = e(os.chmod, "a3", 0o2755)
os.chown("a4", -1, team)
out["chmod setgid in team"] = e(os.chmod, "a4", 0o2755)
"""
    bob_body = """
out["chmod other's"] = e(os.chmod, "a1", 0o666)
out["chown other's to me"] = e(os.chown, "a1", os.getuid(), -1)
out["chgrp other's"] = e(os.chown, "a1", -1, os.getgid())
out["chmod other's dir"] = e(os.chmod, "adir", 0o777)
out["chown other's -1 -1"] = e(os.chown, "a1", -1, -1)
"""
    compare_users(*workdirs.pair("chown"), setup, [(alice, alice_body), (bob, bob_body)])


def test_root_chown_and_setid_clearing_on_chown(acc: Accounts, workdirs: Workdirs) -> None:
    alice, team = acc.alice, acc.team

    def scenario(root: Path) -> dict[str, str]:
        give(root, alice, 0o755)
        out: dict[str, str] = {}
        for name, mode in (("suid", 0o4755), ("sgid-x", 0o2755), ("sgid-nox", 0o2745),
                           ("both", 0o6755)):
            (root / name).write_bytes(b"x")
            give(root / name, alice, mode)
        os.mkdir(root / "sdir")
        give(root / "sdir", alice, 0o6755)
        # root gives files away; set-id bits of non-directories go
        os.chown(root / "suid", acc.uid(acc.bob), -1)
        os.chown(root / "sdir", acc.uid(acc.bob), -1)
        out["root"] = oct(os.stat(root / "suid").st_mode)
        out["dir"] = oct(os.stat(root / "sdir").st_mode)
        return out

    remote, local = workdirs.pair("chown-root")
    assert scenario(local) == scenario(remote)
    body = f"""
import grp
team = grp.getgrnam("{team}").gr_gid
for name in ("sgid-x", "sgid-nox", "both"):
    os.chown(name, -1, team)
    out[name] = oct(os.stat(name).st_mode)
"""
    # alice's chgrp of her own files to her team
    assert as_user(alice, body, local) == as_user(alice, body, remote)
    assert tree(remote, owners=True) == tree(local, owners=True)


def test_sticky_directories(acc: Accounts, workdirs: Workdirs) -> None:
    alice, bob = acc.alice, acc.bob

    def setup(root: Path) -> None:
        os.chmod(root, 0o755)
        os.mkdir(root / "tmp")
        os.chmod(root / "tmp", 0o1777)  # root's sticky directory
        os.mkdir(root / "atmp")
        give(root / "atmp", alice, 0o1777)  # alice's sticky directory

    alice_body = """
for d in ("tmp", "atmp"):
    create(d + "/fa"); create(d + "/fa2"); os.mkdir(d + "/da")
"""
    bob_body = """
for d in ("tmp", "atmp"):
    create(d + "/fb"); create(d + "/fb2")
    out[d + " unlink other's"] = e(os.unlink, d + "/fa")
    out[d + " rmdir other's"] = e(os.rmdir, d + "/da")
    out[d + " rename other's"] = e(os.rename, d + "/fa", d + "/moved")
    out[d + " rename own over other's"] = e(os.rename, d + "/fb", d + "/fa")
    out[d + " rename other's dir away"] = e(os.rename, d + "/da", d + "/db")
    out[d + " unlink own"] = e(os.unlink, d + "/fb2")
    out[d + " rename own"] = e(os.rename, d + "/fb", d + "/fb3")
"""
    alice_after = """
for d in ("tmp", "atmp"):
    out[d + " unlink bob's"] = e(os.unlink, d + "/fb3")
"""
    out = compare_users(*workdirs.pair("sticky"), setup,
                        [(alice, alice_body), (bob, bob_body), (alice, alice_after)])
    assert out[1]["tmp unlink other's"] == "EPERM"
    assert out[2] == {"tmp unlink bob's": "EPERM", "atmp unlink bob's": "ok"}


def test_setgid_directories(acc: Accounts, workdirs: Workdirs) -> None:
    alice, bob, team = acc.alice, acc.bob, acc.team

    def setup(root: Path) -> None:
        os.chmod(root, 0o755)
        os.mkdir(root / "shared")
        give(root / "shared", alice, 0o2777, group=team)

    body = """
os.umask(0o022)
name = os.environ.get("USER") or str(os.getuid())
tag = str(os.getuid())
create("shared/f" + tag, 0o666)
os.mkdir("shared/d" + tag, 0o777)
create("shared/d" + tag + "/inner", 0o644)
os.mkdir("shared/d" + tag + "/deeper")
out["sgid file requested"] = e(create, "shared/s" + tag, 0o2755)
out["sgid file noexec"] = e(create, "shared/n" + tag, 0o2644)
out["mkfifo"] = e(os.mkfifo, "shared/p" + tag)
out["symlink"] = e(os.symlink, "x", "shared/l" + tag)
"""
    compare_users(*workdirs.pair("setgid"), setup, [(alice, body), (bob, body)])


def test_setid_cleared_by_write_and_truncate(acc: Accounts, workdirs: Workdirs) -> None:
    alice, bob = acc.alice, acc.bob

    def setup(root: Path) -> None:
        os.chmod(root, 0o755)
        for name, mode in (("w-both", 0o6777), ("w-sgid-g", 0o2767), ("w-suid", 0o4766),
                           ("t-both", 0o6777), ("own-both", 0o6777), ("root-both", 0o6777),
                           ("ftr-both", 0o6777)):
            (root / name).write_bytes(b"0123456789")
            give(root / name, alice, mode)
        # S_ISGID without group-execute stays when the writer is in the file's group
        os.chown(root / "w-sgid-g", -1, acc.gid(acc.bob))
        os.chmod(root / "w-sgid-g", 0o2767)

    bob_body = """
for name in ("w-both", "w-sgid-g", "w-suid"):
    write(name, b"bob")
    out[name] = oct(os.stat(name).st_mode)
os.truncate("t-both", 3)
out["t-both"] = oct(os.stat("t-both").st_mode)
fd = os.open("ftr-both", os.O_WRONLY)
os.ftruncate(fd, 2)
os.close(fd)
out["ftr-both"] = oct(os.stat("ftr-both").st_mode)
"""
    alice_body = """
write("own-both", b"alice")
out["own-both"] = oct(os.stat("own-both").st_mode)
"""

    def setup_and_root(root: Path) -> None:
        setup(root)
        fd = os.open(root / "root-both", os.O_WRONLY)
        os.write(fd, b"root")  # root has CAP_FSETID: nothing is cleared
        os.close(fd)

    out = compare_users(*workdirs.pair("killpriv"), setup_and_root,
                        [(bob, bob_body), (alice, alice_body)])
    assert out[0]["w-both"] == oct(0o100777)


def test_setgid_without_group_exec_kept_on_write_by_non_member(
    acc: Accounts, workdirs: Workdirs
) -> None:
    """A documented difference: Linux also clears S_ISGID of a file without group-execute
    when the writer is not in the file's group; the kernel's FUSE module clears S_ISGID
    only with group-execute, and tells the file system nothing else, so xfs keeps it."""
    remote, _ = workdirs.pair("killpriv-nox")
    os.chmod(remote, 0o755)
    (remote / "f").write_bytes(b"0123456789")
    give(remote / "f", acc.alice, 0o2767)
    out = as_user(acc.bob, 'write("f", b"bob")\nout["mode"] = oct(os.stat("f").st_mode)', remote)
    assert out["mode"] == oct(0o102767)


def test_utimensat_permission_rules(acc: Accounts, workdirs: Workdirs) -> None:
    alice, bob = acc.alice, acc.bob

    def setup(root: Path) -> None:
        os.chmod(root, 0o755)
        for name, mode in (("rw", 0o666), ("ro", 0o644)):
            (root / name).write_bytes(b"x")
            give(root / name, alice, mode)
            os.utime(root / name, ns=(10**9, 2 * 10**9))

    bob_body = """
T = 1_500_000_000_123_456_789
out["rw now now"] = e(utimens, "rw", "now", "now")
out["rw now omit"] = e(utimens, "rw", "now", "omit")
out["rw omit now"] = e(utimens, "rw", "omit", "now")
out["rw omit omit"] = e(utimens, "rw", "omit", "omit")
out["rw explicit"] = e(utimens, "rw", T, T)
out["rw explicit omit"] = e(utimens, "rw", T, "omit")
out["rw now explicit"] = e(utimens, "rw", "now", T)
out["rw utime None"] = e(os.utime, "rw", None)
out["ro now now"] = e(utimens, "ro", "now", "now")
out["ro omit omit"] = e(utimens, "ro", "omit", "omit")
out["ro explicit"] = e(utimens, "ro", T, T)
out["ro omit now"] = e(utimens, "ro", "omit", "now")
"""
    alice_body = """
T = 1_500_000_000_123_456_789
out["own explicit"] = e(utimens, "ro", T, "omit")
s = os.stat("ro")
out["own times"] = [s.st_atime_ns, s.st_mtime_ns]
out["own omit explicit"] = e(utimens, "ro", "omit", T + 1)
s = os.stat("ro")
out["own times 2"] = [s.st_atime_ns, s.st_mtime_ns]
"""
    out = compare_users(*workdirs.pair("utimens"), setup, [(bob, bob_body), (alice, alice_body)])
    assert out[0]["ro now now"] == "EACCES" and out[0]["rw explicit"] == "EPERM"
    assert out[1]["own times 2"] == [1_500_000_000_123_456_789, 1_500_000_000_123_456_790]
