"""The OSD object store (xfs.osd.objects) and its scrub (xfs.osd.scrub)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import google_crc32c
import pytest

from xfs.common import object_format
from xfs.common.object_format import BLOCK, HEADER
from xfs.osd import objects as objects_mod
from xfs.osd.objects import (
    EPOCH_NAME,
    FORMAT_LINE,
    MAX_EPOCH,
    MAX_OBJNO,
    TEMP_PREFIX,
    CorruptEpoch,
    CorruptObject,
    ObjectStore,
    StaleEpoch,
    StoreFormatError,
    decode_epoch,
    encode_epoch,
    parse_file_id,
    parse_object_relpath,
)
from xfs.osd.scrub import TEMP_MAX_AGE, ScrubReport, scrub
from xfs.proto.errors import XfsError

VOL = "0b6e4f7a-3c2d-4e5f-8a9b-1c2d3e4f5a6b"
FID = f"{VOL}:42"
OTHER = f"{VOL}:43"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    s = ObjectStore(tmp_path / "osd")
    s.open()
    return s


def snapshot(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


# ----------------------------------------------------------------------------- layout
def test_constructor_does_no_io(tmp_path: Path) -> None:
    ObjectStore(tmp_path / "osd")
    assert not (tmp_path / "osd").exists()


def test_open_creates_layout_and_keeps_uuid(tmp_path: Path) -> None:
    s = ObjectStore(tmp_path / "osd")
    with pytest.raises(RuntimeError):
        _ = s.uuid
    s.open()
    assert (tmp_path / "osd" / "FORMAT").read_text() == "xfs-osd-objects 4\n"
    assert (tmp_path / "osd" / "objects").is_dir()
    assert len(s.uuid) == 36
    again = ObjectStore(tmp_path / "osd")
    again.open()
    assert again.uuid == s.uuid


def test_format_version_mismatch(tmp_path: Path) -> None:
    ObjectStore(tmp_path / "osd").open()
    for newer in ("xfs-osd-objects 5\n", "xfs-osd-objects 1 \n", "junk"):
        (tmp_path / "osd" / "FORMAT").write_text(newer)
        with pytest.raises(StoreFormatError, match="FORMAT"):
            ObjectStore(tmp_path / "osd").open()
        assert (tmp_path / "osd" / "FORMAT").read_text() == newer  # left alone


def test_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    s = ObjectStore(tmp_path / "osd")
    s.open()
    s.write(FID, 0, 0, b"from version 1")
    (tmp_path / "osd" / "FORMAT").write_text("xfs-osd-objects 1\n")  # as version 1 left it
    with pytest.raises(StoreFormatError):
        scrub(s)  # scrub reads only the current format: open() upgrades
    again = ObjectStore(tmp_path / "osd")
    again.open()
    assert (tmp_path / "osd" / "FORMAT").read_text() == FORMAT_LINE
    assert again.uuid == s.uuid
    assert again.read(FID, 0, 0, 100) == b"from version 1"
    assert again.epoch(FID) == 0  # no epoch file: never truncated with an epoch
    assert scrub(again).ok


def test_version_2_store_is_upgraded_with_xloc_version_0(tmp_path: Path) -> None:
    s = ObjectStore(tmp_path / "osd")
    s.open()
    s.write(FID, 0, 0, b"from version 2")
    (tmp_path / "osd" / "FORMAT").write_text("xfs-osd-objects 2\n")
    again = ObjectStore(tmp_path / "osd")
    again.open()
    assert (tmp_path / "osd" / "FORMAT").read_text() == FORMAT_LINE
    assert again.xloc_version(FID) == 0
    assert again.read(FID, 0, 0, 100) == b"from version 2"


def test_xloc_version_only_rises_and_survives_reopening(tmp_path: Path) -> None:
    s = ObjectStore(tmp_path / "osd")
    s.open()
    assert s.xloc_version(FID) == 0
    assert s.install_xloc_version(FID, 3) == 3
    assert s.install_xloc_version(FID, 2) == 3  # never lowered
    again = ObjectStore(tmp_path / "osd")
    again.open()
    assert again.xloc_version(FID) == 3
    assert scrub(again).ok
    again.delete(FID)
    assert again.xloc_version(FID) == 0


def test_sums_put_and_load(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"abc")
    store.write(FID, 3, 0, b"defg")
    sums = store.sums(FID)
    assert [(o, n) for o, _, n in sums] == [(0, 3), (3, 4)]
    store.put(FID, 3, b"xyz")
    store.put(FID, 0, None)
    store.put(FID, 9, None)  # removing what is not there is fine
    assert store.load(FID, 0) is None and store.load(FID, 3) == b"xyz"
    other = dict((o, c) for o, c, _ in store.sums(FID))
    assert list(other) == [3] and other[3] != dict((o, c) for o, c, _ in sums)[3]


def test_sums_mark_a_bad_header_as_unlike_any_good_copy(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"abc")
    path = store.object_path(FID, 0)
    path.write_bytes(b"garbage")
    assert store.sums(FID) == [(0, 0, -1)]


def test_open_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "osd").mkdir()
    (tmp_path / "osd" / "precious").write_text("x")
    with pytest.raises(StoreFormatError, match="not empty"):
        ObjectStore(tmp_path / "osd").open()
    assert (tmp_path / "osd" / "precious").read_text() == "x"


def test_open_finishes_interrupted_creation(tmp_path: Path) -> None:
    (tmp_path / "osd" / "objects").mkdir(parents=True)
    (tmp_path / "osd" / "UUID").write_text(f"{VOL}\n")
    s = ObjectStore(tmp_path / "osd")
    s.open()
    assert s.uuid == VOL
    assert (tmp_path / "osd" / "FORMAT").read_text() == FORMAT_LINE


def test_object_path_layout(store: ObjectStore) -> None:
    store.write(FID, 7, 0, b"abc")
    (path,) = [p for p in store.objects.rglob("*") if p.is_file()]
    parts = path.relative_to(store.objects).parts
    assert parts[1:] == (VOL, "42", "7")
    assert parse_object_relpath(parts) == (FID, 7)
    raw = path.read_bytes()
    assert raw[:4] == b"XFSO" and len(raw) == HEADER.size + 4 + 3  # one block's checksum
    assert object_format.decode(raw) == b"abc"


def test_pure_codec() -> None:
    data = os.urandom(3 * BLOCK + 5)
    raw = object_format.encode(data) + data
    assert object_format.decode(raw) == data
    assert len(raw) == object_format.file_size(object_format.VERSION, len(data))
    assert object_format.decode(object_format.encode(b"") + b"") == b""
    for i in range(0, len(raw), 97):  # any flipped byte: header, table or data
        flipped = bytearray(raw)
        flipped[i] ^= 0x10
        with pytest.raises(ValueError):
            object_format.decode(bytes(flipped))
    for bad in (raw[:-1], raw + b"!", raw[:10], b"XFSP" + raw[4:], raw[:4] + b"\x00\x03" + raw[6:]):
        with pytest.raises(ValueError):
            object_format.decode(bad)


def _write_version_1(store: ObjectStore, objno: int, data: bytes) -> None:
    """An object as the format without block tables wrote it."""
    header = HEADER.pack(b"XFSO", object_format.WHOLE, 0, google_crc32c.value(data), len(data))
    path = store.object_path(FID, objno)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data)


def test_objects_without_a_block_table_are_read_and_rewritten_with_one(
    store: ObjectStore,
) -> None:
    data = os.urandom(2 * BLOCK + 100)
    _write_version_1(store, 0, data)
    assert store.read(FID, 0, BLOCK + 7, 50) == data[BLOCK + 7 : BLOCK + 57]
    assert store.read(FID, 0, 0, 1 << 20) == data
    assert scrub(store).ok
    store.write(FID, 0, 10, b"new")
    raw = store.object_path(FID, 0).read_bytes()
    assert object_format.decode_header(raw[: HEADER.size])[0] == object_format.VERSION
    assert store.read(FID, 0, 0, 1 << 20) == data[:10] + b"new" + data[13:]
    _write_version_1(store, 1, data)
    flip_byte(store.object_path(FID, 1), HEADER.size + 3 * BLOCK // 2)
    with pytest.raises(CorruptObject):
        store.read(FID, 1, 0, 1)  # the whole object is what its checksum covers


def test_a_small_read_verifies_only_the_blocks_it_reads(store: ObjectStore) -> None:
    data = os.urandom(8 * BLOCK)
    store.write(FID, 0, 0, data)
    start = object_format.data_offset(object_format.VERSION, len(data))
    flip_byte(store.object_path(FID, 0), start + 5 * BLOCK + 9)  # bit rot in block 5
    assert store.read(FID, 0, 2 * BLOCK + 1, BLOCK) == data[2 * BLOCK + 1 : 3 * BLOCK + 1]
    assert store.read(FID, 0, 6 * BLOCK, 1 << 20) == data[6 * BLOCK :]
    for offset, length in ((5 * BLOCK, 1), (4 * BLOCK + 10, BLOCK), (0, 1 << 20)):
        with pytest.raises(CorruptObject):
            store.read(FID, 0, offset, length)
    store.write(FID, 1, 0, data)
    flip_byte(store.object_path(FID, 1), HEADER.size + 4 * 3)  # block 3's checksum
    with pytest.raises(CorruptObject):
        store.read(FID, 1, 0, 1)  # the table's own checksum covers every entry


# ----------------------------------------------------------------------------- hostile ids
HOSTILE_IDS = [
    "..",
    "/etc/passwd",
    "a:1",
    f"{VOL}:0",
    f"{VOL}:-1",
    f"{VOL}:+1",
    f"{VOL}:01",
    f"{VOL}:99999999999999999999999",
    f"{VOL}:{2**63}",
    f"{VOL}:1\x00",
    f"{VOL}\x00:1",
    f"{VOL}:1/../../x",
    f"../{VOL}:1",
    f"{VOL}/..:1",
    f"{VOL.upper()}:1",
    f"{VOL}:1\n",
    f"{VOL}:1:2",
    f"{VOL}:\u0661",  # an Arabic-Indic digit one: \d would accept it
    f"{VOL}:",
    ":1",
    "",
]


@pytest.mark.parametrize("file_id", HOSTILE_IDS)
def test_hostile_file_ids_are_refused(tmp_path: Path, store: ObjectStore, file_id: str) -> None:
    before = snapshot(tmp_path)
    calls = [
        lambda: store.write(file_id, 0, 0, b"x", sync=True),
        lambda: store.read(file_id, 0, 0, 10),
        lambda: store.truncate(file_id, 0, 4096, 1, 0),
        lambda: store.held_size(file_id, 4096),
        lambda: store.fsync(file_id),
        lambda: store.delete(file_id),
    ]
    for call in calls:
        with pytest.raises(XfsError) as e:
            call()
        assert e.value.code == errno.EINVAL
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("objno", [-1, MAX_OBJNO + 1, 2**41, True, "1", 1.0, None])
def test_hostile_objnos_are_refused(tmp_path: Path, store: ObjectStore, objno: object) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(XfsError) as e:
        store.write(FID, objno, 0, b"x")  # type: ignore[arg-type]
    assert e.value.code == errno.EINVAL
    with pytest.raises(XfsError) as e:
        store.read(FID, objno, 0, 1)  # type: ignore[arg-type]
    assert e.value.code == errno.EINVAL
    assert snapshot(tmp_path) == before


def test_largest_ids_are_accepted(store: ObjectStore) -> None:
    fid = f"{VOL}:{2**63 - 1}"
    assert parse_file_id(fid) == (VOL, 2**63 - 1)
    store.write(fid, MAX_OBJNO, 0, b"z")
    assert store.read(fid, MAX_OBJNO, 0, 1) == b"z"


@pytest.mark.parametrize("offset, length", [(-1, 1), (0, -1), (True, 1), (1.5, 1)])
def test_bad_offsets_are_refused(store: ObjectStore, offset: object, length: object) -> None:
    with pytest.raises(XfsError) as e:
        store.read(FID, 0, offset, length)  # type: ignore[arg-type]
    assert e.value.code == errno.EINVAL


def test_bad_write_arguments(store: ObjectStore) -> None:
    for offset in (-1, 2**32):
        with pytest.raises(XfsError) as e:
            store.write(FID, 0, offset, b"x")
        assert e.value.code == errno.EINVAL
    with pytest.raises(XfsError):
        store.write(FID, 0, 0, "text")  # type: ignore[arg-type]
    assert store.count_objects() == 0


# ----------------------------------------------------------------------------- read/write
def test_round_trip_and_ranges(store: ObjectStore) -> None:
    data = bytes(range(256)) * 16
    store.write(FID, 3, 0, data, sync=True)
    assert store.read(FID, 3, 0, len(data)) == data
    assert store.read(FID, 3, 100, 50) == data[100:150]
    assert store.read(FID, 3, 4000, 1000) == data[4000:]  # short at the end
    assert store.read(FID, 3, 5000, 10) == b""  # past the end
    assert store.read(FID, 3, 0, 0) == b""


def test_missing_object_reads_empty(store: ObjectStore) -> None:
    assert store.read(FID, 0, 0, 100) == b""
    store.write(FID, 2, 0, b"x")
    assert store.read(FID, 1, 0, 100) == b""  # a hole between held objects


def test_partial_overwrite(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"aaaaaaaaaa")
    store.write(FID, 0, 3, b"BBB")
    assert store.read(FID, 0, 0, 100) == b"aaaBBBaaaa"
    store.write(FID, 0, 8, b"CCCC")  # extends past the end
    assert store.read(FID, 0, 0, 100) == b"aaaBBBaaCCCC"
    store.write(FID, 0, 0, b"dd")  # shorter write at 0 keeps the tail
    assert store.read(FID, 0, 0, 100) == b"ddaBBBaaCCCC"
    store.write(FID, 0, 0, b"e" * 20)  # covering write replaces everything
    assert store.read(FID, 0, 0, 100) == b"e" * 20


def test_gap_is_zero_filled(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"ab")
    store.write(FID, 0, 6, b"cd")
    assert store.read(FID, 0, 0, 100) == b"ab\0\0\0\0cd"
    store.write(FID, 1, 5, b"x")  # a fresh object written in the middle
    assert store.read(FID, 1, 0, 100) == b"\0\0\0\0\0x"


def test_no_temp_files_left(store: ObjectStore) -> None:
    for i in range(5):
        store.write(FID, 0, i, b"x", sync=i % 2 == 0)
    names = os.listdir(store.file_dir(FID))
    assert names == ["0"]


def test_concurrent_writes_to_one_object_all_land(store: ObjectStore) -> None:
    chunk, writers, rounds = 512, 8, 5
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for r in range(rounds):
                store.write(FID, 0, i * chunk, bytes([i + 1 + r]) * chunk)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert not errors
    data = store.read(FID, 0, 0, writers * chunk)
    assert data == b"".join(bytes([i + rounds]) * chunk for i in range(writers))


# ----------------------------------------------------------------------------- corruption
def flip_byte(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def test_flipped_byte_is_detected_by_read_and_scrub(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"good data" * 100)
    store.write(FID, 1, 0, b"other")
    flip_byte(store.object_path(FID, 0), HEADER.size + 4 + 500)
    with pytest.raises(CorruptObject) as e:
        store.read(FID, 0, 0, 1)  # the damaged block
    assert (e.value.code, e.value.file_id, e.value.objno) == (errno.EIO, FID, 0)
    with pytest.raises(CorruptObject):
        store.write(FID, 0, 3, b"x")  # read-modify-write verifies the old content
    assert store.read(FID, 1, 0, 10) == b"other"
    report = scrub(store)
    assert (report.checked, report.corrupt, report.stray) == (2, [(FID, 0)], [])
    assert not report.ok


@pytest.mark.parametrize("damage", ["header", "truncated", "appended", "empty"])
def test_damaged_files_are_corrupt(store: ObjectStore, damage: str) -> None:
    store.write(FID, 0, 0, b"0123456789")
    path = store.object_path(FID, 0)
    raw = path.read_bytes()
    damaged = {
        "header": b"XFSX" + raw[4:],
        "truncated": raw[:-1],
        "appended": raw + b"!",
        "empty": b"",
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(CorruptObject):
        store.read(FID, 0, 0, 1)
    with pytest.raises(CorruptObject):
        store.held_size(FID, 4096)
    assert scrub(store).corrupt == [(FID, 0)]


def test_scrub_clean_and_strays(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"x")
    store.write(OTHER, 5, 0, b"y")
    assert scrub(store) == ScrubReport(checked=2, corrupt=[], stray=[])
    d = store.file_dir(FID)
    (d / "007").write_bytes(b"")  # not canonical
    (d / "junk").write_bytes(b"")
    (d / f"{TEMP_PREFIX}0.0123456789abcdef").write_bytes(b"")  # a young temp file
    old_tmp = d / f"{TEMP_PREFIX}1.fedcba9876543210"
    old_tmp.write_bytes(b"")
    os.utime(old_tmp, (0, 0))
    (store.objects / "zz").mkdir()
    (store.objects / "stray-file").write_bytes(b"")
    wrong_prefix = store.objects / ("00" if d.parent.parent.name != "00" else "01") / VOL / "42"
    wrong_prefix.mkdir(parents=True)
    (wrong_prefix / "0").write_bytes(object_format.encode(b"x") + b"x")
    report = scrub(store)
    assert report.checked == 2 and report.corrupt == []
    rel = os.path.relpath(d, store.root)
    assert sorted(report.stray) == sorted(
        [
            f"{rel}/007",
            f"{rel}/junk",
            f"{rel}/{old_tmp.name}",
            "objects/zz",
            "objects/stray-file",
            str(wrong_prefix.relative_to(store.root)),
        ]
    )
    assert store.count_objects() == 2
    young = scrub(store, now=os.stat(old_tmp).st_mtime + TEMP_MAX_AGE - 1)
    assert f"{rel}/{old_tmp.name}" not in young.stray


def test_scrub_checks_format(store: ObjectStore) -> None:
    (store.root / "FORMAT").write_text("xfs-osd-objects 9\n")
    with pytest.raises(StoreFormatError):
        scrub(store)


# ----------------------------------------------------------------------------- truncate
S = 100  # stripe size used by the truncate tests


def fill(store: ObjectStore, objnos: list[int], last_len: int = S) -> None:
    for i, objno in enumerate(objnos):
        store.write(FID, objno, 0, bytes([objno]) * (last_len if i == len(objnos) - 1 else S))


def held(store: ObjectStore) -> dict[int, int]:
    return {
        objno: len(store.read(FID, objno, 0, 10 * S))
        for fid, objno in store.iter_objects()
        if fid == FID
    }


def test_truncate_into_held_object(store: ObjectStore) -> None:
    fill(store, [0, 2, 4, 6])  # column 0 of width 2
    store.truncate(FID, 2 * S + 30, S, 2, 0)
    assert held(store) == {0: S, 2: 30}
    assert store.read(FID, 2, 0, S) == bytes([2]) * 30
    assert store.held_size(FID, S) == 2 * S + 30


def test_truncate_into_other_columns_object(store: ObjectStore) -> None:
    fill(store, [0, 2, 4, 6])
    store.truncate(FID, 3 * S + 30, S, 2, 0)  # object 3 belongs to column 1
    assert held(store) == {0: S, 2: S}
    assert store.held_size(FID, S) == 3 * S


def test_truncate_at_object_boundary(store: ObjectStore) -> None:
    fill(store, [0, 1, 2])
    store.truncate(FID, 2 * S, S, 1, 0)
    assert held(store) == {0: S, 1: S}


def test_truncate_to_zero(store: ObjectStore) -> None:
    fill(store, [0, 1, 2])
    store.truncate(FID, 0, S, 1, 0)
    assert held(store) == {}
    assert store.held_size(FID, S) == 0


def test_truncate_grow_and_short_objects_left_alone(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"a" * 10)  # a short object: a hole follows it
    store.write(FID, 1, 0, b"b" * 50)
    store.truncate(FID, 10 * S, S, 1, 0)
    assert held(store) == {0: 10, 1: 50}
    store.truncate(FID, S + 20, S, 1, 0)
    assert held(store) == {0: 10, 1: 20}
    store.truncate(FID, 5, S, 1, 0)
    assert held(store) == {0: 5}


def test_truncate_missing_file_and_bad_arguments(store: ObjectStore) -> None:
    store.truncate(FID, 123, S, 1, 0)
    for args in [(-1, S, 1, 0), (0, 0, 1, 0), (0, S, 0, 0), (0, S, 2, 2), (0, S, 2, -1)]:
        with pytest.raises(XfsError) as e:
            store.truncate(FID, *args)
        assert e.value.code == errno.EINVAL


# ----------------------------------------------------------------------------- file ops
def test_held_size(store: ObjectStore) -> None:
    assert store.held_size(FID, S) == 0
    store.write(FID, 4, 0, b"x" * 7)
    store.write(FID, 1, 0, b"x" * S)
    store.write(OTHER, 9, 0, b"x")
    assert store.held_size(FID, S) == 4 * S + 7
    store.write(FID, 4, 0, b"", sync=True)  # an empty write at 0 keeps what is there
    assert store.read(FID, 4, 0, S) == b"x" * 7
    store.write(FID, 6, 0, b"")  # an empty object still says "up to here"
    assert store.held_size(FID, S) == 6 * S
    store.truncate(FID, 4 * S, S, 1, 0)
    assert store.held_size(FID, S) == 2 * S


def test_fsync_and_delete(store: ObjectStore) -> None:
    store.fsync(FID)  # nothing there: fine
    fill(store, [0, 1])
    store.write(OTHER, 0, 0, b"keep")
    store.fsync(FID)
    store.delete(FID)
    assert not store.file_dir(FID).exists()
    assert store.read(FID, 0, 0, S) == b""
    store.delete(FID)  # idempotent
    assert store.read(OTHER, 0, 0, S) == b"keep"
    assert list(store.iter_objects()) == [(OTHER, 0)]
    store.write(FID, 0, 0, b"again")  # a deleted file's directory comes back on write
    assert store.read(FID, 0, 0, S) == b"again"


def test_usage(store: ObjectStore) -> None:
    free, total = store.usage()
    assert 0 <= free <= total and total > 0


# ----------------------------------------------------------------------------- OS errors
def test_enospc_is_mapped_and_temp_removed(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write(FID, 0, 0, b"old")
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(XfsError) as e:
        store.write(FID, 0, 1, b"new")
    assert e.value.code == errno.ENOSPC
    monkeypatch.setattr(os, "write", real_write)
    assert os.listdir(store.file_dir(FID)) == ["0"]
    assert store.read(FID, 0, 0, 10) == b"old"


def test_edquot_on_replace_is_enospc_other_errors_eio(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for os_errno, code in [(errno.EDQUOT, errno.ENOSPC), (errno.EROFS, errno.EIO)]:

        def failing_replace(src: object, dst: object, _e: int = os_errno) -> None:
            raise OSError(_e, os.strerror(_e))

        monkeypatch.setattr(objects_mod.os, "replace", failing_replace)
        with pytest.raises(XfsError) as e:
            store.write(FID, 1, 0, b"data", sync=True)
        assert e.value.code == code
        assert "object 1" in e.value.message
        assert not store.file_dir(FID).exists() or os.listdir(store.file_dir(FID)) == []


# ----------------------------------------------------------------------------- truncate epochs
def test_epoch_codec() -> None:
    for epoch in (0, 1, 7, MAX_EPOCH):
        assert decode_epoch(encode_epoch(epoch)) == epoch
    raw = encode_epoch(5)
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ValueError):
            decode_epoch(bytes(flipped))
    for bad in (b"", raw[:-1], raw + b"\0"):
        with pytest.raises(ValueError):
            decode_epoch(bad)
    for epoch in (-1, MAX_EPOCH + 1, True):
        with pytest.raises(XfsError):
            encode_epoch(epoch)


def test_truncate_epoch_fences_older_writes_and_truncates(store: ObjectStore) -> None:
    store.write(FID, 0, 0, b"a" * 50, epoch=0)
    assert store.epoch(FID) == 0
    assert not (store.file_dir(FID) / EPOCH_NAME).exists()  # epoch 0 is never written
    store.truncate(FID, 10, S, 1, 0, epoch=3)
    assert store.epoch(FID) == 3
    assert decode_epoch((store.file_dir(FID) / EPOCH_NAME).read_bytes()) == 3
    for older in (0, 2):
        with pytest.raises(StaleEpoch) as e:
            store.write(FID, 0, 0, b"late", epoch=older)
        assert e.value.code == errno.EACCES and "older than 3" in e.value.message
        with pytest.raises(StaleEpoch):
            store.truncate(FID, 0, S, 1, 0, epoch=older)
    assert store.read(FID, 0, 0, 100) == b"a" * 10  # nothing refused landed
    store.write(FID, 0, 10, b"b", epoch=3)  # the same epoch and newer ones are fine
    store.truncate(FID, 5, S, 1, 0, epoch=3)  # a retry of the same truncate
    store.write(FID, 0, 5, b"c", epoch=9)  # a write does not raise the epoch
    assert store.epoch(FID) == 3
    assert store.read(FID, 0, 0, 100) == b"aaaaac"
    store.write(FID, 0, 0, b"z")  # no epoch: not fenced (local callers)
    # the epoch survives a restart, and is per file
    again = ObjectStore(store.root)
    again.open()
    assert again.epoch(FID) == 3 and again.epoch(OTHER) == 0
    with pytest.raises(StaleEpoch):
        again.write(FID, 0, 0, b"late", epoch=2)
    again.write(OTHER, 0, 0, b"x", epoch=0)
    assert scrub(again).ok


def test_truncate_epoch_of_a_file_never_written_here(store: ObjectStore) -> None:
    store.truncate(FID, 0, S, 2, 1, epoch=4)  # fences even before the first write
    assert store.epoch(FID) == 4
    with pytest.raises(StaleEpoch):
        store.write(FID, 1, 0, b"x", epoch=3)
    assert store.held_size(FID, S) == 0


def test_delete_forgets_the_epoch(store: ObjectStore) -> None:
    store.truncate(FID, 0, S, 1, 0, epoch=4)
    store.delete(FID)
    assert store.epoch(FID) == 0
    assert not store.file_dir(FID).exists()


def test_bad_epochs_are_refused_and_corrupt_ones_reported(store: ObjectStore) -> None:
    for bad in (-1, MAX_EPOCH + 1, "1"):
        with pytest.raises(XfsError) as e:
            store.truncate(FID, 0, S, 1, 0, epoch=bad)  # type: ignore[arg-type]
        assert e.value.code == errno.EINVAL
        with pytest.raises(XfsError) as e:
            store.write(FID, 0, 0, b"x", epoch=bad)  # type: ignore[arg-type]
        assert e.value.code == errno.EINVAL
    store.truncate(FID, 0, S, 1, 0, epoch=2)
    path = store.file_dir(FID) / EPOCH_NAME
    raw = bytearray(path.read_bytes())
    raw[12] ^= 1
    path.write_bytes(bytes(raw))
    fresh = ObjectStore(store.root)  # no cached epoch
    fresh.open()
    with pytest.raises(CorruptEpoch) as e:
        fresh.write(FID, 0, 0, b"x", epoch=5)
    assert e.value.code == errno.EIO
    assert scrub(fresh).bad_epochs == [FID] and not scrub(fresh).ok
    rel = os.path.relpath(store.file_dir(FID), store.root)
    (store.file_dir(FID) / f"{TEMP_PREFIX}{EPOCH_NAME}.0123456789abcdef").write_bytes(b"")
    (store.file_dir(FID) / "epochs").write_bytes(b"")
    assert scrub(fresh).stray == [f"{rel}/epochs"]


def test_truncate_waits_for_writes_in_flight(store: ObjectStore) -> None:
    """No write that passed the epoch check lands after a truncate that raised it."""
    store.write(FID, 0, 0, b"")
    stop = threading.Event()
    refused = 0

    def writer(n: int) -> None:
        nonlocal refused
        while not stop.is_set():
            try:
                store.write(FID, n, 0, b"w" * S, epoch=0)
            except StaleEpoch:
                refused += 1
                return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    store.truncate(FID, 0, S, 1, 0, epoch=1)
    held_after = store.held_bytes(FID)
    stop.set()
    for t in threads:
        t.join()
    assert held_after == 0 and store.held_bytes(FID) == 0
    assert refused == 4


def test_data_length_inverts_file_size() -> None:
    for length in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 1 << 20, (1 << 20) + 7]:
        size = object_format.file_size(object_format.VERSION, length)
        assert object_format.data_length(size) == length


def test_admitting_an_xloc_version_says_whether_the_file_was_held(store: ObjectStore) -> None:
    assert store.cached_xloc_version(FID) is None
    assert store.admit_xloc(FID, 1) == (0, False)  # new here
    assert store.cached_xloc_version(FID) == 1
    store.write(FID, 0, 0, b"x")
    assert store.admit_xloc(FID, 2) == (1, True)
    assert store.held_bytes(FID) == 1


@pytest.mark.parametrize("length", [0, 100, BLOCK, BLOCK + 1, 1 << 20, 5 << 20])
def test_the_spans_of_a_range_cover_every_read_of_it(length: int) -> None:
    """``spans`` says, from the file's size alone, which bytes ``read_range`` reads; the
    reads that follow the hint then find their pages asked for already."""
    data = os.urandom(length)
    raw = object_format.encode(data) + data
    for offset, count in ((0, 1), (0, length), (length // 3, 4096), (max(0, length - 1), 10),
                          (max(0, length - 5000), 5000), (length + 10, 4096)):
        reads: list[tuple[int, int]] = []

        def pread(n: int, at: int, reads: list[tuple[int, int]] = reads) -> bytes:
            reads.append((n, at))
            return raw[at : at + n]

        got = object_format.read_range(pread, len(raw), offset, count)
        assert got == data[offset : offset + count]
        hinted = object_format.spans(len(raw), offset, count)
        covered = bytearray(len(raw))
        for n, at in hinted:
            covered[at : at + n] = b"\1" * len(covered[at : at + n])
        for n, at in reads:
            assert all(covered[at : at + n]), f"read of {n} at {at} not hinted: {hinted}"
        assert sum(n for n, _ in hinted) <= 2 * BLOCK + 4 * object_format.blocks(length) + count
