"""rename(2) and renameat2(2) in all their cases, compared with a local directory, and
the atomicity of a replacing rename as another client sees it."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.posix import (
    Accounts,
    compare_users,
    give,
    local_accounts,
    outcome,
    same,
    tree,
)
from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path | str, new: Path | str, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        n = ctypes.get_errno()
        raise OSError(n, os.strerror(n), str(old))


def _fixture(root: Path) -> None:
    for d in ("a", "b", "a/empty", "a/full", "a/full/deep", "b/empty2", "a/d"):
        os.mkdir(root / d)
    (root / "a" / "full" / "x").write_bytes(b"x")
    (root / "a" / "d" / "inside").write_bytes(b"i")
    for name, data in (("f", b"f"), ("g", b"gg"), ("h", b"hhh")):
        (root / "a" / name).write_bytes(data)
    os.link(root / "a" / "h", root / "b" / "h2")
    os.symlink("f", root / "a" / "sym")


def test_rename_cases(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> list[object]:
        _fixture(root)
        a, b = root / "a", root / "b"
        out: list[object] = []
        steps = [
            ("file over file", os.rename, a / "g", a / "f"),
            ("file over empty dir", os.rename, a / "f", a / "empty"),
            ("dir over file", os.rename, a / "empty", a / "f"),
            ("dir over non-empty dir", os.rename, a / "empty", a / "full"),
            ("dir into itself", os.rename, a / "full", a / "full" / "deep" / "x"),
            ("dir onto its ancestor", os.rename, a / "full" / "deep", a / "full"),
            ("dir onto its grandparent", os.rename, a / "full" / "deep", a),
            ("same inode: hard links", os.rename, a / "h", b / "h2"),
            ("onto itself", os.rename, a / "f", a / "f"),
            ("symlink over file", os.rename, a / "sym", a / "f"),
            ("dir over empty dir across", os.rename, a / "empty", b / "empty2"),
            ("dir with trailing slash", os.rename, f"{b}/empty2/", f"{a}/back/"),
            ("file with trailing slash", os.rename, a / "h", f"{a}/h2/"),
            ("file across dirs", os.rename, a / "h", b / "h3"),
            ("dir across dirs", os.rename, a / "d", b / "d"),
            ("file over hard link", os.rename, b / "d" / "inside", b / "h2"),
        ]
        for label, fn, *args in steps:
            out.append((label, outcome(fn, *args), tree(root)))
        return out

    remote, local = workdirs.pair("rename")
    got = same(remote, local, scenario)
    assert [o[1] for o in got][:6] == ["ok", "EISDIR", "ENOTDIR", "ENOTEMPTY", "EINVAL",
                                       "ENOTEMPTY"]


def test_renameat2_flags(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> list[object]:
        _fixture(root)
        a, b = root / "a", root / "b"
        out: list[object] = []
        steps = [
            ("noreplace existing", a / "f", a / "g", RENAME_NOREPLACE),
            ("noreplace existing dir", a / "empty", a / "full", RENAME_NOREPLACE),
            ("noreplace new", a / "f", a / "f2", RENAME_NOREPLACE),
            ("both flags", a / "f2", a / "g", RENAME_NOREPLACE | RENAME_EXCHANGE),
            ("unknown flag", a / "f2", a / "g", 1 << 8),
            ("exchange with missing", a / "f2", a / "missing", RENAME_EXCHANGE),
            ("exchange missing source", a / "missing", a / "f2", RENAME_EXCHANGE),
            ("exchange files", a / "f2", a / "g", RENAME_EXCHANGE),
            ("exchange file and dir across", a / "g", b / "empty2", RENAME_EXCHANGE),
            ("exchange dir and ancestor", a / "full" / "deep", a / "full", RENAME_EXCHANGE),
            ("exchange dir and non-empty dir", a / "empty", a / "full", RENAME_EXCHANGE),
            ("exchange hard links", a / "h", b / "h2", RENAME_EXCHANGE),
            ("exchange symlink and dir", a / "sym", a / "d", RENAME_EXCHANGE),
            ("exchange with itself", a / "f2", a / "f2", RENAME_EXCHANGE),
        ]
        for label, old, new, flags in steps:
            out.append((label, outcome(renameat2, old, new, flags), tree(root)))
        return out

    remote, local = workdirs.pair("renameat2")
    got = same(remote, local, scenario)
    assert [o[1] for o in got][:3] == ["EEXIST", "EEXIST", "ok"]


def _devices(root: Path) -> dict[str, tuple[int, int]]:
    """(major, minor) of every character device below ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = (Path(dirpath) / name).lstat()
            if stat.S_ISCHR(st.st_mode):
                out[str((Path(dirpath) / name).relative_to(root))] = (
                    os.major(st.st_rdev), os.minor(st.st_rdev))
    return out


