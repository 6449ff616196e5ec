"""Two clients of one volume: locks, appends, open-but-unlinked files, exclusive creates.

``grid.mnt`` and ``other_mount`` are two mounts of the same volume by two client
processes, as two grid nodes would have. Locks and O_APPEND are checked across them with
helper processes (``python -c``), because POSIX locks belong to processes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.system.grid import Grid

DEADLINE = 60.0
# a dead client's lease ends after 10 s, not the embedded grid's 30 s (the mounts renew
# every third of it): test_locks_of_a_dead_client_end_with_its_lease waits for it
GRID_SETTINGS = ["mrc.client_lease=10"]


def spawn(code: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    """A helper process running ``code`` (argv[1:] are ``args``); with ``stdin`` it
    can be told when to go on."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = DEADLINE) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, f"helper exited {proc.returncode}: {err}"
    return out


def wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = DEADLINE) -> None:
    """Wait for the helper to print ``expected`` (it is holding its lock then)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"helper exited early: {proc.stderr and proc.stderr.read()}")
    raise AssertionError(f"helper did not say {expected!r} in time")


# A process that takes a lock on argv[1] (argv[2] "w" or "r", bytes argv[3] + argv[4]),
# prints "locked" once it holds it, then sleeps argv[5] seconds (default: until killed).
HOLD_FCNTL = """
    import fcntl, os, struct, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    kind = fcntl.F_WRLCK if sys.argv[2] == "w" else fcntl.F_RDLCK
    start, length = int(sys.argv[3]), int(sys.argv[4])
    fcntl.fcntl(fd, fcntl.F_SETLKW, struct.pack("hhqqi", kind, 0, start, length, 0))
    print("locked", flush=True)
    time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 3600)
"""

HOLD_FLOCK = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(3600)
"""

FLOCK_FMT = "hhqqi"  # struct flock on x86_64: type, whence, start, len, pid


def try_lock(path: Path, kind: int, start: int = 0, length: int = 0) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(FLOCK_FMT, kind, 0, start, length, 0))
        return True
    except OSError as e:
        assert e.errno in (11, 13), e  # EAGAIN / EACCES
        return False
    finally:
        os.close(fd)


def get_lock(path: Path, kind: int, start: int = 0, length: int = 0) -> tuple[int, int, int]:
    """F_GETLK: (type, start, len) of the lock in the way (type F_UNLCK if none)."""
    fd = os.open(path, os.O_RDWR)
    try:
        raw = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(FLOCK_FMT, kind, 0, start, length, 0))
    finally:
        os.close(fd)
    type_, _, lstart, llen, _ = struct.unpack(FLOCK_FMT, raw)
    return type_, lstart, llen


@pytest.fixture
def shared(grid: Grid, other_mount: Path, tmp_path: Path) -> tuple[Path, Path]:
    """One fresh file, by its path in each mount."""
    name = f"shared-{tmp_path.name}"
    (grid.mnt / name).write_bytes(b"x" * 4096)
    return grid.mnt / name, other_mount / name


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=DEADLINE)


# ------------------------------------------------------------------------- fcntl locks
def test_a_write_lock_on_one_mount_stops_the_other(shared: tuple[Path, Path]) -> None:
    a, b = shared
    holder = spawn(HOLD_FCNTL, str(a), "w", "0", "100")
    try:
        wait_line(holder, "locked")
        assert not try_lock(b, fcntl.F_WRLCK, 50, 10)
        assert not try_lock(b, fcntl.F_RDLCK, 0, 1)
        assert try_lock(b, fcntl.F_WRLCK, 100, 10)  # beyond the held range
        type_, start, length = get_lock(b, fcntl.F_WRLCK, 0, 0)
        assert (type_, start, length) == (fcntl.F_WRLCK, 0, 100)
        assert get_lock(b, fcntl.F_WRLCK, 200, 10)[0] == fcntl.F_UNLCK
    finally:
        kill(holder)


def test_read_locks_share_write_locks_do_not(shared: tuple[Path, Path]) -> None:
    a, b = shared
    holder = spawn(HOLD_FCNTL, str(a), "r", "0", "0")
    try:
        wait_line(holder, "locked")
        assert try_lock(b, fcntl.F_RDLCK)
        assert not try_lock(b, fcntl.F_WRLCK, 4000, 1)
    finally:
        kill(holder)


