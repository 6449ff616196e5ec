"""Special files (FIFOs, sockets, device nodes) and symbolic links of every length,
compared with a local directory."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.posix import (
    PATH_MAX,
    Accounts,
    as_user,
    local_accounts,
    outcome,
    same,
    tree,
)
from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]


def _node(p: Path) -> tuple[str, int, int, int]:
    st = os.lstat(p)
    return (oct(stat.S_IFMT(st.st_mode)), stat.S_IMODE(st.st_mode), st.st_rdev, st.st_size)


def test_fifos_sockets_and_devices(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        os.umask(0o022)
        os.mkfifo(root / "fifo", 0o640)
        os.mknod(root / "fifo2", stat.S_IFIFO | 0o666)
        os.mknod(root / "plain", 0o600)  # S_IFREG by default
        os.mknod(root / "chr", stat.S_IFCHR | 0o620, os.makedev(1, 3))
        os.mknod(root / "blk", stat.S_IFBLK | 0o660, os.makedev(7, 200))
        os.mknod(root / "big", stat.S_IFCHR | 0o600, os.makedev(4095, 1048575))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(root / "sock"))
            s.listen(1)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(str(root / "sock"))
                conn, _ = s.accept()
                with conn:
                    c.sendall(b"over the socket")
                    out["socket data"] = conn.recv(100)
        out["bind existing"] = outcome(
            lambda: socket.socket(socket.AF_UNIX).bind(str(root / "sock")))
        out["mknod dir type"] = outcome(os.mknod, root / "d", stat.S_IFDIR | 0o755)
        out["mknod bad type"] = outcome(os.mknod, root / "bad", 0o170000 | 0o644)
        for name in ("fifo", "fifo2", "plain", "chr", "blk", "big", "sock"):
            out[name] = _node(root / name)
        # a FIFO in the mount is a pipe: the kernel carries its data
        r = os.open(root / "fifo", os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(root / "fifo", os.O_WRONLY)
        os.write(w, b"through the fifo")
        out["fifo data"] = os.read(r, 100)
        os.close(w)
        os.close(r)
        out["tree"] = tree(root)
        return out

    remote, local = workdirs.pair("special")
    got = same(remote, local, scenario)
    assert got["chr"][2] == os.makedev(1, 3) and got["sock"][0] == oct(stat.S_IFSOCK)


@pytest.fixture(scope="module")
def acc(grid: Grid) -> Iterator[Accounts]:
    with local_accounts() as a:
        yield a


def test_device_nodes_need_root(acc: Accounts, workdirs: Workdirs) -> None:
    body = """
import stat
out["chr"] = e(os.mknod, "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
out["blk"] = e(os.mknod, "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
out["fifo"] = e(os.mknod, "fifo", stat.S_IFIFO | 0o600)
out["sock"] = e(os.mknod, "sock", stat.S_IFSOCK | 0o600)
out["listing"] = sorted(os.listdir("."))
"""
    remote, local = workdirs.pair("devices")
    for d in (remote, local):
        os.chmod(d, 0o777)
    assert as_user(acc.alice, body, remote) == as_user(acc.alice, body, local)
    assert sorted(os.listdir(remote)) == ["fifo", "sock"]


def test_symlinks_of_every_length(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for n in (1, 2, 100, 255, 256, 1000, 2048, 4000, PATH_MAX - 1, PATH_MAX):
            target = (b"t/" * n)[:n]
            link = root / f"l{n}"
            out[f"symlink {n}"] = outcome(os.symlink, target, link)
            if os.path.lexists(link):
                got = os.readlink(os.fsencode(link))
                out[f"readlink {n}"] = (len(got), got == target, os.lstat(link).st_size)
                out[f"follow {n}"] = outcome(os.stat, link)
        weird = bytes(range(1, 256)).replace(b"/", b"")  # every byte but NUL and "/"
        os.symlink(weird, root / "weird")
        out["weird"] = os.readlink(os.fsencode(root / "weird")) == weird
        os.symlink(b"/absolute/" + b"x" * 200, root / "abs")
        out["abs"] = os.readlink(root / "abs")
        out["empty"] = outcome(os.symlink, "", root / "empty")
        os.symlink("../" * 20 + "f", root / "up")
        out["up"] = outcome(os.stat, root / "up")
        out["tree"] = tree(root)
        return out

    remote, local = workdirs.pair("symlinks")
    got = same(remote, local, scenario)
    assert got[f"readlink {PATH_MAX - 1}"] == (PATH_MAX - 1, True, PATH_MAX - 1)
    assert got[f"symlink {PATH_MAX}"] == "ENAMETOOLONG"
