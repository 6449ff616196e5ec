"""Timestamps: nanoseconds kept, and mtime/ctime changed by exactly the operations that
change them on Linux (compared step by step with a local directory). The mount uses
``noatime``: atime changes only when set explicitly (utimensat), never by reads."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conformance.posix import outcome, same
from tests.system.grid import Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]

STEP = 0.02  # longer than the clock granularity of both sides


def _times(p: Path) -> tuple[int, int, int]:
    st = os.lstat(p)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def _watch(root: Path, names: list[str], steps: list[tuple[str, Callable[[Path], None]]]
           ) -> list[tuple[str, dict[str, str]]]:
    """For each step, which of mtime ("m") and ctime ("c") of each watched path changed."""
    out = []
    for label, step in steps:
        before = {n: _times(root / n) for n in names if os.path.lexists(root / n)}
        time.sleep(STEP)
        step(root)
        changed = {}
        for n, (_, m, c) in before.items():
            if os.path.lexists(root / n):
                _, m2, c2 = _times(root / n)
                changed[n] = ("m" if m2 != m else "") + ("c" if c2 != c else "")
        out.append((label, changed))
    return out


def _write(p: Path, data: bytes, flags: int = os.O_WRONLY) -> None:
    fd = os.open(p, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_which_operations_change_mtime_and_ctime(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> list[tuple[str, dict[str, str]]]:
        for d in ("a", "b", "a/sub"):
            os.mkdir(root / d)
        (root / "a" / "f").write_bytes(b"0123456789")
        (root / "a" / "keep").write_bytes(b"k")
        os.link(root / "a" / "keep", root / "b" / "keep2")
        (root / "b" / "victim").write_bytes(b"v")
        os.link(root / "b" / "victim", root / "victim2")
        ff = lambda r: r / "a" / "f"  # noqa: E731
        steps: list[tuple[str, Callable[[Path], None]]] = [
            ("write", lambda r: _write(ff(r), b"abc")),
            ("append", lambda r: _write(ff(r), b"xyz", os.O_WRONLY | os.O_APPEND)),
            ("read", lambda r: ff(r).read_bytes() and None),
            ("grow by truncate", lambda r: os.truncate(ff(r), 100)),
            ("shrink by truncate", lambda r: os.truncate(ff(r), 5)),
            ("O_TRUNC", lambda r: os.close(os.open(ff(r), os.O_WRONLY | os.O_TRUNC))),
            ("chmod", lambda r: os.chmod(ff(r), 0o640)),
            ("chown", lambda r: os.chown(ff(r), 1, 1)),
            ("setxattr", lambda r: os.setxattr(ff(r), "user.k", b"v")),
            ("replace xattr", lambda r: os.setxattr(ff(r), "user.k", b"w")),
            ("removexattr", lambda r: os.removexattr(ff(r), "user.k")),
            ("listdir", lambda r: os.listdir(r / "a") and None),
            ("stat", lambda r: os.stat(ff(r)) and None),
            ("link", lambda r: os.link(ff(r), r / "b" / "f-link")),
            ("unlink a link", lambda r: os.unlink(r / "b" / "f-link")),
            ("rename within", lambda r: os.rename(ff(r), r / "a" / "g")),
            ("rename back", lambda r: os.rename(r / "a" / "g", ff(r))),
            ("rename across", lambda r: os.rename(r / "a" / "keep", r / "b" / "keep")),
            ("rename over", lambda r: os.rename(r / "b" / "keep", r / "b" / "victim")),
            ("mkdir", lambda r: os.mkdir(r / "a" / "new")),
            ("rmdir", lambda r: os.rmdir(r / "a" / "new")),
            ("move dir across", lambda r: os.rename(r / "a" / "sub", r / "b" / "sub")),
            ("symlink", lambda r: os.symlink("f", r / "a" / "sym")),
            ("mkfifo", lambda r: os.mkfifo(r / "a" / "fifo")),
            ("unlink", lambda r: os.unlink(r / "a" / "sym")),
            ("utime now", lambda r: os.utime(ff(r))),
            ("utime explicit", lambda r: os.utime(ff(r), ns=(10**9, 2 * 10**9))),
        ]
        names = ["a", "b", "a/f", "a/keep", "b/keep", "b/keep2", "b/victim", "victim2",
                 "b/sub", "a/sub"]
        return _watch(root, names, steps)

    remote, local = workdirs.pair("times")
    got = dict(same(remote, local, scenario))
    assert got["chmod"]["a/f"] == "c" and got["write"]["a/f"] == "mc"
    assert got["rename across"] == {**got["rename across"], "a": "mc", "b": "mc", "b/keep2": "c"}


def test_nanoseconds_and_utime_omit(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> dict[str, object]:
        f = root / "f"
        f.write_bytes(b"x")
        out: dict[str, object] = {}
        a, m = 1_234_567_890_123_456_789, 1_334_567_890_987_654_321
        os.utime(f, ns=(a, m))
        out["exact"] = _times(f)[:2]
        os.mkdir(root / "d")
        os.utime(root / "d", ns=(a + 1, m + 1))
        out["dir exact"] = _times(root / "d")[:2]
        os.symlink("f", root / "s")
        os.utime(root / "s", ns=(a + 2, m + 2), follow_symlinks=False)
        out["symlink exact"] = _times(root / "s")[:2]
        out["target untouched"] = _times(f)[:2]
        os.utime(f, ns=(0, 1))
        out["epoch"] = _times(f)[:2]
        # before 1970
        out["negative"] = outcome(os.utime, f, ns=(-10**9 - 5, -1))
        out["negative value"] = _times(f)[:2]
        return out

    remote, local = workdirs.pair("ns")
    same(remote, local, scenario)


def test_noatime_reads_leave_atime_alone(workdirs: Workdirs) -> None:
    """xfs is mounted noatime (a documented difference): neither reading a file nor
    listing a directory changes atime; only utimensat does."""
    remote, _ = workdirs.pair("noatime")
    f = remote / "f"
    f.write_bytes(b"data")
    os.utime(f, ns=(5 * 10**9, 6 * 10**9))
    os.utime(remote, ns=(5 * 10**9, 6 * 10**9))
    time.sleep(STEP)
    assert f.read_bytes() == b"data"
    os.listdir(remote)
    assert _times(f)[0] == 5 * 10**9 and _times(remote)[0] == 5 * 10**9
    os.utime(f)
    atime = _times(f)[0]
    assert abs(atime - time.time_ns()) < 5 * 10**9
