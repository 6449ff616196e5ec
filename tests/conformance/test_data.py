"""File data semantics on the real mount: sparse and huge files, fallocate, SEEK_DATA and
SEEK_HOLE, statfs, st_blocks and st_blksize (du, cp), O_TRUNC, O_CREAT|O_EXCL races and
close-to-open visibility between two mounts, mmap, executing binaries, bulk data."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.system.grid import Grid, Workdirs, run

pytestmark = [pytest.mark.fuse]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself (glibc does not emulate it, unlike posix_fallocate)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def in_other(grid: Grid, other_mount: Path, path: Path) -> Path:
    return other_mount / path.relative_to(grid.mnt)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- sparse
def test_sparse_beyond_4gib(workdirs: Workdirs) -> None:
    remote, _ = workdirs.pair("sparse")
    path = remote / "huge"
    marks = {(1 << 32) + 5: b"past 4 GiB", (1 << 33) + 4093: b"past 8 GiB", 7: b"start"}
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off, data in marks.items():
            assert os.pwrite(fd, data, off) == len(data)
        end = (1 << 33) + 4093 + len(b"past 8 GiB")
        assert os.fstat(fd).st_size == end
        for off, data in marks.items():
            assert os.pread(fd, len(data), off) == data
        for hole in (4096, MiB, (1 << 32) - 100, (1 << 32) + 4096, 6 * GiB, (1 << 33) - 1):
            assert os.pread(fd, 64, hole) == bytes(64), hole
        assert os.pread(fd, 100, end) == b""
    finally:
        os.close(fd)
    s = path.stat()
    assert s.st_size == end
    assert s.st_blocks * 512 < 64 * MiB, f"st_blocks {s.st_blocks} for a sparse file"
    with open(path, "rb") as f:
        assert f.read(12) == bytes(7) + b"start"
    path.unlink()


# ----------------------------------------------------------------------------- fallocate
def test_posix_fallocate(workdirs: Workdirs) -> None:
    """glibc emulates posix_fallocate by writing where fallocate(2) is unsupported."""
    remote, _ = workdirs.pair("falloc")
    path = remote / "f"
    write_file(path, b"x" * 1000)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 500, 3 * MiB)
        assert os.fstat(fd).st_size == 500 + 3 * MiB
        assert os.pread(fd, 1000, 0) == b"x" * 1000
        assert os.pread(fd, 4096, 2 * MiB) == bytes(4096)
        os.posix_fallocate(fd, 0, 10)  # inside the file: no change
        assert os.fstat(fd).st_size == 500 + 3 * MiB
        assert os.pread(fd, 1000, 0) == b"x" * 1000
    finally:
        os.close(fd)


def test_fallocate_syscall(workdirs: Workdirs) -> None:
    """fallocate(2): mode 0 grows the file, KEEP_SIZE does not, PUNCH_HOLE|KEEP_SIZE and
    ZERO_RANGE read back as zeros, modes xfs does not offer are a clean EOPNOTSUPP."""
    remote, _ = workdirs.pair("fallocate")
    path = remote / "f"
    data = os.urandom(2 * MiB + 77)
    write_file(path, data)
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, 0, 2 * MiB, MiB)
        assert os.fstat(fd).st_size == 3 * MiB
        assert os.pread(fd, MiB, 2 * MiB) == data[2 * MiB :] + bytes(MiB - 77)
        assert os.pread(fd, len(data), 0) == data
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 3 * MiB, MiB)
        assert os.fstat(fd).st_size == 3 * MiB
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB - 100, 200)
        want = data[: MiB - 100] + bytes(200) + data[MiB + 100 :]
        assert os.pread(fd, len(data), 0) == want
        assert os.fstat(fd).st_size == 3 * MiB
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 10, 20)
        want = want[:10] + bytes(20) + want[30:]
        assert os.pread(fd, len(data), 0) == want
        for mode in (FALLOC_FL_PUNCH_HOLE, FALLOC_FL_COLLAPSE_RANGE):
            with pytest.raises(OSError) as info:
                fallocate(fd, mode, 0, 4096)
            assert info.value.errno == errno.EOPNOTSUPP
        assert os.pread(fd, len(data), 0) == want
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- lseek
def test_seek_data_and_hole(workdirs: Workdirs) -> None:
    """The generic rule (no lseek operation in the file system): the whole file is data."""
    remote, _ = workdirs.pair("seek")
    path = remote / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as e:
            os.lseek(fd, 0, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO  # empty file: no data at all
        os.pwrite(fd, b"tail", 3 * MiB)
        size = 3 * MiB + 4
        for off in (0, 1, MiB, 3 * MiB, size - 1):
            data = os.lseek(fd, off, os.SEEK_DATA)
            hole = os.lseek(fd, off, os.SEEK_HOLE)
            # POSIX: data at or after off, a hole at or after off (EOF is a hole)
            assert off <= data < size and off <= hole <= size
            assert data == off and hole == size  # the generic rule Linux applies
        for off in (size, size + 1, 10 * GiB):
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                with pytest.raises(OSError) as e:
                    os.lseek(fd, off, whence)
                assert e.value.errno == errno.ENXIO
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- statfs
def _osd_data_dirs(grid: Grid) -> list[Path]:
    dirs = sorted(grid.state.glob("osd*/data"))
    assert len(dirs) == 3, dirs
    return dirs


def test_statfs_totals(grid: Grid, workdirs: Workdirs) -> None:
    """The volume's capacity is the sum of its OSDs' file systems (as each OSD reports it)."""
    s = os.statvfs(grid.mnt)
    assert s.f_frsize > 0 and s.f_bsize > 0
    local = [os.statvfs(d) for d in _osd_data_dirs(grid)]
    total = sum(x.f_blocks * x.f_frsize for x in local)
    avail = sum(x.f_bavail * x.f_frsize for x in local)
    assert abs(s.f_blocks * s.f_frsize - total) <= 3 * s.f_frsize
    assert s.f_bfree >= s.f_bavail
    # free space comes with the OSDs' heartbeats, and others share these disks
    assert abs(s.f_bavail * s.f_frsize - avail) <= max(total // 50, 3 * GiB)
    assert s.f_files > 0 and s.f_namemax == 255

    remote, _ = workdirs.pair("statfs")
    path = remote / "big"
    before = s.f_bavail * s.f_frsize
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(96):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    deadline = time.monotonic() + 20
    while True:
        s2 = os.statvfs(grid.mnt)
        used = before - s2.f_bavail * s2.f_frsize
        if used >= 64 * MiB or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    path.unlink()
    assert used >= 64 * MiB, f"free space fell by {used} bytes after writing 96 MiB"


# ----------------------------------------------------------------------------- st_blocks
def _du(path: Path) -> int:
    return int(run(["du", "-B1", str(path)], timeout=30).stdout.split()[0])


def test_blocks_du_and_cp(workdirs: Workdirs) -> None:
    remote, local = workdirs.pair("du")
    dense = remote / "dense"
    data = os.urandom(3 * MiB + 1234)
    write_file(dense, data)
    s = dense.stat()
    assert s.st_blksize >= 4096 and s.st_blksize & (s.st_blksize - 1) == 0
    assert abs(s.st_blocks - len(data) / 512) <= 8, s.st_blocks
    assert len(data) <= _du(dense) <= len(data) + 64 * KiB

    sparse = remote / "sparse"
    with open(sparse, "wb") as f:
        f.write(b"head")
        f.seek(40 * MiB)
        f.write(b"tail")
    size = 40 * MiB + 4
    assert sparse.stat().st_size == size
    assert _du(sparse) < 4 * MiB, "du of a sparse file"
    assert sparse.stat().st_blocks * 512 < 4 * MiB

    for src in (dense, sparse):
        for how, opts in (("plain", []), ("sparse", ["--sparse=always"])):
            for dst in (remote / f"{src.name}-{how}", local / f"{src.name}-{how}"):
                run(["cp", *opts, str(src), str(dst)], timeout=120)
                assert dst.stat().st_size == src.stat().st_size
                assert sha256(dst) == sha256(src), (src, how, dst)
    # a sparse copy made by cp stays sparse on the mount
    assert _du(remote / "sparse-sparse") < 4 * MiB


# ----------------------------------------------------------------------------- O_TRUNC
def test_o_trunc(grid: Grid, workdirs: Workdirs, other_mount: Path) -> None:
    remote, _ = workdirs.pair("trunc")
    path = remote / "f"
    write_file(path, os.urandom(2 * MiB + 5))
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.pwrite(fd, b"new", 10)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(10) + b"new"
    assert in_other(grid, other_mount, path).read_bytes() == bytes(10) + b"new"
    # O_TRUNC on the other mount, read back here
    fd = os.open(in_other(grid, other_mount, path), os.O_RDWR | os.O_TRUNC)
    os.close(fd)
    assert path.read_bytes() == b""
    assert path.stat().st_size == 0


# ----------------------------------------------------------------------------- O_EXCL
EXCL_SCRIPT = r"""
import errno, os, sys, time
root, tag, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
while time.time() < start:
    pass
