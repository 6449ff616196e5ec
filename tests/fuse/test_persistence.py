"""Files written through the mount come back byte-identical after an unmount and mount,
after a restart of the MRC and the OSDs; a width-3 directory really stripes, and the home
volume's default policy (rw, factor 3) really keeps a whole copy on every OSD."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import time
from pathlib import Path

import pytest

from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system]

MiB = 1 << 20
SIZES = {
    "empty": 0,
    "one": 1,
    "mib-minus-1": MiB - 1,
    "mib": MiB,
    "mib-plus-1": MiB + 1,
    "3mib-plus-5": 3 * MiB + 5,
    "big": 20 * MiB + 12345,
}
SPARSE_HEAD = b"head of a sparse file"
SPARSE_AT = 5 * MiB + 17  # objects 1..4 are never written
SPARSE_TAIL = b"tail after the hole"
SPARSE_SIZE = SPARSE_AT + len(SPARSE_TAIL) + 3 * MiB  # a hole at the end too (truncate)
OBJECT_HEADER = struct.Struct(">4sHHII")


def payload(name: str, size: int) -> bytes:
    return random.Random(f"xfs-{name}").randbytes(size)


def write_files(d: Path) -> dict[str, str]:
    """Write every test file into ``d``; returns name -> sha256."""
    hashes = {}
    for name, size in SIZES.items():
        data = payload(name, size)
        with open(d / name, "wb") as f:
            # unaligned pieces, so the client has to gather them per object
            for start in range(0, size, 777_777):
                f.write(data[start : start + 777_777])
        hashes[name] = hashlib.sha256(data).hexdigest()
    with open(d / "sparse", "wb") as f:
        f.write(SPARSE_HEAD)
        f.seek(SPARSE_AT)
        f.write(SPARSE_TAIL)
        f.truncate(SPARSE_SIZE)
    hashes["sparse"] = hashlib.sha256(sparse_expected()).hexdigest()
    return hashes


def sparse_expected() -> bytes:
    data = bytearray(SPARSE_SIZE)
    data[: len(SPARSE_HEAD)] = SPARSE_HEAD
    data[SPARSE_AT : SPARSE_AT + len(SPARSE_TAIL)] = SPARSE_TAIL
    return bytes(data)


def read_hashes(d: Path) -> dict[str, str]:
    out = {}
    for name in [*SIZES, "sparse"]:
        h = hashlib.sha256()
        with open(d / name, "rb") as f:
            while chunk := f.read(MiB):
                h.update(chunk)
        out[name] = h.hexdigest()
    return out


def check(d: Path, expected: dict[str, str]) -> None:
    sizes = {name: (d / name).stat().st_size for name in expected}
    assert sizes == {**SIZES, "sparse": SPARSE_SIZE}
    assert read_hashes(d) == expected
    with open(d / "sparse", "rb") as f:  # read straight from inside the hole
        f.seek(2 * MiB + 3)
        assert f.read(4096) == bytes(4096)
        f.seek(SPARSE_AT - 2)
        assert f.read(len(SPARSE_TAIL) + 4) == b"\0\0" + SPARSE_TAIL + b"\0\0"


@pytest.mark.timeout(240)
def test_remount_keeps_every_byte(grid: Grid, workdirs: Workdirs) -> None:
    d, _ = workdirs.pair("remount")
    expected = write_files(d)
    check(d, expected)
    grid.down()
    assert not d.exists()  # really unmounted
    grid.up()
    check(d, expected)


@pytest.mark.timeout(240)
def test_server_restart_keeps_every_byte(grid: Grid, workdirs: Workdirs) -> None:
    d, _ = workdirs.pair("restart")
    expected = write_files(d)
    grid.restart_servers()  # the mount stays; the MRC and the OSDs are new processes
    check(d, expected)
    # and a full stop and start of everything
    grid.down()
    grid.up()
    check(d, expected)
    # the files stay writable: append and read back
    with open(d / "one", "ab") as f:
        f.write(b"more")
    assert (d / "one").read_bytes() == payload("one", 1) + b"more"


def objects_of(grid: Grid, ino: int) -> dict[str, dict[int, int]]:
    """Per OSD: objno -> data length, of the file with inode ``ino``."""
    out: dict[str, dict[int, int]] = {}
    for osd in ("osd1", "osd2", "osd3"):
        found: dict[int, int] = {}
        root = grid.state / osd / "data" / "objects"
        for obj in root.glob(f"*/*/{ino}/*"):
            if not obj.name.isdigit():  # temporaries, the epoch and xloc records
                continue
            header = obj.read_bytes()[: OBJECT_HEADER.size]
            magic, _version, _flags, _crc, length = OBJECT_HEADER.unpack(header)
            assert magic == b"XFSO"
            found[int(obj.name)] = length
        out[osd] = found
    return out


@pytest.mark.timeout(240)
def test_big_file_is_striped_over_three_osds(grid: Grid, workdirs: Workdirs) -> None:
    d, _ = workdirs.pair("striped")
    os.setxattr(d, "xfs.policy", b'{"replication": "none", "width": 3}')
    size = SIZES["big"]
    data = payload("big", size)
    (d / "big").write_bytes(data)
    (d / "sparse-only").write_bytes(b"")
    with open(d / "sparse-only", "r+b") as f:
        f.seek(SPARSE_AT)
        f.write(SPARSE_TAIL)
    ino = os.stat(d / "big").st_ino
    per_osd = objects_of(grid, ino)
    count = -(-size // MiB)
    assert all(per_osd.values()), f"an OSD holds no object of the file: {per_osd}"
    held = sorted(n for objs in per_osd.values() for n in objs)
    assert held == list(range(count)), per_osd
    # RAID0: object k on stripe column k mod 3, each column on its own OSD
    columns = {osd: {n % 3 for n in objs} for osd, objs in per_osd.items()}
    assert sorted(len(c) for c in columns.values()) == [1, 1, 1], columns
    assert set().union(*columns.values()) == {0, 1, 2}
    lengths = {n: length for objs in per_osd.values() for n, length in objs.items()}
    assert all(lengths[n] == MiB for n in range(count - 1)), lengths
    assert lengths[count - 1] == size - (count - 1) * MiB
    # a sparse file stores no object for its hole
    sparse = objects_of(grid, os.stat(d / "sparse-only").st_ino)
    stored = sorted(n for objs in sparse.values() for n in objs)
    assert stored == [SPARSE_AT // MiB], sparse
    assert (d / "big").read_bytes() == data


@pytest.mark.timeout(240)
def test_home_files_have_a_whole_copy_on_every_osd(grid: Grid, workdirs: Workdirs) -> None:
    d, _ = workdirs.pair("replicated")
    size = 5 * MiB + 123
    data = payload("replicated", size)
    (d / "f").write_bytes(data)
    per_osd = objects_of(grid, os.stat(d / "f").st_ino)
    count = -(-size // MiB)
    assert len(per_osd) == 3, per_osd
    for osd, objs in per_osd.items():
        assert sorted(objs) == list(range(count)), (osd, objs)
        assert objs[count - 1] == size - (count - 1) * MiB
    assert (d / "f").read_bytes() == data


@pytest.mark.timeout(240)
def test_objects_of_unlinked_files_go_from_every_osd(grid: Grid, workdirs: Workdirs) -> None:
    """The MRC's deleter removes the objects of unlinked files on every OSD, in batches;
    an OSD that is down when they go keeps the files pending until it is back."""
    d, _ = workdirs.pair("deleted")
    names = [f"f{i:03d}" for i in range(40)]
    for name in names:
        (d / name).write_bytes(payload(name, 3000))
    (d / "big").write_bytes(payload("big", 2 * MiB + 5))
    inos = [os.stat(d / name).st_ino for name in [*names, "big"]]
    for ino in inos:
        assert all(objects_of(grid, ino).values()), ino
    grid.kill("osd3")
    try:
        for name in [*names, "big"]:
            os.unlink(d / name)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the unlinks reach the MRC
        finally:
            os.close(fd)
        deadline = time.monotonic() + 60
        while any(objects_of(grid, ino)[osd] for ino in inos for osd in ("osd1", "osd2")):
            assert time.monotonic() < deadline, "objects of unlinked files stayed"
            time.sleep(0.2)
        assert grid.status()["pending_deletions"] >= len(inos)  # osd3's part waits
        assert all(objects_of(grid, ino)["osd3"] for ino in inos)
    finally:
        grid.start("osd3")
    deadline = time.monotonic() + 60
    while grid.status()["pending_deletions"] or any(
        objects_of(grid, ino)["osd3"] for ino in inos
    ):
        assert time.monotonic() < deadline, "osd3 kept the objects of unlinked files"
        time.sleep(0.5)
