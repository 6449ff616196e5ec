"""Quotas over a real in-process grid (docs/design/quotas.md): vouchers in write XCaps,
enforced by the OSD with EDQUOT, reserved until the holder closes; files limits at the
MRC; who may set and see quotas; statfs. (Over a FUSE mount with two local users:
tests/fuse/test_quota_mount.py; the usage counts themselves: tests/unit/test_quota_usage.py.)"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tests.conftest import PKI
from tests.rpc.ingrid import Grid, mrc_call, open_grid, run_within
from xfs.common.rpc import Pool
from xfs.mrc.quotas import VOUCHER
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    OSD,
    ClientId,
    Close,
    Create,
    DirLeaseAsk,
    Empty,
    LeaseReturn,
    MkNod,
    ObjWrite,
    Open,
    QuotaSet,
    UpdateSize,
    VolumeCreate,
    VolumeName,
)
from xfs.proto.records import ROOT_INO, FileLayout, StripingPolicy

DEADLINE = 60
STRIPE = 4096
VOLUME = "quoted"
LIMIT = 10 * STRIPE  # alice's bytes (one replica per file here)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    run_within(DEADLINE, fn)


async def write(grid: Grid, pool: Pool, layout: FileLayout, objno: int, data: bytes) -> None:
    (osd,) = layout.xloc.replicas[0].osds
    await pool.call(
        grid.osd_addresses[osd],
        OSD.write,
        ObjWrite(layout.xcap, layout.xloc, objno, 0, data),
        expect=f"osd:{osd}",
    )


async def refused(code: int, call: Awaitable[object]) -> XfsError:
    with pytest.raises(XfsError) as info:
        await call
    assert info.value.code == code, info.value
    return info.value


def test_vouchers_hold_a_writer_to_its_quota(pki: PKI, tmp_path: Path) -> None:
    alice = pki.user("alice", groups=("alice", "users"))
    bob = pki.user("bob", groups=("bob", "users"))

    async def main() -> None:
        async with open_grid(pki, tmp_path, osds=1) as grid:
            async with grid.client(grid.root_user) as admin:
                await mrc_call(grid, admin, MRC.volume_create, VolumeCreate(
                    VOLUME, owner="alice@physics", mode=0o777, striping=StripingPolicy(STRIPE, 1)))
                await mrc_call(grid, admin, MRC.quota_set,
                               QuotaSet(VOLUME, "alice@physics", files=4, bytes=LIMIT))
            async with grid.client(alice) as pool, grid.client(bob) as other:
                client = (await mrc_call(grid, pool, MRC.client_open, Empty())).client

                async def create(p: Pool, name: bytes) -> FileLayout:
                    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
                    layout: FileLayout = await mrc_call(grid, p, MRC.create, Create(
                        VOLUME, ROOT_INO, name, stat.S_IFREG | 0o644, flags,
                        client=client if p is pool else None))
                    return layout

                # a new file's voucher is what the quota leaves (less than a step)
                first = await create(pool, b"first")
                assert first.xcap.max_size == LIMIT < VOUCHER
                await write(grid, pool, first, 0, b"a" * STRIPE)
                await write(grid, pool, first, 9, b"a" * STRIPE)  # ends at LIMIT: fits
                e = await refused(errno.EDQUOT, write(grid, pool, first, 10, b"a"))
                assert "quota voucher" in e.message
                # the first voucher reserves the rest: a second file gets no room...
                second = await create(pool, b"second")
                assert second.xcap.max_size == 0
                await refused(errno.EDQUOT, write(grid, pool, second, 0, b"b"))
                # ...until the first is closed at the size it reached
                await mrc_call(grid, pool, MRC.update_size,
                               UpdateSize(VOLUME, first.attr.ino, 6 * STRIPE, first.xcap))
                await mrc_call(grid, pool, MRC.close, Close(VOLUME, first.attr.ino, client))
                again = await mrc_call(grid, pool, MRC.open,
                                       Open(VOLUME, second.attr.ino, os.O_RDWR, client))
                assert again.xcap.max_size == 4 * STRIPE
                await write(grid, pool, again, 3, b"b" * STRIPE)
                # asking for more than is left gets what is left
                ask = Open(VOLUME, second.attr.ino, os.O_RDWR, client, 99 * STRIPE)
                wider = await mrc_call(grid, pool, MRC.open, ask)
                assert wider.xcap.max_size == 4 * STRIPE
                # the files quota (the root is hers too): a third file fits, a fourth not
                await create(pool, b"third")
                e = await refused(errno.EDQUOT, create(pool, b"fourth"))
                assert "alice@physics's quota of 4 files" in e.message
                # bob has no quota: no voucher limit, whatever alice used
                free = await create(other, b"bobs")
                assert free.xcap.max_size == -1
                # df as alice shows her quota
                fs = await mrc_call(grid, pool, MRC.statfs, VolumeName(VOLUME))
                assert fs.blocks * fs.block_size == LIMIT
                assert (fs.files, fs.files_free) == (4, 0)
                # alice may not set quotas, and bob does not see hers
                await refused(errno.EPERM, mrc_call(grid, pool, MRC.quota_set,
                                                    QuotaSet(VOLUME, "alice@physics")))
                seen = await mrc_call(grid, other, MRC.quota_list, VolumeName(VOLUME))
                assert seen.quotas == []
                mine = await mrc_call(grid, pool, MRC.quota_list, VolumeName(VOLUME))
                (q,) = mine.quotas
                assert (q.principal, q.files_limit, q.bytes_limit, q.files) == (
                    "alice@physics", 4, LIMIT, 4)
                assert q.bytes == 6 * STRIPE  # (the second file's size is not reported yet)
                await mrc_call(grid, pool, MRC.client_close, ClientId(client))

    run(main)


def test_a_files_quota_recalls_the_directory_leases_it_holds(pki: PKI, tmp_path: Path) -> None:
    alice = pki.user("alice", groups=("alice", "users"))

    async def main() -> None:
        async with (
            open_grid(pki, tmp_path, osds=1) as grid,
            grid.client(grid.root_user) as admin,
            grid.client(alice) as pool,
        ):
            await mrc_call(grid, admin, MRC.volume_create, VolumeCreate(
                VOLUME, owner="alice@physics", mode=0o777, striping=StripingPolicy(STRIPE, 1)))
            client = (await mrc_call(grid, pool, MRC.client_open, Empty())).client
            d = await mrc_call(grid, pool, MRC.mkdir,
                               MkNod(VOLUME, ROOT_INO, b"mine", stat.S_IFDIR | 0o755))
            ask = DirLeaseAsk(VOLUME, d.ino, client)
            assert (await mrc_call(grid, pool, MRC.dir_lease, ask)).granted
            done = trio.Event()

            async def set_quota() -> None:
                await mrc_call(grid, admin, MRC.quota_set,
                               QuotaSet(VOLUME, "alice@physics", files=10))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(set_quota)
                await trio.sleep(0.3)
                assert not done.is_set()  # it waits for the lease to come back
                with trio.fail_after(5):  # (a silent holder would take 20 s)
                    await mrc_call(grid, pool, MRC.dir_lease_return,
                                   LeaseReturn(VOLUME, d.ino, client))
                    await done.wait()
            # and no new one while the quota holds her files
            assert not (await mrc_call(grid, pool, MRC.dir_lease, ask)).granted

    run(main)
