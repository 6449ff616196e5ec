"""Inodes of deleted objects are reused for the next objects written (xfs.osd.spares)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xfs.osd import spares as spares_mod
from xfs.osd.objects import ObjectStore
from xfs.osd.spares import Spares

VOL = "0b6e4f7a-3c2d-4e5f-8a9b-1c2d3e4f5a6b"
OLD = f"{VOL}:42"
NEW = f"{VOL}:43"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    s = ObjectStore(tmp_path / "osd")
    s.open()
    return s


def inodes(store: ObjectStore, file_id: str) -> set[int]:
    d = store.file_dir(file_id)
    return {os.stat(d / name).st_ino for name in os.listdir(d) if name.isdigit()}


def spare_files(store: ObjectStore) -> list[Path]:
    return sorted((store.root / "spare").iterdir())


def test_a_deleted_files_inodes_carry_the_next_objects(store: ObjectStore) -> None:
    for objno in range(4):
        store.write(OLD, objno, 0, bytes([objno]) * 5000)
    old = inodes(store, OLD)
    os.chmod(store.object_path(OLD, 0), 0o644)  # (as a record's file is)
    store.delete(OLD)
    assert not store.file_dir(OLD).exists()
    spares = spare_files(store)
    assert len(spares) == 4
    assert all(p.stat().st_size == 0 for p in spares)  # emptied: no data kept
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in spares)
    assert {p.stat().st_ino for p in spares} == old

    for objno in range(3):
        store.write(NEW, objno, 0, b"new" * 100, sync=objno == 0)
    assert inodes(store, NEW) <= old  # no new inode for them
    assert len(spare_files(store)) == 1
    for objno in range(3):
        assert store.read(NEW, objno, 0, 1 << 20) == b"new" * 100
    assert store.read(OLD, 0, 0, 10) == b""


def test_a_restart_empties_spares_and_drops_one_that_is_an_object(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "osd")
    store.open()
    store.write(NEW, 0, 0, b"keep me")
    for objno in range(3):
        store.write(OLD, objno, 0, b"x" * 4096)
    store.delete(OLD)
    first, second, third = spare_files(store)
    first.write_bytes(b"left by a crash between the rename and the truncate")
    os.unlink(store.object_path(NEW, 0))  # the object and a spare are one inode:
    os.link(second, store.object_path(NEW, 0))  # a rename a power loss half undid

    again = ObjectStore(tmp_path / "osd")
    again.open()
    assert spare_files(again) == [first, third]
    assert first.stat().st_size == 0
    assert os.stat(again.object_path(NEW, 0)).st_nlink == 1


def test_at_most_max_spares_are_kept(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spares_mod, "MAX_SPARES", 2)
    for objno in range(5):
        store.write(OLD, objno, 0, b"y")
    store.delete(OLD)
    assert len(spare_files(store)) == 2
    assert not store.file_dir(OLD).exists()


def test_a_missing_directory_keeps_the_spare(tmp_path: Path) -> None:
    spares = Spares(tmp_path / "spare")
    spares.open()
    victim = tmp_path / "victim"
    victim.write_bytes(b"data")
    spares.give(victim)
    assert len(spares) == 1 and not victim.exists()
    with pytest.raises(FileNotFoundError):
        spares.take(tmp_path / "missing" / "tmp")
    assert len(spares) == 1
    assert spares.take(tmp_path / "tmp")
    assert (tmp_path / "tmp").stat().st_size == 0
    assert not spares.take(tmp_path / "tmp2")
