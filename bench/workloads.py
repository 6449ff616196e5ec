"""The benchmark workloads: plain POSIX calls on a directory, returning figures.

Each function works on any directory (local disk, a FUSE mount, ...) and cleans up
nothing it is not asked to: `seq_read` reads the file `seq_write` left behind.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
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

def metadata(directory: str | os.PathLike, n: int = 5000) -> dict[str, float]:
    """Create `n` empty files, stat each, unlink each: ops/s per phase.

    The files live in a fresh subdirectory, removed at the end. `create` is
    open(O_CREAT|O_EXCL) + close; `stat` is stat(2) by path, right after the creates
    (a FUSE file system's kernel attribute cache may answer part of it).
    """
    sub = os.path.join(directory, f"meta-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(sub)
    paths = [os.path.join(sub, f"f{i:06d}") for i in range(n)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    result: dict[str, float] = {}

    start = time.perf_counter()
    for p in paths:
        os.close(os.open(p, flags, 0o644))
    result["create"] = n / (time.perf_counter() - start)

    start = time.perf_counter()
    for p in paths:
        os.stat(p)
    result["stat"] = n / (time.perf_counter() - start)

    start = time.perf_counter()
    for p in paths:
        os.unlink(p)
    result["unlink"] = n / (time.perf_counter() - start)

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
