"""What the OSD object store fsyncs, and when (xfs.osd.objects, xfs.osd.unsynced).

Pure bookkeeping: ``os.fsync`` is wrapped to record which paths it synced (the real
fsync still runs); docs/design/replication.md, "Durability on an OSD", is the argument.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from xfs.osd import objects as objects_mod
from xfs.osd.objects import XLOC_NAME, ObjectStore, file_relpath
from xfs.osd.unsynced import EVERYTHING, ToSync, Unsynced
from xfs.proto.errors import XfsError

VOL = "0b6e4f7a-3c2d-4e5f-8a9b-1c2d3e4f5a6b"
FID = f"{VOL}:42"
OTHER = f"{VOL}:43"
MIB = 1 << 20


class Fsyncs:
    """Every path ``os.fsync`` was called on, relative to the store's root."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.paths: list[str] = []
        self.hook: Callable[[str], None] | None = None
        self._real = os.fsync
        monkeypatch.setattr(objects_mod.os, "fsync", self._fsync)

    def _fsync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        rel = os.path.relpath(path, self.root)
        self.paths.append(rel)
        if self.hook is not None:
            self.hook(rel)
        self._real(fd)

    def take(self) -> list[str]:
        taken, self.paths = sorted(self.paths), []
        return taken


def rel(store: ObjectStore, *names: str) -> list[str]:
    d = store.file_dir(FID)
    return sorted(os.path.relpath(d / n, store.root) for n in names)


def dirs(store: ObjectStore, *, ancestors: bool) -> list[str]:
    d = store.file_dir(FID)
    chain = [d, d.parent, d.parent.parent, store.objects] if ancestors else [d]
    return [os.path.relpath(p, store.root) for p in chain]


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    s = ObjectStore(tmp_path / "osd")
    s.open()
    return s


@pytest.fixture
def fsyncs(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    return Fsyncs(store.root, monkeypatch)


def test_writes_sync_nothing_and_fsync_syncs_only_what_was_written(
    store: ObjectStore, fsyncs: Fsyncs
) -> None:
    for objno in range(4):
        store.write(FID, objno, 0, b"x" * 100)
    assert fsyncs.take() == []  # the first write of a file included
    store.fsync(FID)
    # a new file: its objects, its directory and the three above it (new entries)
    assert fsyncs.take() == sorted(rel(store, "0", "1", "2", "3") + dirs(store, ancestors=True))
    store.write(FID, 2, 10, b"again")
    store.fsync(FID)
    # an overwrite is a rename: the object and the directory holding the new name
    assert fsyncs.take() == sorted(rel(store, "2") + dirs(store, ancestors=False))
    store.fsync(FID)  # nothing written since: a close after an fsync costs nothing
    assert fsyncs.take() == []
    store.write(FID, 7, 0, b"new object")
    store.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "7") + dirs(store, ancestors=False))
    assert store.read(FID, 2, 0, 100) == b"x" * 10 + b"again" + b"x" * 85


def neighbour(file_id: str) -> str:
    """Another file of the volume whose directory sits beside ``file_id``'s."""
    bucket = file_relpath(file_id)[0]
    ino = 1000
    while file_relpath(f"{VOL}:{ino}")[0] != bucket:
        ino += 1
    return f"{VOL}:{ino}"


def test_only_directories_made_are_synced_into_their_parents(
    store: ObjectStore, fsyncs: Fsyncs
) -> None:
    """A new file beside an existing one made only its own directory: its fsync syncs
    that entry (in the volume's directory), not the directories above, which a sync
    covered already. One made meanwhile by another file is synced by whoever comes
    first, since a file is durable only once every directory above it is."""
    second = neighbour(FID)
    store.write(FID, 0, 0, b"first")
    store.fsync(FID)
    fsyncs.take()
    store.write(second, 0, 0, b"beside it")
    store.fsync(second)
    d = store.file_dir(second)
    assert fsyncs.take() == sorted(
        os.path.relpath(p, store.root) for p in (d / "0", d, d.parent)
    )
    fresh = ObjectStore(store.root.parent / "other")  # a volume directory made by one
    fresh.open()  # file, synced by the other
    fsyncs.root = fresh.root
    fsyncs.take()
    a, b = f"{VOL}:5", neighbour(f"{VOL}:5")
    fresh.write(a, 0, 0, b"makes the bucket and volume directories")
    fresh.write(b, 0, 0, b"makes only its own")
    fresh.fsync(b)
    db = fresh.file_dir(b)
    assert fsyncs.take() == sorted(
        os.path.relpath(p, fresh.root)
        for p in (db / "0", db, db.parent, db.parent.parent, fresh.objects)
    )
    fresh.fsync(a)
    da = fresh.file_dir(a)
    assert fsyncs.take() == sorted(
        os.path.relpath(p, fresh.root) for p in (da / "0", da, da.parent)
    )