out = []
for i in range(rounds):
    try:
        fd = os.open(os.path.join(root, f"n{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        out.append("EEXIST" if e.errno == errno.EEXIST else f"errno {e.errno}")
    else:
        os.write(fd, tag.encode())
        os.close(fd)
        out.append("won")
print(" ".join(out))
"""


def test_o_excl_race_between_mounts(grid: Grid, workdirs: Workdirs, other_mount: Path) -> None:
    remote, _ = workdirs.pair("excl")
    rounds = 60
    start = time.time() + 1.5
    procs = {
        tag: subprocess.Popen(
            [sys.executable, "-c", EXCL_SCRIPT, str(root), tag, str(start), str(rounds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        for tag, root in (("a", remote), ("b", in_other(grid, other_mount, remote)))
    }
    results = {}
    try:
        for tag, p in procs.items():
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results[tag] = out.split()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
    wins = {"a": 0, "b": 0}
    for i in range(rounds):
        outcome = {tag: results[tag][i] for tag in results}
        assert sorted(outcome.values()) == ["EEXIST", "won"], (i, outcome)
        winner = next(t for t, o in outcome.items() if o == "won")
        wins[winner] += 1
        assert (remote / f"n{i}").read_bytes() == winner.encode()
    print("wins", wins)


# ----------------------------------------------------------------------------- close-to-open
def test_close_to_open(grid: Grid, workdirs: Workdirs, other_mount: Path) -> None:
    remote, _ = workdirs.pair("cto")
    path = remote / "f"
    other = in_other(grid, other_mount, path)
    for round_, size in enumerate((1, 5000, MiB + 3, 3 * MiB + 100, 20)):
        data = os.urandom(size)
        began = time.time_ns()
        with open(path, "wb") as f:
            f.write(data)
        mine = path.stat()
        with open(other, "rb") as f:
            st = os.fstat(f.fileno())
            assert f.read() == data, round_
        assert st.st_size == size, round_
        assert st.st_mtime_ns == mine.st_mtime_ns, round_
        assert st.st_mtime_ns >= began - 2_000_000_000, round_
        # and back: written on the other mount, read here
        back = os.urandom(size // 2 + 1)
        with open(other, "r+b") as f:
            f.write(back)
        with open(path, "rb") as f:
            assert f.read() == back + data[len(back) :], round_


# ----------------------------------------------------------------------------- mmap
def test_mmap_reads_what_the_other_mount_wrote(
    grid: Grid, workdirs: Workdirs, other_mount: Path
) -> None:
    remote, _ = workdirs.pair("mmap-read")
    path = remote / "f"
    write_file(path, b"a" * (2 * MiB))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[MiB - 2 : MiB + 2] == b"aaaa"
    data = os.urandom(2 * MiB + 10)
    write_file(in_other(grid, other_mount, path), data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert len(m) == len(data)
        assert m[:] == data


def test_mmap_write_seen_by_other_mount(grid: Grid, workdirs: Workdirs, other_mount: Path) -> None:
    remote, _ = workdirs.pair("mmap-write")
    path = remote / "f"
    data = bytearray(os.urandom(3 * MiB))
    write_file(path, bytes(data))
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, len(data), mmap.MAP_SHARED) as m:
            for off in (0, MiB - 3, 2 * MiB + 4096, len(data) - 5):
                m[off : off + 5] = b"MMAP!"
                data[off : off + 5] = b"MMAP!"
            m.flush()
    finally:
        os.close(fd)
    assert in_other(grid, other_mount, path).read_bytes() == bytes(data)
    assert path.read_bytes() == bytes(data)


# ----------------------------------------------------------------------------- exec
def test_execute_binaries(workdirs: Workdirs) -> None:
    remote, _ = workdirs.pair("exec")
    true = remote / "true"
    shutil.copyfile(shutil.which("true") or "/bin/true", true)
    true.chmod(0o755)
    assert run([str(true)], timeout=30).returncode == 0
    false = remote / "false"
    shutil.copyfile(shutil.which("false") or "/bin/false", false)
    false.chmod(0o755)
    assert run([str(false)], timeout=30, check=False).returncode == 1
    script = remote / "hello.sh"
    script.write_text("#!/bin/sh\necho \"hello $1\"\nexit 3\n")
    script.chmod(0o755)
    proc = run([str(script), "grid"], timeout=30, check=False)
    assert (proc.returncode, proc.stdout) == (3, "hello grid\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError):
        subprocess.run([str(script)], timeout=30, check=False, stdin=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- bulk
def test_large_sequential(grid: Grid, workdirs: Workdirs, other_mount: Path) -> None:
    remote, _ = workdirs.pair("bulk")
    path = remote / "big"
    h = hashlib.sha256()
    block = os.urandom(MiB)
    began = time.monotonic()
    with open(path, "wb") as f:
        for i in range(64):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    written = time.monotonic()
    assert path.stat().st_size == 64 * MiB
    assert sha256(path) == h.hexdigest()
    read = time.monotonic()
    assert sha256(in_other(grid, other_mount, path)) == h.hexdigest()
    print(f"64 MiB: write {written - began:.1f} s, read {read - written:.1f} s")
    path.unlink()


def test_fsync_of_a_read_only_descriptor(workdirs: Workdirs) -> None:
    """fsync(2) and fdatasync(2) work on any open descriptor, read-only ones included
    (ext4 gives 0; the mount gave EACCES: the read XCap may not sync on the OSDs)."""
    for d in workdirs.pair("fsync-ro"):
        path = d / "f"
        path.write_bytes(b"data")
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.fdatasync(fd)
            assert os.read(fd, 10) == b"data"
        finally:
            os.close(fd)
