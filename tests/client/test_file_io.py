"""Striped I/O of the client library against in-memory OSDs (no kernel, no network)."""

from __future__ import annotations

import errno
import os
import random
from typing import Any

import pytest
import trio

from xfs.client import file_io
from xfs.client.file_io import OpenFile
from xfs.common.health import Health
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, Empty, FileOp, ObjData, ObjRead, ObjWrite, Synced
from xfs.proto.records import Attr, FileLayout, Replica, StripingPolicy, XCap, XLocSet

STRIPE = 4096
OSDS = ["o0", "o1", "o2"]


class FakeSession:
    """What OpenFile needs of a Session, with OSDs as dicts of objects."""

    def __init__(self, nursery: trio.Nursery, fail_writes: int = 0, fail_reads: int = 0) -> None:
        self.nursery = nursery
        self.xcap_renew_margin = 60.0
        self.write_window = 16
        self.read_cache_objects = 16
        self.read_ahead = 3  # the stripe width: prefetch as the tests expect
        self.local_reads = None  # no OSD on this host: every read is a call
        self.now = 1000.0
        self.objects: dict[tuple[str, int], bytearray] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.read_lengths: list[int] = []
        self.writes: list[ObjWrite] = []
        self.reported: list[int] = []
        self.mrc_syncs = 0
        self.synced_writes: list[int] = []  # objects written with ObjWrite.sync
        self.reopened = 0
        self.fail_writes = fail_writes
        self.fail_reads = fail_reads
        self.io_timeout = 5.0
        self.osd_timeout = 2.0
        self.health = Health()

    def clock(self) -> float:
        return self.now

    def layout(self, size: int = 0, expires: float = 2000) -> FileLayout:
        xloc = XLocSet(1, [Replica(OSDS, StripingPolicy(STRIPE, len(OSDS)))])
        xcap = XCap("vol", 5, 7, 0, 1, xloc.digest(), 0, int(expires), b"", "k")
        attr = Attr(5, 0o100644, 1, "a@v", "g@v", size, 0, 0, 0)
        return FileLayout(attr, xloc, xcap, {o: "h:1" for o in OSDS})

    async def reopen(self, ino: int, flags: int, *, want: int = 0) -> FileLayout:
        self.reopened += 1
        return self.layout(expires=self.now + 600)

    async def update_size(self, ino: int, size: int, xcap: XCap, *, sync: bool = False) -> None:
        self.reported.append(size)
        self.mrc_syncs += sync

    async def sync(self) -> None:
        self.mrc_syncs += 1

    async def osd_call(self, layout: FileLayout, osd: str, method: Any, req: Any) -> Any:
        await trio.sleep(random.random() * 0.001)
        if method is OSD.write:
            assert isinstance(req, ObjWrite)
            assert osd == OSDS[req.objno % len(OSDS)]
            self.calls.append(("write", osd, req.objno))
            if req.sync:
                self.synced_writes.append(req.objno)
            if self.fail_writes:
                self.fail_writes -= 1
                raise XfsError(errno.ENOSPC, "OSD full")
            obj = self.objects.setdefault((osd, req.objno), bytearray())
            taken = 0
            for at, n in req.extents or [(req.offset, len(req.data))]:
                if len(obj) < at + n:
                    obj.extend(bytes(at + n - len(obj)))
                obj[at : at + n] = req.data[taken : taken + n]
                taken += n
            assert taken == len(req.data)
            self.writes.append(req)
            return Empty()
        if method is OSD.read:
            assert isinstance(req, ObjRead)
            self.calls.append(("read", osd, req.objno))
            self.read_lengths.append(req.length)
            if self.fail_reads:
                self.fail_reads -= 1
                raise XfsError(errno.EIO, "OSD read failed")
            obj = self.objects.get((osd, req.objno), bytearray())
            return ObjData(bytes(obj[req.offset : req.offset + req.length]))
        if method is OSD.fsync:
            assert isinstance(req, FileOp)
            self.calls.append(("fsync", osd, -1))
            held = [o for (owner, _), o in self.objects.items() if owner == osd]
            return Synced(sum(len(o) for o in held))
        raise AssertionError(method)


def run(fn: Any) -> None:
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                await fn(FakeSession(n))

    trio.run(main)


