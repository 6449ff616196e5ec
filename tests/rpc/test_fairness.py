"""A peer's calls that the server holds open waiting (locks, long polls) never keep its
other requests from being read and answered: they count against the connection's
waits (``max_waiting``), not its requests in progress (``max_inflight``)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import trio

from tests.conftest import PKI
from tests.rpc.ingrid import open_grid, run_within
from xfs.proto.methods import MRC, Create, Empty, Ino, LockArgs, Open, VolumeCreate
from xfs.proto.records import Kind


def test_blocked_lock_waits_leave_the_connection_serving(pki: PKI, tmp_path: Path) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with open_grid(pki, tmp_path, osds=1) as grid, \
                grid.client(grid.root_user) as admin, grid.client(alice) as pool:
            await admin.call(grid.mrc_address, MRC.volume_create,
                             VolumeCreate("v", owner="alice@physics", mode=0o755),
                             expect=Kind.MRC)

            async def mrc(method: object, request: object) -> object:
                return await pool.call(grid.mrc_address, method, request,  # type: ignore
                                       expect=Kind.MRC)

            made = await mrc(MRC.create, Create("v", 1, b"f", stat.S_IFREG | 0o644,
                                                os.O_CREAT | os.O_RDWR))
            ino = made.attr.ino  # type: ignore[attr-defined]
            holder = (await mrc(MRC.client_open, Empty())).client  # type: ignore
            waiter = (await mrc(MRC.client_open, Empty())).client  # type: ignore
            for client in (holder, waiter):  # (a lock is taken through an open file)
                await mrc(MRC.open, Open("v", ino, os.O_RDWR, client))
            held = await mrc(MRC.lock, LockArgs("v", ino, holder, 1, "flock", "write", 0, 0))
            assert held.granted  # type: ignore[attr-defined]
            async with trio.open_nursery() as n:
                for owner in range(100):  # more than the 64 requests in progress allowed
                    n.start_soon(mrc, MRC.lock, LockArgs("v", ino, waiter, 100 + owner,
                                                         "flock", "write", 0, 0, wait=30.0))
                await trio.sleep(1.0)  # all of them blocked on the MRC
                worst = 0.0
                for _ in range(20):
                    start = time.monotonic()
                    attr = await mrc(MRC.getattr, Ino("v", ino))
                    worst = max(worst, time.monotonic() - start)
                    assert attr.ino == ino  # type: ignore[attr-defined]
                assert worst < 1.0, worst
                n.cancel_scope.cancel()

    run_within(60, main)
