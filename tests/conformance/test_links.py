"""Hard links within and across directories: link counts of files and directories as
Linux keeps them, seen from this mount and from a second client."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conformance.posix import outcome, same, tree
from tests.system.grid import Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]

ATTR_TIMEOUT = 1.0  # the mount's attribute and entry cache (seconds)


def test_link_counts(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> list[object]:
        for d in ("a", "b", "c"):
            os.mkdir(root / d)
        (root / "a" / "f").write_bytes(b"data")
        os.symlink("f", root / "a" / "sym")
        os.mkfifo(root / "a" / "fifo")
        out: list[object] = []
        steps = [
            ("link across", os.link, root / "a" / "f", root / "b" / "f1"),
            ("link again", os.link, root / "b" / "f1", root / "c" / "f2"),
            ("link in same dir", os.link, root / "a" / "f", root / "a" / "f3"),
            ("link a symlink itself", lambda s, d: os.link(s, d, follow_symlinks=False),
             root / "a" / "sym", root / "b" / "sym2"),
            ("link through a symlink", lambda s, d: os.link(s, d, follow_symlinks=True),
             root / "a" / "sym", root / "c" / "via-sym"),
            ("link a fifo", os.link, root / "a" / "fifo", root / "c" / "fifo2"),
            ("unlink one", os.unlink, root / "a" / "f"),
            ("rename a link across", os.rename, root / "b" / "f1", root / "c" / "f1"),
            ("mkdir", os.mkdir, root / "a" / "sub"),
            ("mkdir another", os.mkdir, root / "a" / "sub2"),
            ("move dir across", os.rename, root / "a" / "sub", root / "b" / "sub"),
            ("rmdir", os.rmdir, root / "a" / "sub2"),
            ("unlink all but one", lambda *ps: [os.unlink(p) for p in ps],
             root / "c" / "f2", root / "a" / "f3", root / "c" / "via-sym"),
        ]
        for label, fn, *args in steps:
            out.append((label, outcome(fn, *args), tree(root)))
        st = os.stat(root / "c" / "f1")
        out.append(("last link", st.st_nlink, (root / "c" / "f1").read_bytes()))
        return out

    remote, local = workdirs.pair("links")
    got = same(remote, local, scenario)
    assert got[2][2]["a/f3"][2] == 4  # four names of one file


def test_link_counts_seen_by_another_client(workdirs: Workdirs, other_mount: Path) -> None:
    remote, _ = workdirs.pair("links2")
    seen = other_mount / remote.name
    for d in ("a", "b"):
        os.mkdir(remote / d)
    (remote / "a" / "f").write_bytes(b"shared")
    os.link(remote / "a" / "f", remote / "b" / "g")
    os.mkdir(remote / "a" / "sub")
    st = os.stat(seen / "b" / "g")
    assert st.st_nlink == 2 and st.st_ino == os.stat(remote / "a" / "f").st_ino
    assert os.stat(seen / "a").st_nlink == 3
    assert tree(seen) == tree(remote)
    # the other client links and unlinks; this one sees it once its cache expires
    os.link(seen / "b" / "g", seen / "a" / "h")
    os.unlink(seen / "a" / "f")
    os.rmdir(seen / "a" / "sub")
    time.sleep(ATTR_TIMEOUT + 0.5)
    assert os.stat(remote / "b" / "g").st_nlink == 2
    assert os.stat(remote / "a").st_nlink == 2
    assert sorted(os.listdir(remote / "a")) == ["h"]
    assert tree(seen) == tree(remote)
