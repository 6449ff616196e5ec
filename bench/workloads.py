"""The benchmark workloads: plain POSIX calls on a directory, returning figures.

Each function works on any directory (local disk, a FUSE mount, ...) and cleans up
nothing it is not asked to: `seq_read` reads the file `seq_write` left behind.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

MiB = 1 << 20
SEQ_FILE = "seq.dat"


class ReadResult(NamedTuple):
    mib_s: float
    caches_dropped: bool  # /proc/sys/vm/drop_caches accepted "3"
    fadvised: bool  # posix_fadvise(DONTNEED) succeeded on the file read


def seq_write(directory: str | os.PathLike, size_bytes: int, block: int = MiB,
              name: str = SEQ_FILE) -> float:
    """Write `size_bytes` in `block`-sized write(2) calls, then fsync; MiB/s.

    The time runs from open to the end of fsync and close. The data is one block of
    os.urandom reused, so neither compression nor the generator is measured.
    """
    data = memoryview(os.urandom(block))
    path = os.path.join(directory, name)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size_bytes
        while left > 0:
            chunk = data[: min(block, left)]
            while chunk:
                chunk = chunk[os.write(fd, chunk):]
            left -= min(block, left)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size_bytes / MiB / (time.perf_counter() - start)


def _fadvise_dontneed(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never hang on a FIFO
    except OSError:
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def evict(paths: Iterable[str | os.PathLike]) -> None:
    """posix_fadvise(DONTNEED) every regular file at or under `paths` (best effort).

    For a FUSE target, pass the backing store (the pass-through source, the OSDs'
    object directories) so that its page cache does not serve the read either.
    """
    for top in paths:
        top = os.fspath(top)
        if os.path.isfile(top):
            _fadvise_dontneed(top)
            continue
        for root, _dirs, files in os.walk(top):
            for f in files:
                _fadvise_dontneed(os.path.join(root, f))


def drop_caches(what: int = 3) -> bool:
    """sync, then ask the kernel to drop caches (root only; machine-wide): 3 the page
    cache and the dentries and inodes, 2 dentries and inodes only, 1 the page cache only.
    Dropping a FUSE file system's dentries and inodes makes the kernel FORGET them, so
    the next access by path is a LOOKUP that the file system answers."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write(f"{what}\n")
        return True
    except OSError:
        return False


def seq_read(directory: str | os.PathLike, block: int = MiB, name: str = SEQ_FILE,
             backing: Iterable[str | os.PathLike] = (), drop: bool = True) -> ReadResult:
    """Read back the file `seq_write` wrote, in `block`-sized reads, cold if we can.

    Before the timed part: fadvise(DONTNEED) on the file and on `backing`, then
    drop_caches if permitted and `drop` (it is global: tests pass False).
    The figure is MiB/s over the bytes actually read.
    """
    path = os.path.join(directory, name)
    fadvised = _fadvise_dontneed(path)
    evict(backing)
    dropped = drop_caches() if drop else False
    buf = bytearray(block)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [view]):
            total += n
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    if total == 0:
        raise ValueError(f"{path} is empty: run seq_write first")
    return ReadResult(total / MiB / elapsed, dropped, fadvised)


def random_reads(directory: str | os.PathLike, n: int = 2000, block: int = 4096,
                 name: str = SEQ_FILE, backing: Iterable[str | os.PathLike] = (),
                 drop: bool = True, seed: int = 1) -> float:
    """`n` reads of `block` bytes at random aligned offsets of the file `seq_write`
    wrote, cold if we can (as `seq_read`); IOPS. The offsets are the same on every target
    (a fixed seed)."""
    path = os.path.join(directory, name)
    _fadvise_dontneed(path)
    evict(backing)
    if drop:
        drop_caches()
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = os.fstat(fd).st_size // block
        if blocks == 0:
            raise ValueError(f"{path} is smaller than one block: run seq_write first")
        rng = random.Random(seed)
        offsets = [rng.randrange(blocks) * block for _ in range(n)]
        start = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, block, off)) != block:
                raise ValueError(f"short read at {off} of {path}")
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return n / elapsed