def test_exit_of_the_holder_releases_its_locks(shared: tuple[Path, Path]) -> None:
    a, b = shared
    holder = spawn(HOLD_FCNTL, str(a), "w", "0", "0")
    try:
        wait_line(holder, "locked")
        assert not try_lock(b, fcntl.F_WRLCK)
    finally:
        kill(holder)  # SIGKILL: the kernel closes its files
    deadline = time.monotonic() + 10
    while not try_lock(b, fcntl.F_WRLCK):
        assert time.monotonic() < deadline, "the lock of a killed process stayed"
        time.sleep(0.1)


def test_closing_any_descriptor_releases_the_process_locks(shared: tuple[Path, Path]) -> None:
    a, b = shared
    code = """
        import fcntl, os, struct, sys, time
        fd1 = os.open(sys.argv[1], os.O_RDWR)
        fd2 = os.open(sys.argv[1], os.O_RDONLY)
        fcntl.fcntl(fd1, fcntl.F_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        print("locked", flush=True)
        sys.stdin.readline()  # the test checked that the lock holds
        os.close(fd2)  # POSIX: any close of the file drops the process's locks
        print("closed", flush=True)
        time.sleep(3600)
    """
    holder = spawn(code, str(a), stdin=True)
    try:
        wait_line(holder, "locked")
        assert not try_lock(b, fcntl.F_WRLCK)
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        wait_line(holder, "closed")
        assert try_lock(b, fcntl.F_WRLCK)
    finally:
        kill(holder)


def test_setlkw_waits_for_the_other_mount(shared: tuple[Path, Path]) -> None:
    a, b = shared
    holder = spawn(HOLD_FCNTL, str(a), "w", "0", "0", "2.0")
    try:
        wait_line(holder, "locked")
        started = time.monotonic()
        waiter = spawn(HOLD_FCNTL, str(b), "w", "0", "0", "0")
        wait_line(waiter, "locked")  # granted only once the holder exits
        waited = time.monotonic() - started
        assert waited > 1.0, f"F_SETLKW returned after {waited:.2f}s while the lock was held"
        finish(waiter)
    finally:
        kill(holder)


def test_ofd_locks_conflict_across_mounts(shared: tuple[Path, Path]) -> None:
    a, b = shared
    f_ofd_setlk = 37
    fd_a = os.open(a, os.O_RDWR)
    fd_b = os.open(b, os.O_RDWR)
    try:
        fcntl.fcntl(fd_a, f_ofd_setlk, struct.pack(FLOCK_FMT, fcntl.F_WRLCK, 0, 0, 10, 0))
        with pytest.raises(OSError) as info:
            fcntl.fcntl(fd_b, f_ofd_setlk, struct.pack(FLOCK_FMT, fcntl.F_WRLCK, 0, 5, 10, 0))
        assert info.value.errno == 11
        os.close(fd_a)  # the open file description goes: its OFD lock with it
        fd_a = -1
        deadline = time.monotonic() + 10
        while True:
            try:
                fcntl.fcntl(fd_b, f_ofd_setlk, struct.pack(FLOCK_FMT, fcntl.F_WRLCK, 0, 5, 10, 0))
                break
            except OSError:
                assert time.monotonic() < deadline, "OFD lock outlived its file"
                time.sleep(0.1)
    finally:
        if fd_a >= 0:
            os.close(fd_a)
        os.close(fd_b)


