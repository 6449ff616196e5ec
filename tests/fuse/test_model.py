"""Model-based test: random operation sequences on the mount and on a local directory.

Every rule applies the same operation under both roots and requires the same outcome
(the same errno, or both succeed with the same result). After every step the two trees
must hold the same entries, types, permission bits, link counts, sizes, contents and
symlink targets. A small pool of names makes collisions (existing targets, non-empty
directories, files where directories are expected) frequent. Like the conformance suite,
it runs on a grid that keeps its metadata in PostgreSQL where that is installed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import random
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, running_grid

pytestmark = [pytest.mark.fuse]


@pytest.fixture(scope="module")
def grid(conformance_store: str) -> Iterator[Grid]:
    needs_fuse()
    with running_grid(metadata=conformance_store) as g:
        yield g


MiB = 1 << 20
PATHS = ["f", "g", "d", "e", "d/f", "d/g", "d/e", "d/e/f", "e/f"]
LINK_TARGETS = ["f", "d", "../f", "d/f", "e", "missing", "/nonexistent/x"]
MODES = [0o600, 0o644, 0o755, 0o700, 0o400, 0o000, 0o4755, 0o1777]
OFFSETS = [0, 1, 7, 4095, 4096, MiB - 2, MiB, MiB + 5, 2 * MiB - 1, 3 * MiB + 3]
SIZES = [0, 1, 3, 100, 4096, 70_000, MiB - 1, MiB + 1, 2 * MiB + 17]
TIMES = [0, 1, 1_000_000_000_123_456_789, 1_700_000_000_000_000_000]

paths = st.sampled_from(PATHS)
modes = st.sampled_from(MODES)
offsets = st.sampled_from(OFFSETS)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Mostly small data, now and then enough to cross an object (1 MiB) boundary."""
    n = draw(st.one_of(st.integers(0, 300), st.sampled_from([4096, 70_000, MiB + 3])))
    return random.Random(draw(st.integers(0, 1000))).randbytes(n)


Outcome = tuple[str, Any]


def outcome(fn: Callable[[Path], Any], root: Path) -> Outcome:
    try:
        return ("ok", fn(root))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno or 0, e.errno))


