"""Helpers for system tests of replicated files: a grid with short leases, writes and
reads through the mount in threads with deadlines, and the replicas of a file as the
MRC lists them and as the OSDs hold them on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, running_grid
from xfs.common import object_format
from xfs.common.object_format import HEADER
from xfs.osd.objects import ObjectStore

T = TypeVar("T")
MiB = 1 << 20
# short leases, so that a killed OSD is declared dead and replaced within seconds
SETTINGS = [
    "mrc.osd_lease=2",
    "mrc.osd_dead_after=4",
    "mrc.osd_replace_after=6",
    "mrc.heal_interval=0.5",
    "osd.peer_timeout=1.5",
    "mount.osd_timeout=3",
    "mount.io_timeout=60",
]
HEAL_DEADLINE = 60.0  # seconds for the grid to be back at factor 3
IO_DEADLINE = 60.0  # seconds one blocking operation on the mount may take


# ---------------------------------------------------------------------------- helpers
def bounded(fn: Callable[[], T], timeout: float = IO_DEADLINE) -> T:
    """``fn()`` in a thread: its result, or its exception; fails if it hangs."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn} hung for over {timeout:g} s"
    if "error" in box:
        raise box["error"]
    return box["result"]


@contextlib.contextmanager
def started_grid(osds: int, prefix: str) -> Iterator[Grid]:
    needs_fuse()
    with running_grid(prefix, osds=osds, settings=SETTINGS) as grid:
        yield grid


Op = tuple[str, int, int]  # ("write", offset, length) or ("truncate", size, 0)


def write_file(path: Path, ops: list[Op], seed: int) -> tuple[str, int]:
    """Apply ``ops`` to a new file through the mount, fsync and close it; returns the
    SHA-256 and size of what the file must now hold (kept in a model beside it)."""
    rng = random.Random(seed)
    model = bytearray()

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for op, a, b in ops:
                if op == "write":
                    data = rng.randbytes(b)
                    view = memoryview(data)
                    while view:
                        view = view[os.pwrite(fd, view, a + b - len(view)) :]
                    if len(model) < a + b:
                        model.extend(bytes(a + b - len(model)))
                    model[a : a + b] = data
                else:
                    os.ftruncate(fd, a)
                    del model[a:]
                    model.extend(bytes(a - len(model)))
            os.fsync(fd)
        finally:
            os.close(fd)

    bounded(run)
    return hashlib.sha256(model).hexdigest(), len(model)


def pwrite_sync(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    """Read through the mount, opened anew (close-to-open: no cached data is used)."""

    def run() -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(4 * MiB):
                digest.update(chunk)
        return digest.hexdigest()

    return bounded(run)


def replicas_of(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(bounded(lambda: os.getxattr(path, "xfs.replicas")))
    return result


def osds_of(info: dict[str, Any]) -> set[str]:
    return {u for r in info["replicas"] for u in r["osds"]}


def at_factor(info: dict[str, Any], without: str | None = None) -> bool:
    """Three complete replicas, none on ``without``."""
    return (
        len(info["replicas"]) == 3
        and all(r["complete"] for r in info["replicas"])
        and without not in osds_of(info)
    )


def file_ids(grid: Grid, paths: Iterable[Path]) -> dict[Path, str]:
    """``<volume id>:<ino>`` of each file: the mount reports the MRC's inode numbers as
    st_ino, and the grid has one volume."""
    (volume,) = grid.status()["volumes"]
    inos = bounded(lambda: {path: os.stat(path).st_ino for path in paths})
    return {path: f"{volume['id']}:{ino}" for path, ino in inos.items()}


def store_of(grid: Grid, role: str) -> ObjectStore:
    store = ObjectStore(grid.osd_data(role))
    store.open()
    return store


def replica_digest(store: ObjectStore, fid: str, size: int) -> str:
    """The file reassembled from one OSD's objects (width 1: object k holds bytes
    [k MiB, (k+1) MiB); a missing object or a short one is a hole)."""
    n = (size + MiB - 1) // MiB
    held = [objno for objno, _, _ in store.sums(fid)]
    assert all(objno < n for objno in held), f"objects past the end of {fid}: {held}"
    data = bytearray(size)
    for objno in range(n):
        obj = store.load(fid, objno) or b""
        assert objno * MiB + len(obj) <= size and len(obj) <= MiB, (fid, objno, len(obj))
        data[objno * MiB : objno * MiB + len(obj)] = obj
    return hashlib.sha256(data).hexdigest()


def check_replicas_on_disk(
    grid: Grid, files: dict[Path, tuple[str, int]], fids: dict[Path, str]
) -> None:
    """Every replica of every file, read straight from its OSD's disk, is what was written."""
    roles = grid.osd_roles_by_uuid()
    stores: dict[str, ObjectStore] = {}
    for path, (digest, size) in files.items():
        for replica in replicas_of(path)["replicas"]:
            (osd,) = replica["osds"]
            store = stores.setdefault(osd, store_of(grid, roles[osd]))
            assert replica_digest(store, fids[path], size) == digest, (
                f"the replica of {path.name} on {osd} ({roles[osd]}) differs"
            )


def wait_for(what: str, ok: Callable[[], bool], grid: Grid, timeout: float) -> float:
    """Poll ``ok`` until true; the seconds it took."""
    start = time.monotonic()
    while not ok():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not {what} after {timeout:g} s\n{grid.logs()}")
        time.sleep(0.5)
    return time.monotonic() - start


def flip_byte(path: Path, offset: int) -> None:
    """Flip one byte of an object file's data part, in place (a bit rot)."""
    with open(path, "r+b") as f:
        version, _, length = object_format.decode_header(f.read(HEADER.size))
        at = object_format.data_offset(version, length) + offset
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