async def stored(s: FakeSession, data: bytes) -> OpenFile:
    """A file holding ``data`` on the OSDs (written and flushed through an OpenFile,
    which is returned), with the calls and writes that took forgotten."""
    f = OpenFile(s, 5, s.layout(), 2)  # type: ignore[arg-type]
    await f.write(0, data)
    await f.flush()
    s.calls.clear()
    s.writes.clear()
    return f


@pytest.mark.parametrize("seed", range(6))
def test_random_writes_and_reads_match_a_model(seed: int) -> None:
    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(), 2)  # type: ignore[arg-type]
        f.opened(2)
        model = bytearray()
        rng = random.Random(seed)
        random.seed(seed)
        for _ in range(400):
            off = rng.randrange(0, 6 * STRIPE)
            if rng.random() < 0.6:
                data = rng.randbytes(rng.randrange(1, 3 * STRIPE))
                await f.write(off, data)
                if len(model) < off + len(data):
                    model.extend(bytes(off + len(data) - len(model)))
                model[off : off + len(data)] = data
            else:
                n = rng.randrange(0, 3 * STRIPE)
                assert await f.read(off, n) == bytes(model[off : off + n])
            assert f.size == len(model)
        await f.flush()
        assert s.reported[-1] == len(model)
        # a fresh handle (close-to-open) reads everything back from the OSDs
        g = OpenFile(s, 5, s.layout(size=len(model)), 0)  # type: ignore[arg-type]
        assert await g.read(0, len(model) + 10) == bytes(model)

    run(main)


def test_sequential_writes_go_out_as_whole_objects_on_every_column() -> None:
    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(), 1)  # type: ignore[arg-type]
        for i in range(12):
            await f.write(i * 1024, bytes([i]) * 1024)  # 12 KiB = 3 objects
        await f.flush()
        writes = [c for c in s.calls if c[0] == "write"]
        assert sorted(w[2] for w in writes) == [0, 1, 2]  # one request per object
        assert {w[1] for w in writes} == set(OSDS)

    run(main)


def test_reads_fetch_whole_objects_once_and_prefetch() -> None:
    async def main(s: FakeSession) -> None:
        data = random.Random(1).randbytes(6 * STRIPE)
        await stored(s, data)
        g = OpenFile(s, 5, s.layout(size=len(data)), 0)  # type: ignore[arg-type]
        out = b"".join([await g.read(off, 1024) for off in range(0, len(data), 1024)])
        assert out == data
        reads = [c[2] for c in s.calls if c[0] == "read"]
        assert sorted(reads) == list(range(6))  # each object fetched exactly once

    run(main)



def test_a_read_elsewhere_fetches_only_its_range() -> None:
    """A read that does not follow the last one fetches its own bytes, uncached and with
    no prefetch; reading on from there fetches and caches whole objects again."""

    async def main(s: FakeSession) -> None:
        data = random.Random(2).randbytes(6 * STRIPE)
        await stored(s, data)
        g = OpenFile(s, 5, s.layout(size=len(data)), 0)  # type: ignore[arg-type]
        assert await g.read(4 * STRIPE + 100, 512) == data[4 * STRIPE + 100 : 4 * STRIPE + 612]
        # across an object boundary: two ranges, each only what is read
        off = 2 * STRIPE - 256
        assert await g.read(off, 512) == data[off : off + 512]
        assert s.read_lengths == [512, 256, 256]
        # sequential from there: whole objects, and the next ones prefetched
        assert await g.read(off + 512, 512) == data[off + 512 : off + 1024]
        await trio.sleep(0.05)
        assert STRIPE in s.read_lengths[3:]
        assert await g.read(len(data) - 10, 100) == data[-10:]

    run(main)

def test_reading_back_unsent_writes_asks_no_osd_and_sends_nothing() -> None:
    """Bytes written and not sent yet are laid over the OSD's: a read within them is
    answered from the buffer, a read across them fetches only its range, and neither
    sends the buffer (it waits for close or fsync as before)."""

    async def main(s: FakeSession) -> None:
        old = random.Random(3).randbytes(2 * STRIPE)
        f = await stored(s, old)
        new = b"n" * 1000
        await f.write(STRIPE + 100, new)  # part of object 1, unsent
        want = bytearray(old)
        want[STRIPE + 100 : STRIPE + 1100] = new
        assert await f.read(STRIPE + 200, 500) == new[100:600]
        assert s.calls == []  # within the unsent bytes: no OSD at all
        assert await f.read(STRIPE - 50, 2000) == bytes(want[STRIPE - 50 : STRIPE + 1950])
        assert [c[0] for c in s.calls] == ["read", "read"]  # object 0 and object 1's range
        # past the end of the file the buffer makes: the hole between reads as zeros
        await f.write(2 * STRIPE + 3000, b"tail")
        got = await f.read(2 * STRIPE, 3004)
        assert got == bytes(3000) + b"tail"
        assert not [c for c in s.calls if c[0] == "write"]
        await f.flush()
        want.extend(bytes(3000) + b"tail")
        g = OpenFile(s, 5, s.layout(size=len(want)), 0)  # type: ignore[arg-type]
        assert await g.read(0, len(want)) == bytes(want)

    run(main)


