"""Self-healing with real processes (docs/design/replication.md, xfs/mrc/healer.py).

- an OSD killed for good: once it is silent past ``osd_replace_after`` every file is back
  at three complete replicas, none on it, and each replica's objects on disk (read
  straight from the OSDs' data directories) hold exactly what was written;
- a flipped byte in an object on disk: reads stay right, and the primary repairs its copy;
- ``xfs osd drain``: every replica moves off the OSD without lowering redundancy;
- ``xfs replica add`` and ``remove`` while a writer keeps the file open and writing: the
  new replica ends up with every byte, the removed one is gone, nothing is lost.

Each test has its own grid (their sizes differ), stopped when the test ends; every
blocking call on the mount runs in a thread with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.system.replicas import (
    HEAL_DEADLINE,
    MiB,
    Op,
    at_factor,
    bounded,
    check_replicas_on_disk,
    file_ids,
    flip_byte,
    osds_of,
    pwrite_sync,
    replicas_of,
    sha256_of,
    started_grid,
    store_of,
    wait_for,
    write_file,
)
from xfs.osd.objects import CorruptObject

pytestmark = [pytest.mark.system]

# assorted files: empty, tiny, around object boundaries, up to 8 MiB, and sparse ones
FILES: dict[str, list[Op]] = {
    "empty": [],
    "one": [("write", 0, 1)],
    "page": [("write", 0, 4096)],
    "odd": [("write", 0, 65537)],
    "below-object": [("write", 0, MiB - 1)],
    "object": [("write", 0, MiB)],
    "above-object": [("write", 0, MiB + 1)],
    "two-and-half": [("write", 0, 5 * MiB // 2)],
    "three": [("write", 0, 3 * MiB)],
    "five-odd": [("write", 0, 5 * MiB + 123)],
    "eight": [("write", 0, 8 * MiB)],
    "hole-first": [("write", 3 * MiB + 17, 100_000)],
    "hole-middle": [("write", 0, MiB), ("write", 6 * MiB, MiB // 2)],
    "hole-tail": [("write", 0, 3 * MiB // 2), ("truncate", 7 * MiB, 0)],
    "only-hole": [("truncate", 4 * MiB, 0)],
    "shrunk": [("write", 0, 4 * MiB), ("truncate", 3 * MiB // 2, 0)],
    "overwritten": [("write", 0, 2 * MiB), ("write", MiB - 10, 20), ("write", 10, 5)],
    "scattered": [("write", 7 * MiB + 5, 3), ("write", 2 * MiB, 7), ("write", 0, 1)],
    "grown": [("write", 0, 100), ("truncate", 2 * MiB + 1, 0), ("write", 2 * MiB, 1)],
    "small-sparse": [("write", 200_000, 1000)],
}


def write_files(directory: Path, specs: dict[str, list[Op]]) -> dict[Path, tuple[str, int]]:
    bounded(directory.mkdir)
    return {
        directory / name: write_file(directory / name, ops, seed)
        for seed, (name, ops) in enumerate(specs.items())
    }


# ---------------------------------------------------------------------------- tests
@pytest.mark.timeout(240)
def test_a_dead_osd_is_replaced() -> None:
    with started_grid(5, "xfs-test-heal-") as grid:
        files = write_files(grid.mnt / "assorted", FILES)
        fids = file_ids(grid, files)
        infos = {path: replicas_of(path) for path in files}
        for path, info in infos.items():
            assert at_factor(info), f"{path.name} is not at factor 3 after its write: {info}"
        held = Counter(u for info in infos.values() for u in osds_of(info))
        victim, count = held.most_common(1)[0]
        grid.kill(grid.osd_roles_by_uuid()[victim])

        def healed() -> bool:
            return all(at_factor(replicas_of(path), without=victim) for path in files)

        took = wait_for("healed", healed, grid, HEAL_DEADLINE)
        print(f"{count} of {len(files)} files re-replicated off a dead OSD in {took:.1f} s")

        def repair_done() -> bool:
            repair = grid.status()["repair"]
            return bool(
                repair["dead"] == [victim]
                and repair["below_factor"] == 0
                and repair["filling"] == 0
                and repair["replicated_files"] >= len(files)
            )

        wait_for("reported healed by xfs status", repair_done, grid, 10)
        check_replicas_on_disk(grid, files, fids)
        for path, (digest, _) in files.items():
            assert sha256_of(path) == digest, f"{path.name} reads back wrong through the mount"


@pytest.mark.timeout(180)
def test_a_flipped_byte_is_repaired_on_the_primary() -> None:
    with started_grid(3, "xfs-test-flip-") as grid:
        path = grid.mnt / "rot"
        digest, _ = write_file(path, [("write", 0, 4 * MiB)], seed=42)
        fid = file_ids(grid, [path])[path]
        info = replicas_of(path)
        assert at_factor(info), info
        roles = grid.osd_roles_by_uuid()
        primary, *backups = [r["osds"][0] for r in info["replicas"]]
        store = store_of(grid, roles[primary])
        good = store.load(fid, 1)
        assert good is not None and len(good) == MiB

        flip_byte(store.object_path(fid, 1), 12345)
        with pytest.raises(CorruptObject):
            store.load(fid, 1)
        assert sha256_of(path) == digest  # the primary read a good copy from a backup ...

        def repaired() -> bool:
            with contextlib.suppress(CorruptObject):
                return store.load(fid, 1) == good
            return False

        wait_for("repaired on the primary", repaired, grid, 5)  # ... and kept it

        # A rotten byte on a backup is not seen by reads: they go to the primary. The
        # backup's header still carries the old CRC, so reconciliation (which compares
        # the headers' sums) does not see it either; it is found when that backup, as
        # primary, reads the object (and repairs it from another replica), and the
        # scrubber reports it.
        backup = store_of(grid, roles[backups[0]])
        flip_byte(backup.object_path(fid, 2), 777)
        with pytest.raises(CorruptObject):
            backup.load(fid, 2)
        assert sha256_of(path) == digest
        assert replicas_of(path)["replicas"][0]["osds"] == [primary]

        # Partial writes read the object first, on every OSD: one into the rotten object
        # of the backup, one into a rotten object of the primary. Each OSD fetches a good
        # copy from another replica first, so the writes succeed and every copy is right.
        flip_byte(store.object_path(fid, 3), 4242)
        expected = bytearray(random.Random(42).randbytes(4 * MiB))  # what write_file wrote
        for offset in (2 * MiB + 100, 3 * MiB + 4000):
            expected[offset : offset + 10] = b"0123456789"
            bounded(functools.partial(pwrite_sync, path, offset, b"0123456789"))
        assert sha256_of(path) == hashlib.sha256(expected).hexdigest()
        for osd in (primary, *backups):
            copy = store_of(grid, roles[osd])
            for objno in range(4):
                assert copy.load(fid, objno) == expected[objno * MiB : (objno + 1) * MiB], (
                    f"object {objno} on {roles[osd]}"
                )


@pytest.mark.timeout(180)
def test_drain_moves_every_replica_off_an_osd() -> None:
    with started_grid(4, "xfs-test-drain-") as grid:
        specs = {f"f{i}": [("write", 0, i * 700_000 + i)] for i in range(10)}
        files = write_files(grid.mnt / "drain", specs)
        fids = file_ids(grid, files)
        held = Counter(u for path in files for u in osds_of(replicas_of(path)))
        drained, count = held.most_common(1)[0]

        unknown = grid.admin("osd", "drain", "00000000-0000-4000-8000-000000000000", check=False)
        assert unknown.returncode != 0 and "no OSD" in unknown.stderr, unknown
        grid.admin("osd", "drain", drained)

        def moved() -> bool:
            return all(at_factor(replicas_of(path), without=drained) for path in files)

        took = wait_for("drained", moved, grid, HEAL_DEADLINE)
        print(f"{count} of {len(files)} files moved off a draining OSD in {took:.1f} s")

        def reported() -> bool:
            repair = grid.status()["repair"]
            return bool(repair["draining"] == {drained: 0} and repair["below_factor"] == 0)

        wait_for("reported drained by xfs status", reported, grid, 10)
        human = grid.admin("status").stdout
        assert f"draining OSD {drained}: drained" in human, human
        listed = json.loads(grid.admin("osd", "list", "--json").stdout)
        assert len(listed) == 4 and drained in {o["uuid"] for o in listed}, listed
        check_replicas_on_disk(grid, files, fids)
        for path, (digest, _) in files.items():
            assert sha256_of(path) == digest, f"{path.name} reads back wrong through the mount"
        # undone: the OSD takes new replicas again (what moved stays where it went)
        grid.admin("osd", "undrain", drained)
        assert grid.status()["repair"]["draining"] == {}
        assert all(at_factor(replicas_of(path), without=drained) for path in files)


@pytest.mark.timeout(180)
def test_replicas_are_added_and_removed_under_an_open_writer() -> None:
    with started_grid(4, "xfs-test-change-") as grid:
        path = grid.mnt / "open"
        rng = random.Random(7)
        model = bytearray()
        fd = bounded(lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        try:

            def append(n: int) -> None:
                data = rng.randbytes(n)
                bounded(lambda: os.pwrite(fd, data, len(model)))
                model.extend(data)

            append(3 * MiB + 5)
            info = replicas_of(path)
            assert at_factor(info), info
            (spare,) = set(grid.osd_roles_by_uuid()) - osds_of(info)
            grid.xfs("replica", "add", str(path), "--osd", spare)
            append(2 * MiB)
            bounded(lambda: os.fsync(fd))

            def four_complete() -> bool:
                replicas = replicas_of(path)["replicas"]
                return len(replicas) == 4 and all(r["complete"] for r in replicas)

            wait_for("the added replica filled", four_complete, grid, HEAL_DEADLINE)
            append(MiB + 7)
            backup = replicas_of(path)["replicas"][1]["osds"][0]
            grid.xfs("replica", "remove", str(path), "--osd", backup)
            append(2 * MiB + 3)
            bounded(lambda: os.fsync(fd))
            assert bounded(lambda: os.pread(fd, len(model), 0)) == model
        finally:
            os.close(fd)
        info = replicas_of(path)
        assert len(info["replicas"]) == 3 and spare in osds_of(info), info
        assert backup not in osds_of(info)
        digest = hashlib.sha256(model).hexdigest()
        assert sha256_of(path) == digest
        # every replica, on disk, holds every byte: the new one got the writes made
        # before it was added (filled) and after (forwarded)
        check_replicas_on_disk(grid, {path: (digest, len(model))}, file_ids(grid, [path]))