def snapshot(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            s = p.lstat()
            entry: dict[str, Any] = {
                "mode": oct(s.st_mode),  # type and permission bits
                "nlink": s.st_nlink,
            }
            if stat.S_ISLNK(s.st_mode):
                entry.update(target=os.readlink(p), size=s.st_size)
            elif stat.S_ISREG(s.st_mode):
                data = p.read_bytes()
                entry.update(size=s.st_size, length=len(data),
                             sha=hashlib.sha256(data).hexdigest()[:16])
            out[str(p.relative_to(root))] = entry
    return out


class FileSystemModel(RuleBasedStateMachine):
    grid: Grid
    local_base: Path
    counter = itertools.count(1)
    stats: Counter[tuple[str, str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        n = next(self.counter)
        self.remote = self.grid.mnt / "model" / f"ex{n}"
        self.local = self.local_base / f"ex{n}"
        self.remote.mkdir(parents=True)
        self.local.mkdir(parents=True)
        self.steps = 0

    # ---------------------------------------------------------------- machinery
    def both(self, what: str, fn: Callable[[Path], Any]) -> Outcome:
        remote = outcome(fn, self.remote)
        local = outcome(fn, self.local)
        assert remote == local, f"{what}: mount {remote!r} != local {local!r}"
        self.steps += 1
        self.stats[(what.split()[0], remote[0] if remote[0] == "ok" else remote[1])] += 1
        return remote

    @initialize()
    def seed_tree(self) -> None:
        def make(root: Path) -> None:
            for d in ("d", "e", "d/e"):
                (root / d).mkdir()
            for f in ("f", "d/f", "e/f"):
                (root / f).write_bytes(f"seed of {f}".encode())
            os.link(root / "f", root / "d" / "g")

        self.both("seed", make)

    @invariant()
    def trees_agree(self) -> None:
        a, b = snapshot(self.remote), snapshot(self.local)
        assert sorted(a) == sorted(b), f"entries: mount {sorted(a)} local {sorted(b)}"
        diffs = [f"{k}: mount {a[k]} local {b[k]}" for k in sorted(a) if a[k] != b[k]]
        assert not diffs, "\n".join(diffs)

    # ---------------------------------------------------------------- files
    @rule(path=paths, mode=modes, excl=st.booleans(), trunc=st.booleans())
    def create(self, path: str, mode: int, excl: bool, trunc: bool) -> None:
        flags = os.O_CREAT | os.O_WRONLY | (os.O_EXCL if excl else 0)
        flags |= os.O_TRUNC if trunc else 0

        def op(root: Path) -> None:
            os.close(os.open(root / path, flags, mode))

        self.both(f"create {path} {oct(mode)} excl={excl} trunc={trunc}", op)

    @rule(path=paths, offset=offsets, data=payloads())
    def write_at(self, path: str, offset: int, data: bytes) -> None:
        def op(root: Path) -> int:
            fd = os.open(root / path, os.O_WRONLY)
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(f"pwrite {path} at {offset} {len(data)} bytes", op)

    @rule(path=paths, data=payloads())
    def append(self, path: str, data: bytes) -> None:
        def op(root: Path) -> tuple[int, int]:
            fd = os.open(root / path, os.O_WRONLY | os.O_APPEND)
            try:
                n = os.write(fd, data)
                return n, os.fstat(fd).st_size
            finally:
                os.close(fd)

        self.both(f"append {path} {len(data)} bytes", op)

    @rule(path=paths, size=st.sampled_from(SIZES))
    def truncate(self, path: str, size: int) -> None:
        self.both(f"truncate {path} {size}", lambda root: os.truncate(root / path, size))

    @rule(path=paths, offset=offsets, length=st.sampled_from([1, 10, 5000, MiB + 9]))
    def read_at(self, path: str, offset: int, length: int) -> None:
        def op(root: Path) -> str:
            fd = os.open(root / path, os.O_RDONLY)
            try:
                return hashlib.sha256(os.pread(fd, length, offset)).hexdigest()
            finally:
                os.close(fd)

        self.both(f"pread {path} at {offset} for {length}", op)

    @rule(path=paths, data=payloads(), offset=offsets)
    def write_read_one_handle(self, path: str, data: bytes, offset: int) -> None:
        """Write and read back through one O_RDWR descriptor (ftruncate on it: see
        test_ftruncate_then_read_through_the_same_descriptor)."""

        def op(root: Path) -> tuple[int, str, int]:
            fd = os.open(root / path, os.O_RDWR)
            try:
                os.pwrite(fd, data, offset)
                os.pwrite(fd, data[:50], offset // 2)
                got = os.pread(fd, 4 * MiB, 0)
                return len(got), hashlib.sha256(got).hexdigest(), os.fstat(fd).st_size
            finally:
                os.close(fd)

        self.both(f"rdwr {path} {len(data)} bytes at {offset}", op)

    # ---------------------------------------------------------------- directories
    @rule(path=paths, mode=st.sampled_from([0o755, 0o700, 0o1777]))
    def mkdir(self, path: str, mode: int) -> None:
        self.both(f"mkdir {path}", lambda root: os.mkdir(root / path, mode))

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        self.both(f"rmdir {path}", lambda root: os.rmdir(root / path))

    @rule(path=paths)
    def unlink(self, path: str) -> None:
        self.both(f"unlink {path}", lambda root: os.unlink(root / path))

    @rule(path=paths)
    def listdir(self, path: str) -> None:
        self.both(f"listdir {path}", lambda root: sorted(os.listdir(root / path)))

    # ---------------------------------------------------------------- names
    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        self.both(f"rename {src} -> {dst}", lambda root: os.rename(root / src, root / dst))

    @rule(src=paths, dst=paths)
    def link(self, src: str, dst: str) -> None:
        self.both(f"link {src} -> {dst}", lambda root: os.link(root / src, root / dst))

    @rule(to=st.sampled_from(LINK_TARGETS), path=paths)
    def symlink(self, to: str, path: str) -> None:
        self.both(f"symlink {path} -> {to}", lambda root: os.symlink(to, root / path))

    @rule(path=paths)
    def readlink(self, path: str) -> None:
        self.both(f"readlink {path}", lambda root: os.readlink(root / path))

    # ---------------------------------------------------------------- attributes
    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        def op(root: Path) -> str:
            os.chmod(root / path, mode)
            return oct(os.stat(root / path).st_mode)

        self.both(f"chmod {path} {oct(mode)}", op)

    @rule(path=paths, atime=st.sampled_from(TIMES), mtime=st.sampled_from(TIMES))
    def utime(self, path: str, atime: int, mtime: int) -> None:
        def op(root: Path) -> int:
            os.utime(root / path, ns=(atime, mtime), follow_symlinks=False)
            return os.lstat(root / path).st_mtime_ns

        self.both(f"utime {path} mtime={mtime}", op)

    @rule(path=paths)
    def utime_now(self, path: str) -> None:
        def op(root: Path) -> bool:
            before = os.stat(root / path).st_mtime_ns
            os.utime(root / path)
            return os.stat(root / path).st_mtime_ns >= before

        self.both(f"utime now {path}", op)

    @rule(path=paths)
    def stat_follow(self, path: str) -> None:
        def op(root: Path) -> tuple[int, int, int]:
            s = os.stat(root / path)
            return s.st_mode, s.st_nlink, s.st_size if stat.S_ISREG(s.st_mode) else -1

        self.both(f"stat {path}", op)

    def teardown(self) -> None:
        with contextlib.suppress(OSError):
            for root in (self.local,):
                for dirpath, dirnames, _ in os.walk(root):
                    for d in dirnames:
                        with contextlib.suppress(OSError):
                            os.chmod(Path(dirpath) / d, 0o755)


@pytest.mark.timeout(360)  # about 110 s on a quiet 2-core machine (rw factor 3 home)
def test_mount_behaves_like_a_local_directory(
    grid: Grid, tmp_path_factory: pytest.TempPathFactory
) -> None:
    FileSystemModel.grid = grid
    FileSystemModel.local_base = tmp_path_factory.mktemp("model-local")
    run_state_machine_as_test(
        FileSystemModel,
        settings=settings(
            max_examples=15,
            stateful_step_count=50,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    stats = Counter(FileSystemModel.stats)
    scripted_run()
    scripted = FileSystemModel.stats - stats
    print("outcomes:", sorted(stats.items()))
    random_ok = {rule for (rule, result) in stats if result == "ok"}
    # not vacuous: many steps ran, most rules succeeded sometimes and failed sometimes
    assert sum(stats.values()) > 500
    assert len(random_ok) >= 10, random_ok
    assert len({result for (_, result) in stats if result != "ok"}) >= 5
    # and the data path was taken, each step of it a success on both sides
    assert {rule for (rule, result) in scripted if result == "ok"} >= {
        "create", "pwrite", "append", "truncate", "pread", "rdwr", "unlink", "rename",
        "link", "mkdir", "chmod", "utime", "stat", "listdir",
    }, scripted


def scripted_run() -> None:
    """The data path once in a fixed order, checked like the random runs (against the
    local directory, step by step and whole tree): which rules hypothesis draws, and
    whether their names exist then, varies with its version and with the test's code,
    so the random runs alone may leave a rule without a success (one run made 11
    renames, every one of them an error)."""
    m = FileSystemModel()
    m.seed_tree()
    m.create("g", 0o644, excl=True, trunc=False)
    m.write_at("g", MiB - 2, b"across an object boundary")
    m.append("g", b"appended")
    m.read_at("g", MiB - 2, 5000)
    m.truncate("g", 70_000)
    m.write_read_one_handle("d/f", b"one handle", 4096)
    m.rename("g", "e/g")
    m.link("e/g", "d/e/f")
    m.unlink("d/g")
    m.mkdir("e/h", 0o755)
    m.chmod("e/g", 0o600)
    m.utime("e/g", 1, 1_700_000_000_000_000_000)
    m.stat_follow("e/g")
    m.listdir("e")
    m.trees_agree()
    m.teardown()


@pytest.mark.timeout(60)
def test_an_open_file_outlives_its_last_name(grid: Grid) -> None:
    d = grid.mnt / "model" / f"unlinked-{os.getpid()}-{next(FileSystemModel.counter)}"
    d.mkdir(parents=True)
    (d / "f").write_bytes(b"seed")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        assert os.fstat(fd).st_nlink == 0
        assert os.pwrite(fd, b"new data", 0) == 8
        assert os.pread(fd, 100, 0) == b"new data"
    finally:
        os.close(fd)
    # the same for a file replaced by a rename
    (d / "g").write_bytes(b"old")
    (d / "h").write_bytes(b"replacement")
    fd = os.open(d / "g", os.O_RDONLY)
    try:
        os.rename(d / "h", d / "g")
        assert os.pread(fd, 100, 0) == b"old"
    finally:
        os.close(fd)


@pytest.mark.timeout(60)
def test_ftruncate_then_read_through_the_same_descriptor(grid: Grid) -> None:
    d = grid.mnt / "model" / f"ftruncate-{os.getpid()}-{next(FileSystemModel.counter)}"
    d.mkdir(parents=True)
    (d / "f").write_bytes(b"seed")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.ftruncate(fd, 2)
        assert os.pread(fd, 100, 0) == b"se"
    finally:
        os.close(fd)
