"""A randomized data-integrity exerciser on the real mount.

A seeded random sequence of pwrite (1 B to 300 KiB, anywhere in a few MiB: past the end
to make holes, across the 1 MiB object and stripe boundaries), ftruncate (shrink and
grow), pread, mmap reads and mmap writes (shared writable mapping + msync) runs on one
file, and every step is checked against an in-memory model: each read must match
exactly (a short read at the end checks the size too), the size (an MRC round trip)
after every step that changed it and every ``SIZE_CHECK`` steps, the whole file every
``FULL_CHECK`` steps and at the end, again after close and reopen, and from the other
mount after close (close-to-open).

Replay a failure with ``XFS_EXERCISER_SEED=<seed> XFS_EXERCISER_OPS=<n>``; the seed is in
the failure message. The operation count per seed defaults to ``OPS`` (4 seeds x 6,000 =
24,000 operations in CI, to keep the suite within its time; ``XFS_EXERCISER_OPS`` runs
more). The seeds run two at a time, each on its own file, as two jobs
would: the mount serves them concurrently.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse]

KiB = 1 << 10
MiB = 1 << 20
MAX_SIZE = 4 * MiB + 123_457  # a few objects, the last one partial
MAX_WRITE = 300 * KiB
MAX_READ = 64 * KiB
FULL_CHECK = 1000
OPS = int(os.environ.get("XFS_EXERCISER_OPS", "6000"))
SIZE_CHECK = 20
SEED_GROUPS = (
    [(int(os.environ["XFS_EXERCISER_SEED"]),)]
    if "XFS_EXERCISER_SEED" in os.environ
    else [(20240601, 7), (1_000_003, 424242)]
)
GROUP_DEADLINE = 360.0  # seconds a group of seeds may take
PAGE = mmap.PAGESIZE


@dataclass
class Exerciser:
    seed: int
    fd: int
    rng: random.Random
    model: bytearray = field(default_factory=bytearray)
    step: int = 0
    last: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        pytest.fail(
            f"seed {self.seed}, step {self.step} ({self.last}): {message}\n"
            f"replay: XFS_EXERCISER_SEED={self.seed} XFS_EXERCISER_OPS={self.step + 1}",
            pytrace=False,
        )

    # ------------------------------------------------------------------ random choices
    def _length(self, maximum: int) -> int:
        """Log-uniform from 1 to ``maximum``: mostly small, now and then large."""
        return max(1, min(maximum, int(2 ** self.rng.uniform(0, maximum.bit_length()))))

    def _write_offset(self, n: int) -> int:
        size = len(self.model)
        r = self.rng.random()
        if r < 0.25:  # across an object (and stripe column) boundary
            boundary = self.rng.randint(1, MAX_SIZE // MiB) * MiB
            off = boundary - self.rng.randint(1, n) if n > 1 else boundary - 1
        elif r < 0.35 and size + n < MAX_SIZE:  # far past the end: a hole
            off = self.rng.randint(size, MAX_SIZE - n)
        elif r < 0.45:  # appending
            off = size
        else:
            off = self.rng.randint(0, max(0, min(size, MAX_SIZE - n)))
        return max(0, min(off, MAX_SIZE - n))

    # ------------------------------------------------------------------ operations
    def pwrite(self) -> None:
        n = self._length(MAX_WRITE)
        off = self._write_offset(n)
        data = self.rng.randbytes(n)
        self.last = f"pwrite {n} @ {off}"
        if os.pwrite(self.fd, data, off) != n:
            self.fail("short write")
        if off > len(self.model):
            self.model.extend(bytes(off - len(self.model)))
        self.model[off : off + n] = data

    def ftruncate(self) -> None:
        size = len(self.model)
        if self.rng.random() < 0.5 and size:
            new = self.rng.randint(0, size - 1)
        else:
            new = self.rng.randint(size, MAX_SIZE)
        if self.rng.random() < 0.2:
            new = self.rng.randint(0, MAX_SIZE // MiB) * MiB  # exactly on a boundary
        self.last = f"ftruncate {size} -> {new}"
        os.ftruncate(self.fd, new)
        if new < size:
            del self.model[new:]
        else:
            self.model.extend(bytes(new - size))

    def pread(self) -> None:
        size = len(self.model)
        off = self.rng.randint(0, size + 10)
        if self.rng.random() < 0.2:
            off = self.rng.randint(0, max(0, MAX_SIZE // MiB)) * MiB - self.rng.randint(0, 100)
            off = max(0, off)
        n = self._length(MAX_READ)
        self.last = f"pread {n} @ {off}"
        got = os.pread(self.fd, n, off)
        want = bytes(self.model[off : off + n])
        if got != want:
            self.fail(f"read mismatch: {describe(got, want, off)}")

    def _window(self) -> tuple[int, int] | None:
        """A page-aligned offset and a length with the mapping inside the file."""
        size = len(self.model)
        if size == 0:
            return None
        start = self.rng.randint(0, (size - 1) // PAGE) * PAGE
        length = self.rng.randint(1, min(size - start, 512 * KiB))
        return start, length

    def mmap_read(self) -> None:
        window = self._window()
        if window is None:
            return self.pread()
        start, length = window
        lo = self.rng.randint(0, length - 1)
        hi = min(length, lo + self._length(MAX_READ))
        self.last = f"mmap read [{start + lo}, {start + hi}) of a {length}-byte map @ {start}"
        with mmap.mmap(self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=start) as m:
            got = m[lo:hi]
        want = bytes(self.model[start + lo : start + hi])
        if got != want:
            self.fail(f"mmap read mismatch: {describe(got, want, start + lo)}")

    def mmap_write(self) -> None:
        window = self._window()
        if window is None:
            return self.pwrite()
        start, length = window
        lo = self.rng.randint(0, length - 1)
        hi = min(length, lo + self._length(MAX_WRITE // 4))
        data = self.rng.randbytes(hi - lo)
        self.last = f"mmap write [{start + lo}, {start + hi}) of a {length}-byte map @ {start}"
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        with mmap.mmap(self.fd, length, mmap.MAP_SHARED, prot, offset=start) as m:
            m[lo:hi] = data
            m.flush()  # msync(MS_SYNC)
        self.model[start + lo : start + hi] = data

    # ------------------------------------------------------------------ checks
    def check_size(self) -> None:
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            self.fail(f"size {size}, model {len(self.model)}")

    def check_all(self, fd: int | None = None, where: str = "") -> None:
        fd = self.fd if fd is None else fd
        got = read_all(fd, len(self.model) + 4096)
        if got != self.model:
            self.fail(f"whole file{where}: {describe(got, bytes(self.model), 0)}")

    def run(self, ops: int) -> None:
        choices = [self.pwrite, self.pread, self.mmap_read, self.mmap_write, self.ftruncate]
        weights = [44, 44, 5, 3, 2]
        for self.step in range(ops):
            op = self.rng.choices(choices, weights)[0]
            self.counts[op.__name__] = self.counts.get(op.__name__, 0) + 1
            size_before = len(self.model)
            t0 = time.perf_counter()
            op()
            t1 = time.perf_counter()
            # reads check their bytes (and EOF) themselves; the size is asked for (an MRC
            # round trip) whenever the model's size changed, and every SIZE_CHECK steps
            if len(self.model) != size_before or self.step % SIZE_CHECK == 0:
                self.check_size()
            self.seconds[op.__name__] = self.seconds.get(op.__name__, 0.0) + t1 - t0
            self.seconds["fstat"] = self.seconds.get("fstat", 0.0) + time.perf_counter() - t1
            if self.step % FULL_CHECK == FULL_CHECK - 1:
                self.last = "periodic whole-file check"
                self.check_all()


def read_all(fd: int, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit:
        chunk = os.pread(fd, min(MiB, limit - len(out)), len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def describe(got: bytes, want: bytes, base: int) -> str:
    head = "same length" if len(got) == len(want) else f"length {len(got)}, expected {len(want)}"
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"{head}; first difference at file offset {base + i}: {a:#x} != {b:#x}"
    return head


def exercise(grid: Grid, remote: Path, other_mount: Path, seed: int) -> None:
    """One seed on its own file: the random run, then the checks after close."""
    path = remote / f"file-{seed}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    ex = Exerciser(seed, fd, random.Random(seed))
    began = time.monotonic()
    try:
        ex.run(OPS)
        ex.last = "final whole-file check"
        ex.check_all()
    except OSError as e:
        # a mount that failed may still be flushing: let it finish writing its log
        deadline = time.monotonic() + 45
        while grid.pid("mount") is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        ex.fail(f"{e!r}\n{grid.logs(80)}")
    finally:
        os.close(fd)
    elapsed = time.monotonic() - began
    print(f"seed {seed}: {OPS} operations in {elapsed:.1f} s ({ex.counts})")
    print("seconds by operation:", {k: round(v, 1) for k, v in ex.seconds.items()})

    ex.last = "after close and reopen"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size == len(ex.model), ex.last
        ex.check_all(fd, " after reopen")
    finally:
        os.close(fd)

    ex.last = "from the other mount after close"
    other = other_mount / path.relative_to(grid.mnt)
    fd = os.open(other, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != len(ex.model):
            ex.fail(f"other mount sees size {os.fstat(fd).st_size}, model {len(ex.model)}")
        ex.check_all(fd, " from the other mount")
    finally:
        os.close(fd)
    path.unlink()


@pytest.mark.timeout(400)
@pytest.mark.parametrize("seeds", SEED_GROUPS, ids=lambda g: "+".join(map(str, g)))
def test_exerciser(
    grid: Grid, workdirs: Workdirs, other_mount: Path, seeds: tuple[int, ...]
) -> None:
    """The seeds of a group run at once, each on its own file (in threads: the mount
    serves them concurrently, which is also what jobs do)."""
    remote, _ = workdirs.pair("exerciser")
    # POSIX semantics on an unreplicated file: replication has tests of its own
    # (tests/system/test_replication.py). One run of the whole suite hung here on an rw
    # file (a FUSE read never answered); that is under investigation, see issue 5's note.
    # XFS_EXERCISER_REPLICATION=rw runs it on the home volume's rw factor 3 instead.
    replication = os.environ.get("XFS_EXERCISER_REPLICATION", "none")
    os.setxattr(remote, "xfs.policy", json.dumps({"replication": replication}).encode())
    failures: dict[int, BaseException] = {}

    def run(seed: int) -> None:
        try:
            exercise(grid, remote, other_mount, seed)
        except BaseException as e:  # re-raised in the test's thread
            failures[seed] = e

    threads = [threading.Thread(target=run, args=(seed,), daemon=True) for seed in seeds]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + GROUP_DEADLINE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), (
        f"seeds {seeds}: an exerciser hung for over {GROUP_DEADLINE:g} s\n{grid.logs(80)}"
    )
    for seed in seeds:
        if seed in failures:
            raise failures[seed]