def test_renameat2_whiteout(workdirs: Workdirs) -> None:
    """RENAME_WHITEOUT as root (overlayfs' upper directories): the source name becomes a
    character device 0:0 with mode 0000 owned by the caller, the source moves."""
    def scenario(root: Path) -> list[object]:
        _fixture(root)
        a, b = root / "a", root / "b"
        out: list[object] = []
        noreplace = RENAME_WHITEOUT | RENAME_NOREPLACE
        steps = [
            ("file", a / "f", a / "f2", RENAME_WHITEOUT),
            ("noreplace onto a whiteout", a / "g", a / "f", noreplace),
            ("noreplace new", a / "g", b / "g2", noreplace),
            ("with exchange", a / "h", b / "h2", RENAME_WHITEOUT | RENAME_EXCHANGE),
            ("over a file", a / "sym", a / "f2", RENAME_WHITEOUT),
            ("over a whiteout", b / "g2", a / "g", RENAME_WHITEOUT),
            ("dir across", a / "d", b / "d", RENAME_WHITEOUT),
            ("dir over non-empty dir", a / "empty", a / "full", RENAME_WHITEOUT),
            ("dir over empty dir", a / "empty", b / "empty2", RENAME_WHITEOUT),
            ("same inode", a / "h", b / "h2", RENAME_WHITEOUT),
            ("missing source", a / "missing", a / "x", RENAME_WHITEOUT),
            ("a whiteout itself", a / "f", a / "f3", RENAME_WHITEOUT),
        ]
        for label, old, new, flags in steps:
            out.append((label, outcome(renameat2, old, new, flags), tree(root, owners=True),
                        _devices(root)))
        return out

    remote, local = workdirs.pair("whiteout")
    got = same(remote, local, scenario)
    assert [o[1] for o in got][:4] == ["ok", "EEXIST", "ok", "EINVAL"]
    assert got[0][2]["a/f"][:3] == ("chr", 0, 1) and got[0][3] == {"a/f": (0, 0)}
    st = (remote / "a" / "f3").lstat()
    assert (st.st_mode, st.st_rdev, st.st_uid) == (stat.S_IFCHR, 0, 0)


@pytest.fixture(scope="module")
def acc(grid: Grid) -> Iterator[Accounts]:
    with local_accounts() as a:
        yield a