@pytest.mark.parametrize("seed", range(4))
def test_reads_racing_background_sends_see_every_write_before_them(seed: int) -> None:
    """Whole objects go out in the background while the same file is read: each read
    started after a write returns it, whether the send is unsent, under way or landed."""

    async def main(s: FakeSession) -> None:
        s.write_window = 1  # few slots: sends queue behind each other
        f = OpenFile(s, 5, s.layout(), 2)  # type: ignore[arg-type]
        rng = random.Random(seed)
        model = bytearray()
        for _ in range(300):
            off = rng.randrange(0, 8 * STRIPE)
            if rng.random() < 0.5:
                n = STRIPE if rng.random() < 0.3 else rng.randrange(1, 2 * STRIPE)
                off = off // STRIPE * STRIPE if n == STRIPE else off
                data = rng.randbytes(n)
                await f.write(off, data)
                if len(model) < off + n:
                    model.extend(bytes(off + n - len(model)))
                model[off : off + n] = data
            else:
                n = rng.randrange(1, 3 * STRIPE)
                assert await f.read(off, n) == bytes(model[off : off + n])
        await f.flush()
        g = OpenFile(s, 5, s.layout(size=len(model)), 0)  # type: ignore[arg-type]
        assert await g.read(0, len(model)) == bytes(model)

    run(main)


def test_scattered_writes_to_an_object_go_out_as_one_write() -> None:
    """Writes here and there in one object gather, and go out together: one osd.write
    carrying each range (the OSD patches the object once), not one per write."""

    async def main(s: FakeSession) -> None:
        base = random.Random(4).randbytes(STRIPE)
        f = await stored(s, base)
        want = bytearray(base)
        for at in (3000, 10, 500, 13, 2000):
            await f.write(at, b"w" * 4)
            want[at : at + 4] = b"w" * 4
        assert s.writes == []  # gathered
        await f.flush()
        (write,) = s.writes
        assert write.extents == ((10, 7), (500, 4), (2000, 4), (3000, 4))  # 10-13 joined
        assert write.offset == 10 and len(write.data) == 19
        g = OpenFile(s, 5, s.layout(size=STRIPE), 0)  # type: ignore[arg-type]
        assert await g.read(0, STRIPE) == bytes(want)

    run(main)