# ------------------------------------------------------------------------- flock
def test_flock_is_seen_by_the_other_mount(shared: tuple[Path, Path]) -> None:
    a, b = shared
    holder = spawn(HOLD_FLOCK, str(a))
    try:
        wait_line(holder, "locked")
        fd = os.open(b, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            # flock and fcntl locks are independent, as on Linux
            assert try_lock(b, fcntl.F_WRLCK)
        finally:
            os.close(fd)
    finally:
        kill(holder)
    fd = os.open(b, os.O_RDWR)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "flock of a killed process stayed"
                time.sleep(0.1)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------- O_APPEND
APPENDER = """
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    tag = sys.argv[2].encode()
    for i in range(int(sys.argv[3])):
        record = tag + b":%06d:" % i + tag * 20 + b"\\n"
        assert os.write(fd, record) == len(record)
    os.close(fd)
"""


def test_appends_from_two_mounts_stay_whole(grid: Grid, other_mount: Path) -> None:
    name = f"log-{time.monotonic_ns()}"
    (grid.mnt / name).write_bytes(b"")
    count = 150
    writers = [
        spawn(APPENDER, str(grid.mnt / name), "A", str(count)),
        spawn(APPENDER, str(other_mount / name), "B", str(count)),
        spawn(APPENDER, str(grid.mnt / name), "C", str(count)),
    ]
    for w in writers:
        finish(w)
    lines = (other_mount / name).read_bytes().splitlines()
    assert len(lines) == 3 * count
    seen: dict[bytes, list[int]] = {b"A": [], b"B": [], b"C": []}
    for line in lines:
        tag, number, body = line.split(b":")
        assert body == tag * 20, f"torn record {line!r}"
        seen[tag].append(int(number))
    for tag, numbers in seen.items():
        assert numbers == list(range(count)), f"records of {tag!r} lost or reordered"


# ------------------------------------------------------------------------- unlinked files
# Appends argv[3] records tagged argv[2] to argv[1] (O_APPEND), says "appended", waits
# for a line on stdin, appends argv[3] more (numbered on), closes.
APPEND_TWICE = """
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    tag, count = sys.argv[2].encode(), int(sys.argv[3])
    def records(first):
        for i in range(first, first + count):
            record = tag + b":%06d:" % i + tag * 20 + b"\\n"
            assert os.write(fd, record) == len(record)
    records(0)
    print("appended", flush=True)
    sys.stdin.readline()
    records(count)
    os.close(fd)
"""


def test_append_lease_is_given_back_when_another_mount_appends(
    grid: Grid, other_mount: Path
) -> None:
    """The only writer of a file appends under its append lease, without asking the MRC
    per write. Another mount's append recalls the lease: the holder reports its appends
    first, so the other mount's records land after them, and the holder's later ones
    after those; nothing overlaps and nothing is lost (docs/design/leases.md, "Append leases")."""
    name = f"leased-{time.monotonic_ns()}"
    (grid.mnt / name).write_bytes(b"")
    count = 200
    holder = spawn(APPEND_TWICE, str(grid.mnt / name), "A", str(count), stdin=True)
    try:
        wait_line(holder, "appended")  # 200 records, the file still open: not reported
        ino = (grid.mnt / name).stat().st_ino
        assert lease_holders(grid, ino) == 1
        with open(other_mount / name, "ab") as f:
            f.write(b"B:000000:" + b"B" * 20 + b"\n")
        seen = (other_mount / name).read_bytes().splitlines()
        assert len(seen) == count + 1 and seen[-1].startswith(b"B:")  # reported first
        assert holder.stdin is not None
        holder.stdin.write("go on\n")
        holder.stdin.flush()
        finish(holder)
    finally:
        kill(holder)
    deadline = time.monotonic() + 10  # (a last close reaches the MRC a moment later)
    while lease_holders(grid, ino):  # a lease ends with the holder's close
        assert time.monotonic() < deadline, "the append lease outlived the close"
        time.sleep(0.1)
    lines = (other_mount / name).read_bytes().splitlines()
    tags = [line.split(b":")[0] for line in lines]
    assert tags == [b"A"] * count + [b"B"] + [b"A"] * count
    numbers = [int(line.split(b":")[1]) for line in lines if line.startswith(b"A")]
    assert numbers == list(range(2 * count))
    assert all(line.split(b":")[2] == line[:1] * 20 for line in lines), "torn record"


def test_truncate_by_the_lease_holder_moves_its_end(grid: Grid) -> None:
    """The holder's own ftruncate gives the lease back first; its next append lands at
    the new end, as on a local file system."""
    path = grid.mnt / f"trunc-{time.monotonic_ns()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(3):
            os.write(fd, b"x" * 1000)
        os.ftruncate(fd, 10)
        os.write(fd, b"end")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 10 + b"end"


def test_an_unlinked_open_file_stays_usable_on_both_mounts(
    grid: Grid, other_mount: Path
) -> None:
    name = f"tmp-{time.monotonic_ns()}"
    data = os.urandom(3 * 1024 * 1024 + 17)  # over all three OSDs
    with open(grid.mnt / name, "wb") as f:
        f.write(data)
    fd = os.open(other_mount / name, os.O_RDWR)
    here = os.open(grid.mnt / name, os.O_RDONLY)
    try:
        os.unlink(grid.mnt / name)  # by the first client, while both have it open
        assert not (grid.mnt / name).exists()
        assert os.fstat(here).st_nlink == 0
        assert os.pread(here, 100, 0) == data[:100]
        os.close(here)
        assert os.pread(fd, len(data), 0) == data
        os.pwrite(fd, b"still here", 1000)
        os.fsync(fd)
        expected = data[:1000] + b"still here" + data[1010:]
        assert os.pread(fd, len(data), 0) == expected
        assert orphans(grid) == 1, "the MRC did not keep the open file"
    finally:
        os.close(fd)
    deadline = time.monotonic() + 30
    while orphans(grid) or grid.status()["pending_deletions"]:
        assert time.monotonic() < deadline, "the file was not freed after its last close"
        time.sleep(0.2)


def orphans(grid: Grid) -> int:
    """Inodes the MRC keeps without a name (read from its store, read-only)."""
    return int(grid.store_rows("SELECT count(*) FROM inodes WHERE nlink = 0")[0][0])


def lease_holders(grid: Grid, ino: int) -> int:
    """Clients holding the inode's append lease (read from the MRC's store, read-only)."""
    query = "SELECT count(*) FROM opens WHERE ino = ? AND append_lease = 1"
    return int(grid.store_rows(query, (ino,))[0][0])


# ------------------------------------------------------------------------- exclusive create
CREATOR = """
    import os, sys, time
    start = float(sys.argv[3])
    while time.time() < start:
        pass
    for i in range(int(sys.argv[2])):
        try:
            os.close(os.open(f"{sys.argv[1]}/race-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            print(i, flush=True)
        except FileExistsError:
            pass
"""


def test_exclusive_creates_have_one_winner(grid: Grid, other_mount: Path) -> None:
    d = f"excl-{time.monotonic_ns()}"
    (grid.mnt / d).mkdir()
    rounds = 40
    start = str(time.time() + 1.0)
    racers = [
        spawn(CREATOR, str(grid.mnt / d), str(rounds), start),
        spawn(CREATOR, str(other_mount / d), str(rounds), start),
    ]
    won = [set(map(int, finish(r).split())) for r in racers]
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == set(range(rounds))


# ------------------------------------------------------------------------- directory leases
def dir_leases(grid: Grid, ino: int) -> int:
    """Clients holding the directory's lease (read from the MRC's store, read-only)."""
    query = "SELECT count(*) FROM dir_leases WHERE ino = ?"
    return int(grid.store_rows(query, (ino,))[0][0])


def leased_dir(grid: Grid, name: str) -> Path:
    """A directory made through the first mount, once that mount holds its lease."""
    d = grid.mnt / name
    d.mkdir()
    deadline = time.monotonic() + 10  # (asked for right after the mkdir, in the background)
    while not dir_leases(grid, d.stat().st_ino):
        assert time.monotonic() < deadline, "the mount did not take the directory's lease"
        time.sleep(0.05)
    return d


def test_creates_under_a_directory_lease_are_seen_by_the_other_mount(
    grid: Grid, other_mount: Path
) -> None:
    """The first mount creates files in its leased directory without waiting for the
    MRC; the other mount's listing recalls the lease, so it sees every one of them, with
    the attributes the first mount gave them (docs/design/leases.md, "Directory
    leases"). Afterwards the first mount's creates ask the MRC, and a name the other
    mount took is refused to it."""
    name = f"leased-dir-{time.monotonic_ns()}"
    d = leased_dir(grid, name)
    names = [f"f{i:04d}" for i in range(300)]
    old = os.umask(0o027)
    try:
        for n in names:
            os.close(os.open(d / n, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        here = {n: os.stat(d / n) for n in names[:5]}
    finally:
        os.umask(old)
    assert sorted(os.listdir(other_mount / name)) == names  # the recall landed them all
    assert dir_leases(grid, d.stat().st_ino) == 0
    for n, st in here.items():
        there = os.stat(other_mount / name / n)
        assert (there.st_ino, there.st_mode, there.st_uid, there.st_gid, there.st_size) == (
            st.st_ino, st.st_mode, st.st_uid, st.st_gid, 0
        )
        assert st.st_mode == 0o100640
        assert abs(there.st_mtime_ns - st.st_mtime_ns) < 5 * 10**9
    (other_mount / name / "theirs").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        os.open(d / "theirs", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    (d / "late").write_bytes(b"after the recall")
    assert (other_mount / name / "late").read_bytes() == b"after the recall"


def test_a_name_the_other_mount_made_in_a_leased_directory_is_seen_at_once(
    grid: Grid, other_mount: Path
) -> None:
    """The first mount made the directory and knows it is empty; the other mount's
    create there recalls the lease, and with it the first mount stops answering lookups
    from what it knew: the new name is there at once, not after the listing's window
    (a job's checkpoint written by a worker node, read by the user who made the
    directory)."""
    name = f"recalled-{time.monotonic_ns()}"
    d = leased_dir(grid, name)
    (other_mount / name / "theirs").write_bytes(b"from the other node")
    assert (d / "theirs").read_bytes() == b"from the other node"
    os.mkdir(other_mount / name / "sub")
    assert (d / "sub").is_dir()


def test_a_file_created_under_a_lease_is_written_and_read_at_once(
    grid: Grid, other_mount: Path
) -> None:
    """Data written to a file whose create is still queued waits for its layout, then
    goes to the OSDs; close-to-open, the other mount reads it whole."""
    name = f"leased-data-{time.monotonic_ns()}"
    d = leased_dir(grid, name)
    blobs = {f"b{i}": os.urandom(i * 700_001 % 3_000_000 + 1) for i in range(6)}
    for n, blob in blobs.items():
        with open(d / n, "wb") as f:
            f.write(blob)
            if n == "b0":
                os.fsync(f.fileno())
    for n, blob in blobs.items():
        assert (other_mount / name / n).read_bytes() == blob
    for n in blobs:  # and removed through the first mount, as anywhere else
        os.unlink(d / n)
    assert os.listdir(other_mount / name) == []
    os.rmdir(d)


def test_removing_a_leased_directory_sees_its_queued_creates(grid: Grid) -> None:
    d = leased_dir(grid, f"leased-rm-{time.monotonic_ns()}")
    for i in range(50):
        os.close(os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    with pytest.raises(OSError) as refused:
        os.rmdir(d)
    assert refused.value.errno == errno.ENOTEMPTY
    assert len(os.listdir(d)) == 50


def test_a_lease_is_taken_on_a_busy_directory_made_elsewhere(
    grid: Grid, other_mount: Path
) -> None:
    """A directory the other mount made: after a few creates through the MRC the first
    mount leases it, reads its names, and creates and unlinks there without waiting for
    the MRC; the other mount sees exactly the result."""
    name = f"adopted-{time.monotonic_ns()}"
    (other_mount / name).mkdir()
    (other_mount / name / "before").write_bytes(b"old")
    d = grid.mnt / name
    ino = d.stat().st_ino
    made = []
    deadline = time.monotonic() + 30
    while not dir_leases(grid, ino):
        assert time.monotonic() < deadline, "the mount did not lease the busy directory"
        made.append(f"f{len(made):04d}")
        os.close(os.open(d / made[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        time.sleep(0.01)
    for _ in range(200):  # now under the lease
        made.append(f"f{len(made):04d}")
        os.close(os.open(d / made[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    for n in made[::2]:
        os.unlink(d / n)
    with pytest.raises(FileExistsError):  # its names were read: "before" is known
        os.open(d / "before", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert sorted(os.listdir(other_mount / name)) == sorted(["before", *made[1::2]])
    assert dir_leases(grid, ino) == 0  # the listing recalled it
    assert (d / "before").read_bytes() == b"old"


# ------------------------------------------------------------------------- a client dies
@pytest.mark.timeout(180)
def test_locks_of_a_dead_client_end_with_its_lease(grid: Grid, tmp_path: Path) -> None:
    """SIGKILL of a whole mount process: its lease is not renewed, so the MRC releases
    its locks (``client_lease``: 10 s in this module's grid, ``GRID_SETTINGS``) and the
    file stays usable."""
    third = grid.extra_mount("dying")
    name = f"lease-{tmp_path.name}"
    (grid.mnt / name).write_bytes(b"y" * 100)
    holder = spawn(HOLD_FCNTL, str(third / name), "w", "0", "0")
    try:
        wait_line(holder, "locked")
        assert not try_lock(grid.mnt / name, fcntl.F_WRLCK)
        mount_pid = int((grid.state / "run" / "mount-dying.pid").read_text())
        os.kill(mount_pid, signal.SIGKILL)
        killed = time.monotonic()
        while not try_lock(grid.mnt / name, fcntl.F_WRLCK):
            assert time.monotonic() - killed < 90, "the dead client's lock never ended"
            time.sleep(0.5)
        assert time.monotonic() - killed > 5, "released before the lease could have expired"
    finally:
        kill(holder)
        subprocess.run(["fusermount3", "-u", "-z", str(third)], timeout=30, check=False)