def test_whiteouts_as_a_user(acc: Accounts, workdirs: Workdirs) -> None:
    """Whiteouts need no privilege (Linux 5.8, "vfs: allow unprivileged whiteout
    creation", for overlayfs in user namespaces): RENAME_WHITEOUT and mknod of a character
    device 0:0 work for anyone who may write the directory; other devices are EPERM."""
    def setup(root: Path) -> None:
        give(root, acc.alice, 0o755)
        for d, mode in (("d", 0o755), ("ro", 0o777)):
            os.mkdir(root / d)
            (root / d / "f").write_bytes(b"f")
            give(root / d / "f", acc.alice, 0o644)
            give(root / d, acc.alice, mode)
        os.chown(root / "ro", 0, 0)
        os.chmod(root / "ro", 0o755)

    alice = """
import stat as S
def r2(a, b, flags):
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), flags) != 0:
        n = ctypes.get_errno()
        raise OSError(n, os.strerror(n))
out["whiteout"] = e(r2, "d/f", "d/g", 4)
out["whiteout noreplace onto it"] = e(r2, "d/g", "d/f", 5)
out["whiteout missing"] = e(r2, "d/missing", "d/h", 4)
out["whiteout exchange"] = e(r2, "d/g", "d/h", 6)
out["whiteout from unwritable dir"] = e(r2, "ro/f", "d/ro", 4)
out["mknod 0:0"] = e(os.mknod, "d/m", S.S_IFCHR | 0o640, 0)
out["mknod 1:3"] = e(os.mknod, "d/null", S.S_IFCHR | 0o640, os.makedev(1, 3))
out["mknod block 0:0"] = e(os.mknod, "d/blk", S.S_IFBLK | 0o640, 0)
out["devices"] = {n: [os.major(os.lstat("d/" + n).st_rdev), os.minor(os.lstat("d/" + n).st_rdev)]
                  for n in sorted(os.listdir("d")) if S.S_ISCHR(os.lstat("d/" + n).st_mode)}
"""
    outs = compare_users(*workdirs.pair("whiteout-user"), setup, [(acc.alice, alice)])
    assert outs == [{"whiteout": "ok", "whiteout noreplace onto it": "EEXIST",
                     "whiteout missing": "ENOENT", "whiteout exchange": "EINVAL",
                     "whiteout from unwritable dir": "EACCES", "mknod 0:0": "ok",
                     "mknod 1:3": "EPERM", "mknod block 0:0": "EPERM",
                     "devices": {"f": [0, 0], "m": [0, 0]}}]


def test_rename_is_atomic_for_another_client(workdirs: Workdirs, other_mount: Path) -> None:
    """While one client renames new versions over ``target``, the other always finds a
    ``target`` (the old file or the new one), never none (see the known limit below)."""
    remote, _ = workdirs.pair("atomic")
    seen = other_mount / remote.name
    (remote / "target").write_bytes(b"version 0\n")
    deadline = time.monotonic() + 60
    while not (seen / "target").exists():
        assert time.monotonic() < deadline, "the other mount never saw the file"
        time.sleep(0.05)
    stop = threading.Event()
    errors: list[str] = []
    versions: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            try:
                os.stat(seen / "target")
            except OSError as e:
                errors.append("stat " + errno.errorcode.get(e.errno or 0, str(e)))
                continue
            try:
                fd = os.open(seen / "target", os.O_RDONLY)
            except OSError as e:
                errors.append("open " + errno.errorcode.get(e.errno or 0, str(e)))
                continue
            try:  # (reading a file replaced while open needs open-file registration)
                versions.add(os.pread(fd, 100, 0))
            except OSError:
                pass
            finally:
                os.close(fd)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for i in range(1, 151):
            tmp = remote / f"tmp{i}"
            tmp.write_bytes(f"version {i}\n".encode())
            os.rename(tmp, remote / "target")
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    # Never ENOENT: a stale cached name (the inode it named was replaced) gets ESTALE
    # from the MRC, and the kernel then walks the path again and finds the new file.
    # Known limit: FUSE looks up and opens in two requests, so a file replaced twice
    # within that round trip is still ESTALE for the open (needs the replaced inode kept
    # a little while, with open-file registration).
    assert set(errors) <= {"open ESTALE"} and len(errors) <= 10, (
        f"the other client saw {sorted(set(errors))} ({len(errors)} times)")
    assert versions <= {f"version {i}\n".encode() for i in range(151)} | {b""}
    assert len(versions) > 1
    assert sorted(os.listdir(remote)) == ["target"]
    assert (seen / "target").read_bytes() == b"version 150\n"