def test_files_are_tracked_separately(store: ObjectStore, fsyncs: Fsyncs) -> None:
    store.write(FID, 0, 0, b"a")
    store.write(OTHER, 0, 0, b"b")
    store.fsync(FID)
    store.fsync(OTHER)
    fsyncs.take()
    store.write(OTHER, 1, 0, b"c")
    store.fsync(FID)
    assert fsyncs.take() == []
    store.fsync(OTHER)
    assert os.path.relpath(store.object_path(OTHER, 1), store.root) in fsyncs.take()


def test_a_restarted_store_syncs_everything_once(store: ObjectStore, fsyncs: Fsyncs) -> None:
    for objno in range(3):
        store.write(FID, objno, 0, b"data")
    store.fsync(FID)
    store.write(FID, 1, 0, b"unsynced when the process died")
    fsyncs.take()
    # a new process on the same root: the page cache may still hold unsynced writes
    again = ObjectStore(store.root)
    again.open()
    again.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "0", "1", "2") + dirs(store, ancestors=True))
    # from then on it knows the file
    again.write(FID, 2, 0, b"more")
    again.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "2") + dirs(store, ancestors=False))


def test_writes_to_an_unknown_file_leave_it_unknown(store: ObjectStore, fsyncs: Fsyncs) -> None:
    store.write(FID, 0, 0, b"before the restart")
    again = ObjectStore(store.root)
    again.open()
    again.write(FID, 1, 0, b"after")
    again.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "0", "1") + dirs(store, ancestors=True))


def test_truncate_syncs_the_cut_object_and_the_removed_names(
    store: ObjectStore, fsyncs: Fsyncs
) -> None:
    for objno in range(4):
        store.write(FID, objno, 0, b"y" * 1000)
    store.fsync(FID)
    fsyncs.take()
    store.truncate(FID, 1000 + 500, 1000, 1, 0)
    assert fsyncs.take() == []
    store.fsync(FID)
    # object 1 was cut (a rename), 2 and 3 were unlinked: all in the directory
    assert fsyncs.take() == sorted(rel(store, "1") + dirs(store, ancestors=False))
    # a truncate that raises the epoch writes the epoch record durably at once
    store.truncate(FID, 10, 1000, 1, 0, epoch=1)
    taken = fsyncs.take()
    assert dirs(store, ancestors=False)[0] in taken
    assert any(".tmp.epoch." in p for p in taken)
    store.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "0") + dirs(store, ancestors=False))


def test_put_is_durable_at_once_and_a_removal_is_synced_later(
    store: ObjectStore, fsyncs: Fsyncs
) -> None:
    store.put(FID, 0, b"filled")
    taken = fsyncs.take()
    # data before the rename, then the new directory and the ones above it
    assert [p for p in taken if ".tmp.0." not in p] == sorted(dirs(store, ancestors=True))
    assert len(taken) == 5
    store.put(FID, 1, b"filled too")
    assert len(fsyncs.take()) == 2  # the directories above are durable now
    store.fsync(FID)
    assert fsyncs.take() == []
    store.put(FID, 1, None)
    store.fsync(FID)
    assert fsyncs.take() == dirs(store, ancestors=False)


def test_the_first_xloc_version_is_not_written(store: ObjectStore, fsyncs: Fsyncs) -> None:
    assert store.install_xloc_version(FID, 1) == 1
    assert store.xloc_version(FID) == 1
    assert fsyncs.take() == []
    assert not (store.file_dir(FID) / XLOC_NAME).exists()
    again = ObjectStore(store.root)
    again.open()
    assert again.xloc_version(FID) == 0  # as if lost: fences nothing version 1 does
    # a later version (a replica set changed) is durable before it is installed
    assert again.install_xloc_version(FID, 2) == 2
    taken = fsyncs.take()
    assert any(".tmp.xloc." in p for p in taken)
    assert sorted(p for p in taken if ".tmp." not in p) == sorted(dirs(store, ancestors=True))
    third = ObjectStore(store.root)
    third.open()
    assert third.xloc_version(FID) == 2


def test_a_write_during_an_fsync_syncs_its_data_before_its_rename(
    store: ObjectStore, fsyncs: Fsyncs
) -> None:
    assert store._lock(FID, 0) is not store._lock(FID, 1)
    store.write(FID, 0, 0, b"first")
    store.write(FID, 1, 0, b"first")
    store.fsync(FID)
    store.write(FID, 0, 0, b"second")
    fsyncs.take()
    obj0 = rel(store, "0")[0]

    def during(path: str) -> None:
        if path == obj0:
            fsyncs.hook = None
            t = threading.Thread(target=store.write, args=(FID, 1, 0, b"racing"))
            t.start()
            t.join(10)

    fsyncs.hook = during
    store.fsync(FID)
    taken = fsyncs.take()
    # the racing write's temporary file was synced before it was renamed into place,
    # since this fsync's directory fsync may have made the new name durable
    assert any(".tmp.1." in p for p in taken)
    assert sorted(p for p in taken if ".tmp." not in p) == sorted(
        rel(store, "0") + dirs(store, ancestors=False)
    )
    store.fsync(FID)  # the racing write is still noted for the next fsync
    assert fsyncs.take() == sorted(rel(store, "1") + dirs(store, ancestors=False))


