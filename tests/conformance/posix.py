"""Helpers of the namespace conformance suite: run the same operations in the mount and
in a local directory, and compare what Linux answers with what xfs answers.

A *scenario* is a function of one directory that returns plain data (outcomes as errno
names, snapshots of trees); the tests run it on both sides of a ``workdirs`` pair and
assert the results are equal. Operations as another local user run a small Python
program through ``runuser`` (the system interpreter, which any account may run); as
numeric ids without a passwd entry, the same program started as root sets its groups,
gids and uids first (``as_ids``).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.system.grid import run

TIMEOUT = 60
PATH_MAX = 4096
NAME_MAX = 255


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """``"ok"`` or the errno name of the ``OSError`` the call raised."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "ok"


def kind(mode: int) -> str:
    return {
        stat.S_IFREG: "file",
        stat.S_IFDIR: "dir",
        stat.S_IFLNK: "symlink",
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "socket",
        stat.S_IFCHR: "chr",
        stat.S_IFBLK: "blk",
    }[stat.S_IFMT(mode)]


def tree(root: Path, *, owners: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``root``: (type, permission bits, link count, size or target)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            what: Any = st.st_size
            if stat.S_ISDIR(st.st_mode):
                what = None  # directory sizes are file-system specific
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            row: tuple[Any, ...] = (kind(st.st_mode), stat.S_IMODE(st.st_mode), st.st_nlink, what)
            if owners:
                row += (st.st_uid, st.st_gid)
            out[str(p.relative_to(root))] = row
    return out


def same(remote: Path, local: Path, scenario: Callable[[Path], Any]) -> Any:
    """Run ``scenario`` in the mount and locally; assert equal results; return them."""
    expected = scenario(local)
    got = scenario(remote)
    assert got == expected, f"xfs (left) differs from Linux (right):\n{got}\n!=\n{expected}"
    return got


# ------------------------------------------------------------------------ accounts
@dataclass(frozen=True)
class Accounts:
    """Two fresh local accounts and a group that only ``alice`` is in (besides her own)."""

    alice: str
    bob: str
    team: str

    def uid(self, name: str) -> int:
        return pwd.getpwnam(name).pw_uid

    def gid(self, group: str) -> int:
        return grp.getgrnam(group).gr_gid


@contextlib.contextmanager
def local_accounts() -> Iterator[Accounts]:
    """Create the accounts (before they ever use a mount, so their enrolled credential
    carries the team group); always remove them."""
    tag = secrets.token_hex(3)
    alice, bob, team = f"xfsc_a_{tag}", f"xfsc_b_{tag}", f"xfsc_t_{tag}"
    users: list[str] = []
    groups: list[str] = []
    try:
        run(["groupadd", team], timeout=TIMEOUT)
        groups.append(team)
        for name, extra in ((alice, ["-G", team]), (bob, [])):
            run(["useradd", "-M", "-s", "/usr/sbin/nologin", *extra, name], timeout=TIMEOUT)
            users.append(name)
        yield Accounts(alice, bob, team)
    finally:
        for name in users:
            subprocess.run(["userdel", name], capture_output=True, timeout=TIMEOUT, check=False)
            subprocess.run(["groupdel", name], capture_output=True, timeout=TIMEOUT, check=False)
        for g in groups:
            subprocess.run(["groupdel", g], capture_output=True, timeout=TIMEOUT, check=False)


_PRELUDE = r"""
import errno, json, os, stat, sys
def e(fn, *a, **k):
    try:
        fn(*a, **k)
    except OSError as x:
        return errno.errorcode.get(x.errno, str(x.errno))
    return "ok"
def write(p, data=b"x", flags=os.O_WRONLY):
    fd = os.open(p, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def create(p, mode=0o644):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
def st(p):
    s = os.lstat(p)
    return [stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_nlink]
out = {}
"""


def as_user(user: str, body: str, cwd: Path) -> dict[str, Any]:
    """Run Python ``body`` as ``user`` in ``cwd`` (relative paths); it fills ``out``,
    which comes back as JSON."""
    program = _PRELUDE + body + "\nprint(json.dumps(out))\n"
    return _run_program(["runuser", "-u", user, "--", _python(), "-c", program], cwd, user)


@dataclass(frozen=True)
class Ids:
    """The ids of one process: uid, fsgid and supplementary groups. They need no passwd
    or group entry (a numeric uid is the grid principal ``<uid>@<vo>``)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"uid {self.uid} gid {self.gid} groups {list(self.groups)}"


Actor = str | Ids  # a local account (its own groups, through runuser) or explicit ids


def as_ids(uid: int, gid: int, groups: Sequence[int], body: str, cwd: Path) -> dict[str, Any]:
    """Run Python ``body`` in ``cwd`` as a process with exactly these ids: started as
    root, it sets its groups, then its gids, then its uids, and runs ``body`` with the
    same conventions as ``as_user``."""
    drop = (
        "import os\n"
        f"os.setgroups({list(groups)!r})\n"
        f"os.setresgid({gid}, {gid}, {gid})\n"
        f"os.setresuid({uid}, {uid}, {uid})\n"
    )
    program = drop + _PRELUDE + body + "\nprint(json.dumps(out))\n"
    # -I: no user site directory or PYTHON* variables of root's environment
    return _run_program([_python(), "-I", "-c", program], cwd, str(Ids(uid, gid, tuple(groups))))


def as_actor(who: Actor, body: str, cwd: Path) -> dict[str, Any]:
    if isinstance(who, Ids):
        return as_ids(who.uid, who.gid, who.groups, body, cwd)
    return as_user(who, body, cwd)


def _python() -> str:
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def _run_program(argv: list[str], cwd: Path, who: str) -> dict[str, Any]:
    proc = run(argv, cwd=cwd, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, f"as {who}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def give(path: Path, user: str, mode: int, group: str | None = None) -> None:
    """chown/chmod as root: set up a directory or file for a test user."""
    uid = pwd.getpwnam(user).pw_uid
    gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
    os.chown(path, uid, gid)
    os.chmod(path, mode)


_PRELUDE += r"""
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
class _ts(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
def utimens(p, atime, mtime):
    # each time: "now", "omit" or nanoseconds
    def one(t):
        if t == "now":
            return _ts(0, UTIME_NOW)
        if t == "omit":
            return _ts(0, UTIME_OMIT)
        return _ts(t // 10**9, t % 10**9)
    times = (_ts * 2)(one(atime), one(mtime))
    if _libc.utimensat(-100, os.fsencode(p), times, 0) != 0:
        n = ctypes.get_errno()
        raise OSError(n, os.strerror(n))
"""


def compare_users(
    remote: Path,
    local: Path,
    setup: Callable[[Path], None],
    steps: Sequence[tuple[Actor, str]],
    *,
    owners: bool = True,
) -> list[dict[str, Any]]:
    """``setup`` (as root) then each (user, Python body) in turn, on both sides; the
    outputs and the resulting trees (with owners) must be equal. A step's user may also
    be ``Ids`` (see ``compare_ids``)."""
    def side(root: Path) -> tuple[list[dict[str, Any]], dict[str, tuple[Any, ...]]]:
        setup(root)
        outs = [as_actor(who, body, root) for who, body in steps]
        return outs, tree(root, owners=owners)

    expected = side(local)
    got = side(remote)
    assert got[0] == expected[0], f"outputs: xfs (left) != Linux (right)\n{got[0]}\n{expected[0]}"
    assert got[1] == expected[1], f"trees: xfs (left) != Linux (right)\n{got[1]}\n{expected[1]}"
    return got[0]


def compare_ids(
    remote: Path,
    local: Path,
    setup: Callable[[Path], None],
    steps: Sequence[tuple[Ids, str]],
    *,
    owners: bool = True,
) -> list[dict[str, Any]]:
    """``compare_users`` for processes with explicit ids (``as_ids``): uids and groups
    that need no passwd or group entry, groups set per process."""
    return compare_users(remote, local, setup, steps, owners=owners)