def random_writes(directory: str | os.PathLike, n: int = 2000, block: int = 4096,
                  name: str = SEQ_FILE, seed: int = 2) -> float:
    """`n` writes of `block` bytes at random aligned offsets of the file `seq_write`
    wrote (as a database or an image being patched does), then one fsync; writes/s over
    open through fsync and close. What was written is read back and checked."""
    path = os.path.join(directory, name)
    rng = random.Random(seed)
    data = rng.randbytes(block)
    start = time.perf_counter()
    fd = os.open(path, os.O_RDWR)
    try:
        blocks = os.fstat(fd).st_size // block
        if blocks == 0:
            raise ValueError(f"{path} is smaller than one block: run seq_write first")
        offsets = [rng.randrange(blocks) * block for _ in range(n)]
        for off in offsets:
            if os.pwrite(fd, data, off) != block:
                raise ValueError(f"short write at {off} of {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in offsets[:100]:
            if os.pread(fd, block, off) != data:
                raise ValueError(f"{path}: a random write at {off} did not read back")
    finally:
        os.close(fd)
    return n / elapsed


def create_files(directory: str | os.PathLike, n: int) -> float:
    """Create `n` empty files f000000.. (open(O_CREAT|O_EXCL) + close); ops/s."""
    paths = [os.path.join(directory, f"f{i:06d}") for i in range(n)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    start = time.perf_counter()
    for p in paths:
        os.close(os.open(p, flags, 0o644))
    return n / (time.perf_counter() - start)


def stat_files(directory: str | os.PathLike, n: int) -> float:
    """stat(2) by path each of the `n` files `create_files` made; ops/s."""
    paths = [os.path.join(directory, f"f{i:06d}") for i in range(n)]
    start = time.perf_counter()
    for p in paths:
        os.stat(p)
    return n / (time.perf_counter() - start)


def unlink_files(directory: str | os.PathLike, n: int) -> float:
    """Unlink each of the `n` files `create_files` made; ops/s."""
    paths = [os.path.join(directory, f"f{i:06d}") for i in range(n)]
    start = time.perf_counter()
    for p in paths:
        os.unlink(p)
    return n / (time.perf_counter() - start)


def metadata(directory: str | os.PathLike, n: int = 5000,
             between: Callable[[], object] | None = None) -> dict[str, float]:
    """Create `n` empty files, stat each, list them, unlink each: per second per phase.

    The files live in a fresh subdirectory, removed at the end. `create` is
    open(O_CREAT|O_EXCL) + close; then `between()` runs, untimed (fsbench remounts the
    file system and drops the kernel's dentries and inodes there; without it a FUSE file
    system's kernel caches answer part of the stats); `stat` is stat(2) by path;
    `readdir` lists the subdirectory once (os.listdir: opendir, getdents until the end,
    closedir) and is entries/s.
    """
    sub = os.path.join(directory, f"meta-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(sub)
    result = {"create": create_files(sub, n)}
    if between is not None:
        between()
    result["stat"] = stat_files(sub, n)
    start = time.perf_counter()
    listed = len(os.listdir(sub))
    result["readdir"] = n / (time.perf_counter() - start)
    if listed != n:
        raise ValueError(f"readdir of {sub} listed {listed} entries, not {n}")
    result["unlink"] = unlink_files(sub, n)
    os.rmdir(sub)
    return result


class StatTwice(NamedTuple):
    first: float  # ops/s of pass 1
    second: float  # ops/s of pass 2, right after pass 1
    first_s: float  # seconds pass 1 took: pass 2 can only be cached if below the timeouts
    caches_dropped: bool  # dentries and inodes dropped before pass 1
    create_s: float  # seconds the untimed creates took


def stat_twice(directory: str | os.PathLike, n: int = 5000, drop: bool = True) -> StatTwice:
    """Create `n` empty files, forget them, then stat each by path twice in a row.

    The files (in a fresh subdirectory, removed at the end) are created untimed; then,
    if `drop` and permitted, the kernel's dentries and inodes are dropped (drop_caches
    2: machine-wide, but the page cache stays, so nobody reads the disk), so pass 1 is
    a LOOKUP per file that the file system answers (from its own memory) and pass 2,
    right after, shows what the kernel answers from its entry and attribute caches.
    """
    sub = os.path.join(directory, f"stat2-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(sub)
    paths = [os.path.join(sub, f"f{i:06d}") for i in range(n)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    start = time.perf_counter()
    for p in paths:
        os.close(os.open(p, flags, 0o644))
    create_s = time.perf_counter() - start
    dropped = drop_caches(2) if drop else False

    start = time.perf_counter()
    for p in paths:
        os.stat(p)
    first_s = time.perf_counter() - start

    start = time.perf_counter()
    for p in paths:
        os.stat(p)
    second_s = time.perf_counter() - start

    for p in paths:
        os.unlink(p)
    os.rmdir(sub)
    return StatTwice(n / first_s, n / second_s, first_s, dropped, create_s)


class SmallFiles(NamedTuple):
    write: float  # files/s: create, one write, fsync, close each
    read: float  # files/s: open, read to the end, close each, cold if we could
    caches_dropped: bool  # drop_caches(3) accepted before the reads


def small_files(directory: str | os.PathLike, n: int = 1000, size: int = 16 * 1024,
                backing: Iterable[str | os.PathLike] = (), drop: bool = True) -> SmallFiles:
    """Write `n` files of `size` bytes, each with its own fsync, then read them back cold.

    The files live in a fresh subdirectory, removed at the end. A write is
    open(O_CREAT|O_EXCL) + one write(2) + fsync + close; the reads follow
    fadvise(DONTNEED) on every file and `backing`, and drop_caches(3) if permitted and
    `drop` (as `seq_read`), so the opens are lookups the file system answers too.
    """
    sub = os.path.join(directory, f"small-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(sub)
    paths = [os.path.join(sub, f"s{i:06d}") for i in range(n)]
    data = os.urandom(size)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    start = time.perf_counter()
    for p in paths:
        fd = os.open(p, flags, 0o644)
        try:
            if os.write(fd, data) != size:
                raise ValueError(f"short write to {p}")
            os.fsync(fd)
        finally:
            os.close(fd)
    write = n / (time.perf_counter() - start)

    for p in paths:
        _fadvise_dontneed(p)
    evict(backing)
    dropped = drop_caches() if drop else False
    start = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            got = 0
            while chunk := os.read(fd, size + 1):
                got += len(chunk)
        finally:
            os.close(fd)
        if got != size:
            raise ValueError(f"read {got} bytes of {p}, not {size}")
    read = n / (time.perf_counter() - start)

    for p in paths:
        os.unlink(p)
    os.rmdir(sub)
    return SmallFiles(write, read, dropped)


APPEND_FILE = "append.log"


def appends(directory: str | os.PathLike, n: int = 5000, block: int = 4096,
            name: str = APPEND_FILE) -> float:
    """`n` write(2) calls of `block` bytes to one new file opened with O_APPEND, then one
    fsync; writes/s over open through fsync and close. The file is removed afterwards;
    its size is checked (n * block)."""
    path = os.path.join(directory, name)
    data = os.urandom(block)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        for _ in range(n):
            if os.write(fd, data) != block:
                raise ValueError(f"short append to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    size = os.stat(path).st_size
    os.unlink(path)
    if size != n * block:
        raise ValueError(f"{path} grew to {size} bytes, not {n * block}")
    return n / elapsed


CRIU_FILE = "pages.img"
CRIU_PAGE = 4096
CRIU_RUN = MiB
CRIU_PAGES = 15  # single pages after each run


class CriuResult(NamedTuple):
    mib_s: float
    page_writes: int  # writes of CRIU_PAGE bytes
    run_writes: int  # writes of CRIU_RUN bytes


def criu_pattern(size_bytes: int) -> list[int]:
    """The write sizes of a `size_bytes` CRIU-like image, in order: cycles of a 4 KiB
    header, a 1 MiB run of pages and 15 single 4 KiB pages (1 MiB + 64 KiB), the last
    cycle cut short at `size_bytes`."""
    cycle = [CRIU_PAGE, CRIU_RUN, *[CRIU_PAGE] * CRIU_PAGES]
    sizes: list[int] = []
    left = size_bytes
    while left > 0:
        for s in cycle:
            if left <= 0:
                break
            sizes.append(min(s, left))
            left -= sizes[-1]
    return sizes


def criu_image(directory: str | os.PathLike, size_bytes: int = 200 * MiB,
               name: str = CRIU_FILE) -> CriuResult:
    """Write a CRIU-like image of `size_bytes` to one new file in the mixed pattern of
    `criu_pattern` (sequential, from one buffer of os.urandom), then fsync; MiB/s over
    open through fsync and close. The file is left behind, as `seq_write` does."""
    sizes = criu_pattern(size_bytes)
    data = memoryview(os.urandom(CRIU_RUN))
    path = os.path.join(directory, name)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for s in sizes:
            chunk = data[:s]
            while chunk:
                chunk = chunk[os.write(fd, chunk):]
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    return CriuResult(size_bytes / MiB / elapsed, sum(s == CRIU_PAGE for s in sizes),
                      sum(s == CRIU_RUN for s in sizes))


def checkpoint_version(directory: str | os.PathLike, size_bytes: int = 1024 * MiB,
                       block: int = 4 * MiB) -> float:
    """An application-level checkpoint version (xfs.checkpoint) of one `size_bytes` file,
    written in `block` writes, committed (fsync, the durability barrier, the manifest,
    the publishing rename); MiB/s over all of it. The set is removed afterwards."""
    from xfs.checkpoint import CheckpointSet

    where = Path(directory) / "ckpt-app"
    data = memoryview(os.urandom(block))
    start = time.perf_counter()
    ckpt = CheckpointSet.open(where, create=True)
    with ckpt.begin("app", {"application": "fsbench"}, incremental=False) as draft:
        with draft.open("state") as f:
            left = size_bytes
            while left > 0:
                left -= f.write(data[:min(block, left)])
        draft.commit()
    elapsed = time.perf_counter() - start
    shutil.rmtree(where)
    return size_bytes / MiB / elapsed


def checkpoint_image(directory: str | os.PathLike, size_bytes: int = 200 * MiB) -> float:
    """A CRIU-style checkpoint version: a `size_bytes` pages image written straight into
    the version's draft in `criu_pattern`'s mixed 4 KiB and 1 MiB writes plus a few small
    image files, as CRIU writes them, then committed (the images read back for their
    digests, fsync, the barrier, the manifest, the rename); MiB/s over all of it."""
    from xfs.checkpoint import CheckpointSet

    where = Path(directory) / "ckpt-criu"
    data = memoryview(os.urandom(CRIU_RUN))
    start = time.perf_counter()
    ckpt = CheckpointSet.open(where, create=True)
    with ckpt.begin("criu", {"pids": [os.getpid()]}, incremental=False) as draft:
        for i in range(8):
            (draft.path / f"core-{i}.img").write_bytes(bytes(data[: 2048 + i]))
        fd = os.open(draft.path / "pages-1.img", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for s in criu_pattern(size_bytes):
                chunk = data[:s]
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
        finally:
            os.close(fd)
        draft.commit()
    elapsed = time.perf_counter() - start
    shutil.rmtree(where)
    return size_bytes / MiB / elapsed
