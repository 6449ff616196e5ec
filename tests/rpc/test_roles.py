"""Roles scoped to VOs over a real in-process grid (mutual TLS, MRC and OSDs).

A super user administers the volumes of its own VO only and is a standard user anywhere
else; a standard user calling an administrative method is refused with EPERM naming the
role needed, and audited, while a well-behaved client on other connections keeps being
served; a worker on its own may do nothing. (Delegations: test_delegation.py.)
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.conftest import PKI
from tests.rpc.ingrid import Grid, assert_denied_and_audited, mrc_call, open_grid, run_within
from xfs.common.ca import CertPaths
from xfs.common.rpc import Pool
from xfs.proto.methods import (
    MRC,
    OSD,
    ClientId,
    Create,
    Empty,
    Ino,
    Lookup,
    Method,
    ObjRead,
    ObjWrite,
    Open,
    SetAttr,
    VolumeCreate,
    VolumeName,
)
from xfs.proto.records import ROOT_INO, FileLayout, Role, StripingPolicy

DEADLINE = 60
STRIPE = 4096
VOLUME = "alpha"
DATA = b"alice's private data" * 10


def run(fn: Callable[[], Awaitable[None]]) -> None:
    run_within(DEADLINE, fn)


mrc = mrc_call


async def read_object(grid: Grid, pool: Pool, layout: FileLayout) -> bytes:
    (osd,) = layout.xloc.replicas[0].osds
    reply = await pool.call(grid.osd_addresses[osd], OSD.read,
                            ObjRead(layout.xcap, layout.xloc, 0, 0, STRIPE), expect=f"osd:{osd}")
    data: bytes = reply.data
    return data


@dataclass
class Site:
    """A grid with volume ``alpha`` of alice@physics (0755) holding her 0600 file."""

    grid: Grid
    alice: CertPaths
    secret: FileLayout

    async def still_serves(self) -> None:
        """alice, on new connections, reads her file back intact."""
        async with self.grid.client(self.alice) as pool:
            layout = await mrc(self.grid, pool, MRC.open,
                               Open(VOLUME, self.secret.attr.ino, os.O_RDONLY))
            assert await read_object(self.grid, pool, layout) == DATA


@asynccontextmanager
async def site(pki: PKI, root: Path) -> AsyncIterator[Site]:
    alice = pki.user("alice", groups=("alice", "users"))
    async with open_grid(pki, root, osds=1) as grid:
        async with grid.client(grid.root_user) as admin:
            await mrc(grid, admin, MRC.volume_create, VolumeCreate(
                VOLUME, owner="alice@physics", mode=0o755, striping=StripingPolicy(STRIPE, 1)))
        async with grid.client(alice) as pool:
            secret = await mrc(grid, pool, MRC.create, Create(
                VOLUME, ROOT_INO, b"secret", stat.S_IFREG | 0o600,
                os.O_CREAT | os.O_EXCL | os.O_RDWR))
            (osd,) = secret.xloc.replicas[0].osds
            await pool.call(grid.osd_addresses[osd], OSD.write,
                            ObjWrite(secret.xcap, secret.xloc, 0, 0, DATA), expect=f"osd:{osd}")
        yield Site(grid, alice, secret)


@asynccontextmanager
async def busy_reader(s: Site) -> AsyncIterator[list[int]]:
    """A well-behaved client reading alice's file over and over on its own connections
    while the block runs; yields the count of good reads (checked to grow)."""
    reads = [0]
    async with trio.open_nursery() as n, s.grid.client(s.alice) as pool:

        async def loop() -> None:
            while True:
                layout = await mrc(s.grid, pool, MRC.open,
                                   Open(VOLUME, s.secret.attr.ino, os.O_RDONLY))
                assert await read_object(s.grid, pool, layout) == DATA
                reads[0] += 1
                await trio.sleep(0.01)

        n.start_soon(loop)
        yield reads
        before = reads[0]
        with trio.fail_after(10):
            while reads[0] < before + 2:
                await trio.sleep(0.01)
        n.cancel_scope.cancel()


# ----------------------------------------------------------------------------- super
def test_super_of_another_vo_is_standard_on_this_vo(pki: PKI, tmp_path: Path) -> None:
    boss = pki.user("chemboss", role=Role.SUPER, vo_ca=pki.other_vo_ca)

    async def main() -> None:
        async with site(pki, tmp_path) as s:
            grid, ino = s.grid, s.secret.attr.ino
            async with grid.client(boss) as pool:
                await assert_denied_and_audited(
                    grid, mrc(grid, pool, MRC.volume_delete, VolumeName(VOLUME)),
                    actor="chemboss@chem", action="mrc.volume_delete/1", code=errno.EPERM,
                    reason="may not delete volume 'alpha': it needs role super of VO 'physics'",
                    still_serves=s.still_serves)
                await assert_denied_and_audited(
                    grid, mrc(grid, pool, MRC.open, Open(VOLUME, ino, os.O_RDONLY)),
                    actor="chemboss@chem", action="mrc.open/1", reason="permission denied",
                    still_serves=s.still_serves)
                for change in ({"mode": 0o644}, {"owner": "chemboss@chem"}):
                    await assert_denied_and_audited(
                        grid, mrc(grid, pool, MRC.setattr, SetAttr(VOLUME, ino, **change)),
                        actor="chemboss@chem", action="mrc.setattr/1", code=errno.EPERM,
                        reason="permission denied", still_serves=s.still_serves)
                await assert_denied_and_audited(
                    grid, mrc(grid, pool, MRC.volume_create,
                              VolumeCreate("stolen", owner="alice@physics")),
                    actor="chemboss@chem", action="mrc.volume_create/1", code=errno.EPERM,
                    reason="super of VO 'chem' only", still_serves=s.still_serves)
                # in its own VO it administers as before
                info = await mrc(grid, pool, MRC.volume_create, VolumeCreate("chemvol"))
                assert info.owner == "chemboss@chem"
                await mrc(grid, pool, MRC.volume_delete, VolumeName("chemvol"))
                # and it sees what anyone sees (names, attributes)
                attr = await mrc(grid, pool, MRC.getattr, Ino(VOLUME, ino))
                assert attr.owner == "alice@physics" and attr.mode & 0o777 == 0o600
            # the super user of the volume's own VO still plays root on it
            async with grid.client(grid.root_user) as pool:
                layout = await mrc(grid, pool, MRC.open, Open(VOLUME, ino, os.O_RDONLY))
                assert await read_object(grid, pool, layout) == DATA
            await s.still_serves()

    run(main)


# ----------------------------------------------------------------------------- standard
def test_standard_user_calling_admin_operations(pki: PKI, tmp_path: Path) -> None:
    dave = pki.user("dave", role=Role.ADVANCED)
    calls: list[tuple[Method[Any, Any], Any, str]] = [
        (MRC.volume_create, VolumeCreate("mine"), "role super"),
        (MRC.volume_delete, VolumeName(VOLUME), "role super"),
        (MRC.status, Empty(), "role advanced or super"),
        (MRC.osd_list, Empty(), "role advanced or super"),
    ]

    async def main() -> None:
        async with site(pki, tmp_path) as s:
            grid = s.grid
            async with busy_reader(s) as reads, grid.client(s.alice) as pool:
                for method, request, needs in calls:
                    await assert_denied_and_audited(
                        grid, mrc(grid, pool, method, request), actor="alice@physics",
                        action=method.wire_name, code=errno.EPERM,
                        reason=f"alice@physics (user/standard) may not call "
                        f"{method.wire_name}: it needs {needs}",
                        still_serves=s.still_serves)
                # the refused connection itself goes on serving alice's ordinary calls
                attr = await mrc(grid, pool, MRC.getattr, Ino(VOLUME, s.secret.attr.ino))
                assert attr.owner == "alice@physics"
            assert reads[0] > 0
            # advanced: the operator's views, but no administration
            async with grid.client(dave) as pool:
                status = await mrc(grid, pool, MRC.status, Empty())
                assert [v.name for v in status.volumes] == [VOLUME]
                assert len((await mrc(grid, pool, MRC.osd_list, Empty())).osds) == 1
                for method, request, needs in calls[:2]:
                    await assert_denied_and_audited(
                        grid, mrc(grid, pool, method, request), actor="dave@physics",
                        action=method.wire_name, code=errno.EPERM, reason=needs,
                        still_serves=s.still_serves)

    run(main)


# ----------------------------------------------------------------------------- worker
def test_worker_without_delegation_may_do_nothing(pki: PKI, tmp_path: Path) -> None:
    worker = pki.user("wk0", role=Role.WORKER)
    calls: list[tuple[Method[Any, Any], Any]] = [
        (MRC.lookup, Lookup(VOLUME, ROOT_INO, b"secret")),
        (MRC.getattr, Ino(VOLUME, ROOT_INO)),
        (MRC.volume_get, VolumeName(VOLUME)),
        (MRC.volume_list, Empty()),
        (MRC.client_open, Empty()),
        (MRC.client_renew, ClientId("x")),
        (MRC.delegation_list, Empty()),
        (MRC.status, Empty()),
        (MRC.volume_create, VolumeCreate("w")),
    ]

    async def main() -> None:
        async with site(pki, tmp_path) as s:
            grid = s.grid
            async with busy_reader(s), grid.client(worker) as pool:
                for method, request in calls:
                    await assert_denied_and_audited(
                        grid, mrc(grid, pool, method, request), actor="wk0@physics",
                        action=method.wire_name, code=errno.EPERM,
                        reason="a worker acts only under a delegation (call mrc.assume/1 "
                        "first)", still_serves=s.still_serves)
                # at an OSD a worker is a certificate holder like any other: alice's XCap
                # stays alice's
                await assert_denied_and_audited(
                    grid, read_object(grid, pool, s.secret), actor="wk0@physics",
                    action="osd.read/1", reason="issued to another certificate",
                    still_serves=s.still_serves)

    run(main)