def test_a_failed_fsync_makes_the_file_unknown(
    store: ObjectStore, fsyncs: Fsyncs, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write(FID, 0, 0, b"a")
    store.write(FID, 1, 0, b"b")
    store.fsync(FID)
    store.write(FID, 1, 0, b"c")
    fsyncs.take()

    def failing(path: str) -> None:
        raise OSError(errno.EIO, "disk on fire")

    fsyncs.hook = failing
    with pytest.raises(XfsError) as e:
        store.fsync(FID)
    assert e.value.code == errno.EIO
    fsyncs.hook = None
    fsyncs.take()
    store.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "0", "1") + dirs(store, ancestors=True))


def test_fsync_of_a_deleted_or_unwritten_file(store: ObjectStore, fsyncs: Fsyncs) -> None:
    store.fsync(FID)  # never written here
    store.write(FID, 0, 0, b"a")
    store.delete(FID)
    store.fsync(FID)
    assert fsyncs.take() == []
    store.write(FID, 0, 0, b"again")  # a new directory: new entries above it
    store.fsync(FID)
    assert fsyncs.take() == sorted(rel(store, "0") + dirs(store, ancestors=True))


def test_concurrent_writes_and_fsyncs_leave_nothing_unnoted(store: ObjectStore) -> None:
    """Whatever the interleaving, once the writers stop one fsync leaves nothing noted."""
    errors: list[BaseException] = []

    def writer(objno: int) -> None:
        try:
            for i in range(20):
                store.write(FID, objno, 0, bytes([i]) * 512)
        except BaseException as e:  # reported below
            errors.append(e)

    def syncer() -> None:
        try:
            for _ in range(20):
                store.fsync(FID)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=syncer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    store.fsync(FID)
    assert store._unsynced.statistics() == (1, 0)


# ----------------------------------------------------------------------------- Unsynced
def test_unsynced_bookkeeping() -> None:
    u = Unsynced()
    with u.sync(FID) as todo:  # unknown
        assert todo is EVERYTHING
        u.track(FID)
    assert u.wrote(FID, 3) is False
    with u.sync(FID) as todo:
        assert todo == ToSync(frozenset({3}), True, False)
        assert u.wrote(FID, 4) is True  # an fsync is in progress
    with u.sync(FID) as todo:
        assert todo == ToSync(frozenset({4}), True, False)
    with u.sync(FID) as todo:
        assert todo == ToSync(frozenset(), False, False)
    u.forget(FID)
    with u.sync(FID) as todo:
        assert todo is EVERYTHING


def test_unsynced_made_directory_and_failure() -> None:
    u = Unsynced()
    u.make_dir(FID, lambda: [])  # made by somebody else: stays unknown
    assert u.ancestors_unsynced(FID)
    u.make_dir(FID, lambda: [Path("d")])
    assert u.wrote(FID, 0) is False
    assert u.ancestors_unsynced(FID)
    with pytest.raises(RuntimeError), u.sync(FID) as todo:
        assert todo == ToSync(frozenset({0}), True, True)
        raise RuntimeError("fsync failed")
    with u.sync(FID) as todo:
        assert todo is EVERYTHING


def test_unsynced_forgets_the_least_recently_used() -> None:
    u = Unsynced(capacity=2)
    for f in (FID, OTHER, f"{VOL}:44"):
        u.make_dir(f, lambda: [Path("d")])
        u.wrote(f, 0)
    assert u.statistics() == (2, 2)
    with u.sync(FID) as todo:
        assert todo is EVERYTHING  # forgotten: synced whole
    with u.sync(OTHER) as todo:
        assert todo.objects == {0}


def test_a_second_fsync_returns_only_after_the_first(store: ObjectStore, fsyncs: Fsyncs) -> None:
    """The first took the notes of both callers' writes: the second must wait for it."""
    store.write(FID, 0, 0, b"written by one client")
    store.write(FID, 1, 0, b"written by another")
    obj0 = rel(store, "0")[0]
    still_running: list[bool] = []

    def during(path: str) -> None:
        if path == obj0:
            fsyncs.hook = None
            second = threading.Thread(target=store.fsync, args=(FID,))
            second.start()
            second.join(0.3)
            still_running.append(second.is_alive())
            threads.append(second)

    threads: list[threading.Thread] = []
    fsyncs.hook = during
    store.fsync(FID)
    threads[0].join(10)
    assert still_running == [True]


def test_a_new_directory_counts_as_unsynced_until_its_ancestors_are() -> None:
    u = Unsynced()
    u.make_dir(FID, lambda: [Path("d")])
    u.wrote(FID, 0)
    with u.sync(FID) as todo:
        assert todo.ancestors
        assert u.ancestors_unsynced(FID)  # a durable put meanwhile syncs them itself
        u.ancestors_synced(FID)
    assert not u.ancestors_unsynced(FID)