def test_unsent_bytes_are_bounded_not_the_objects_they_touch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small writes scattered over many objects stay gathered until the file's unsent
    bytes pass the limit; then the oldest objects go out first."""
    monkeypatch.setattr(file_io, "DIRTY_LIMIT_BYTES", 40 * 100)

    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(), 2)  # type: ignore[arg-type]
        for objno in range(40):  # 40 objects, 100 bytes each: at the limit
            await f.write(objno * STRIPE + 7, b"s" * 100)
        assert s.writes == []
        await f.write(40 * STRIPE, b"t" * 100)  # past it: object 0 goes out
        while not s.writes:  # (run's deadline bounds the wait)
            await trio.sleep(0.001)
        assert [w.objno for w in s.writes] == [0]
        await f.flush_data()
        assert sorted(w.objno for w in s.writes) == list(range(41))

    run(main)


def test_holes_read_as_zeros() -> None:
    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(), 2)  # type: ignore[arg-type]
        await f.write(5 * STRIPE + 10, b"end")
        await f.flush()
        assert await f.read(0, 5 * STRIPE + 13) == bytes(5 * STRIPE + 10) + b"end"

    run(main)


def test_background_write_errors_surface_on_flush() -> None:
    async def main(s: FakeSession) -> None:
        s.fail_writes = 1
        f = OpenFile(s, 5, s.layout(), 1)  # type: ignore[arg-type]
        await f.write(0, b"x" * STRIPE)
        with pytest.raises(XfsError) as e:
            await f.flush()
        assert e.value.code == errno.ENOSPC
        assert s.reported == []  # the size is not reported for data that did not land

    run(main)


def test_expiring_xcap_is_renewed_before_use() -> None:
    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(expires=1030), 1)  # type: ignore[arg-type]
        await f.write(0, b"x" * STRIPE)
        await f.flush()
        assert s.reopened == 1
        assert f.layout.xcap.expires == s.now + 600

    run(main)


def test_fsync_reaches_every_osd() -> None:
    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(), 1)  # type: ignore[arg-type]
        await f.write(0, b"y")
        await f.fsync()
        assert {c[1] for c in s.calls if c[0] == "fsync"} == set(OSDS)
        assert s.reported == [1] and s.mrc_syncs == 1  # the size and the journal, at once
        assert s.synced_writes == []

    run(main)


def test_a_new_file_written_whole_is_fsynced_by_durable_writes() -> None:
    """A file this session created, all of whose data is dirty at fsync(2), goes out
    with ObjWrite.sync: no OSD fsync round trip after it. Anything less takes the
    normal way."""

    async def main(s: FakeSession) -> None:
        data = os.urandom(STRIPE - 100)  # (a whole object goes out at once, not durably)
        f = OpenFile(s, 5, s.layout(), 1)  # type: ignore[arg-type]
        f.fresh = True
        await f.write(0, data[:100])
        await f.write(100, data[100:])
        await f.fsync()
        assert s.synced_writes == [0]
        assert not [c for c in s.calls if c[0] == "fsync"]
        assert s.reported == [len(data)] and s.mrc_syncs == 1
        assert f.allocated == (len(data), len(data))
        await f.write(len(data), b"more")  # no longer all dirty: an OSD fsync again
        await f.fsync()
        assert {c[1] for c in s.calls if c[0] == "fsync"} == set(OSDS)
        assert s.synced_writes == [0]

        s.calls.clear()
        g = OpenFile(s, 6, s.layout(), 1)  # type: ignore[arg-type]
        g.fresh = True
        await g.write(STRIPE, b"a hole before me")  # not dense from byte 0
        await g.fsync()
        assert {c[1] for c in s.calls if c[0] == "fsync"} == set(OSDS)

    run(main)


def test_renewal_flags_merge_access_modes_and_never_truncate() -> None:
    from xfs.client.file_io import merge_open_flags

    r, w, rw = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
    assert merge_open_flags(None, w | os.O_TRUNC | os.O_CREAT) == w
    assert merge_open_flags(r, w) == rw
    assert merge_open_flags(w, rw) == rw
    assert merge_open_flags(r, r) == r
    assert merge_open_flags(w, r | os.O_APPEND) == rw | os.O_APPEND


def test_close_makes_written_data_durable_but_not_a_read_only_close() -> None:
    async def main(s: FakeSession) -> None:
        f = OpenFile(s, 5, s.layout(), 1)  # type: ignore[arg-type]
        await f.write(0, b"z")
        await f.flush()
        assert {c[1] for c in s.calls if c[0] == "fsync"} == set(OSDS)
        s.calls.clear()
        await f.flush()
        assert not [c for c in s.calls if c[0] == "fsync"]

    run(main)


def test_readers_waiting_on_a_failed_fetch_fetch_once_more_together() -> None:
    async def main(s: FakeSession) -> None:
        data = bytes(range(256)) * (STRIPE // 256)
        s.objects[(OSDS[0], 0)] = bytearray(data)
        f = OpenFile(s, 5, s.layout(size=STRIPE), 0)  # type: ignore[arg-type]
        s.fail_reads = 1
        results: list[bytes | BaseException] = []

        async def reader() -> None:
            try:
                results.append(await f.read(0, STRIPE))
            except XfsError as e:  # (a read of one object runs in no nursery)
                results.append(e)

        async with trio.open_nursery() as n:
            for _ in range(4):
                n.start_soon(reader)
        # the first fetch failed for its reader; the waiters fetched again, once
        assert sum(isinstance(r, XfsError) for r in results) == 1
        assert [r for r in results if isinstance(r, bytes)] == [data] * 3
        assert [c for c in s.calls if c[0] == "read"] == [("read", OSDS[0], 0)] * 2

    run(main)
