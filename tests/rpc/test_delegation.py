"""Delegation for batch jobs over a real in-process grid (mutual TLS, MRC and OSDs).

alice delegates /jobs/run1 of her volume to the worker certificate wk1@physics; the
worker presents the token on its connections to the MRC (the pool's on_connect hook, as
the mount does) and then acts as alice inside that directory, with XCaps bound to its own
certificate; outside it, after expiry, after revocation, or with a stolen token it is
refused, audited, and nobody else notices.
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

from tests.conftest import PKI
from tests.rpc.ingrid import (
    FAST_RETRY,
    Grid,
    ShiftedClock,
    assert_denied_and_audited,
    mrc_call,
    open_grid,
    run_within,
)
from xfs.client import delegation
from xfs.common import tls
from xfs.common.ca import CertPaths
from xfs.common.rpc import Pool, open_pool
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    OSD,
    Create,
    Delegate,
    DelegationToken,
    Empty,
    Ino,
    Link,
    Lookup,
    Method,
    MkNod,
    ObjRead,
    ObjWrite,
    Open,
    ReadDir,
    Rename,
    UpdateSize,
    VolumeCreate,
    VolumeName,
)
from xfs.proto.records import ROOT_INO, Attr, FileLayout, Role, StripingPolicy

DEADLINE = 60
STRIPE = 4096
VOLUME = "home"
HOUR = 3600.0
INPUT = b"job input " * 20
NOTES = b"alice's notes " * 20


def run(fn: Callable[[], Awaitable[None]]) -> None:
    run_within(DEADLINE, fn)


mrc = mrc_call


async def osd(grid: Grid, pool: Pool, layout: FileLayout, method: Any, request: Any) -> Any:
    (uuid,) = layout.xloc.replicas[0].osds
    return await pool.call(grid.osd_addresses[uuid], method, request, expect=f"osd:{uuid}")


async def write(grid: Grid, pool: Pool, layout: FileLayout, data: bytes) -> None:
    await osd(grid, pool, layout, OSD.write, ObjWrite(layout.xcap, layout.xloc, 0, 0, data))


async def read(grid: Grid, pool: Pool, layout: FileLayout) -> bytes:
    reply = await osd(grid, pool, layout, OSD.read, ObjRead(layout.xcap, layout.xloc, 0, 0,
                                                             STRIPE))
    data: bytes = reply.data
    return data


@asynccontextmanager
async def worker_pool(grid: Grid, cert: CertPaths, token: str) -> AsyncIterator[Pool]:
    """A worker's pool that presents ``token`` on every new MRC connection."""
    ctx = tls.client_context(cert.cert, cert.key, grid.trust.ssl_cafile_bundle())
    async with open_pool(ctx, grid.trust.identify, retry=FAST_RETRY,
                         on_connect=delegation.assume_on_connect(token)) as pool:
        yield pool


@dataclass
class Job:
    """alice's volume: /jobs/run1 (0777, delegated to wk1 for an hour) with /jobs/run1/input;
    /jobs/other; /notes (0600)."""

    grid: Grid
    clock: ShiftedClock
    alice: CertPaths
    wk1: CertPaths
    ino: dict[str, int]
    notes: FileLayout
    id: str
    token: str

    async def still_serves(self) -> None:
        """alice, on new connections, reads her notes back intact."""
        async with self.grid.client(self.alice) as pool:
            layout = await mrc(self.grid, pool, MRC.open,
                               Open(VOLUME, self.notes.attr.ino, os.O_RDONLY))
            assert await read(self.grid, pool, layout) == NOTES


async def create(grid: Grid, pool: Pool, parent: int, name: bytes, mode: int = 0o644,
                 data: bytes = b"") -> FileLayout:
    layout = await mrc(grid, pool, MRC.create, Create(
        VOLUME, parent, name, stat.S_IFREG | mode, os.O_CREAT | os.O_EXCL | os.O_RDWR))
    if data:
        await write(grid, pool, layout, data)
        await mrc(grid, pool, MRC.update_size,
                  UpdateSize(VOLUME, layout.attr.ino, len(data), xcap=layout.xcap))
    return layout


@asynccontextmanager
async def job(pki: PKI, root: Path) -> AsyncIterator[Job]:
    alice = pki.user("alice", groups=("alice", "users"))
    wk1 = pki.user("wk1", role=Role.WORKER)
    clock = ShiftedClock()
    async with open_grid(pki, root, osds=1, clock=clock) as grid:
        async with grid.client(grid.root_user) as admin:
            await mrc(grid, admin, MRC.volume_create, VolumeCreate(
                VOLUME, owner="alice@physics", mode=0o755, striping=StripingPolicy(STRIPE, 1)))
        async with grid.client(alice) as pool:
            ino = {"/": ROOT_INO}
            ino["jobs"] = (await mrc(grid, pool, MRC.mkdir,
                                     MkNod(VOLUME, ROOT_INO, b"jobs", 0o755))).ino
            ino["run1"] = (await mrc(grid, pool, MRC.mkdir,
                                     MkNod(VOLUME, ino["jobs"], b"run1", 0o777))).ino
            ino["other"] = (await mrc(grid, pool, MRC.mkdir,
                                      MkNod(VOLUME, ino["jobs"], b"other", 0o755))).ino
            ino["input"] = (await create(grid, pool, ino["run1"], b"input", data=INPUT)).attr.ino
            notes = await create(grid, pool, ROOT_INO, b"notes", 0o600, NOTES)
            info = await delegation.delegate(pool, grid.mrc_address, VOLUME, "/jobs/run1",
                                             "wk1@physics", HOUR)
        assert info.ino == ino["run1"] and info.path == "/jobs/run1" and info.token
        yield Job(grid, clock, alice, wk1, ino, notes, info.id, info.token)


# ----------------------------------------------------------------------------- inside
def test_worker_works_inside_the_delegated_directory(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g, ino = j.grid, j.ino
            worker_fp = Grid.identity(j.wk1).fingerprint
            marks = g.audit_marks()
            async with worker_pool(g, j.wk1, j.token) as pool:
                # the path down to the directory can be walked and seen
                for parent, name, want in [("/", b"jobs", "jobs"), ("jobs", b"run1", "run1"),
                                           ("run1", b"input", "input")]:
                    attr = await mrc(g, pool, MRC.lookup, Lookup(VOLUME, ino[parent], name))
                    assert attr.ino == ino[want]
                assert (await mrc(g, pool, MRC.getattr, Ino(VOLUME, ROOT_INO))).ino == ROOT_INO
                # read the input through the OSD, with an XCap bound to the worker
                layout = await mrc(g, pool, MRC.open, Open(VOLUME, ino["input"], os.O_RDONLY))
                assert layout.xcap.holder == worker_fp
                assert await read(g, pool, layout) == INPUT
                # write output as alice
                out = await create(g, pool, ino["run1"], b"output", data=b"result")
                assert out.attr.owner == "alice@physics" and out.xcap.holder == worker_fp
                assert await read(g, pool, out) == b"result"
                sub = await mrc(g, pool, MRC.mkdir, MkNod(VOLUME, ino["run1"], b"sub", 0o755))
                await mrc(g, pool, MRC.rename, Rename(VOLUME, ino["run1"], b"output", sub.ino,
                                                      b"output"))
                names = {e.name for e in (await mrc(g, pool, MRC.readdir,
                                                    ReadDir(VOLUME, ino["run1"]))).entries}
                assert names == {b"input", b"sub"}
                # a reconnection presents the token again by itself
                assert g.mrc.server is not None
                assert g.mrc.server.close_where(lambda p: p.principal == "wk1@physics") >= 1
                attr = await mrc(g, pool, MRC.lookup, Lookup(VOLUME, sub.ino, b"output"))
                assert attr.ino == out.attr.ino and attr.size == len(b"result")
            # the XCaps were issued to alice via the worker, and audited so
            issued = [r for _, r in g.audit_since(marks) if r["event"] == "xcap"]
            assert len(issued) == 2 and all(
                r["actor"] == "alice@physics" and r["detail"]["via"] == "wk1@physics"
                and r["detail"]["holder"] == worker_fp[:8].hex() for r in issued)
            # alice reads what the job wrote, as her own file
            async with g.client(j.alice) as pool:
                mine = await mrc(g, pool, MRC.open, Open(VOLUME, out.attr.ino, os.O_RDONLY))
                assert await read(g, pool, mine) == b"result"
            await j.still_serves()

    run(main)


def test_worker_is_refused_outside_the_delegated_directory(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g, ino = j.grid, j.ino
            outside = "is outside directory"
            async with worker_pool(g, j.wk1, j.token) as pool:
                outside_calls: list[tuple[Method[Any, Any], Any]] = [
                    (MRC.open, Open(VOLUME, j.notes.attr.ino, os.O_RDONLY)),
                    (MRC.getattr, Ino(VOLUME, j.notes.attr.ino)),
                    (MRC.readdir, ReadDir(VOLUME, ROOT_INO)),
                    (MRC.readdir, ReadDir(VOLUME, ino["jobs"])),
                    (MRC.lookup, Lookup(VOLUME, ROOT_INO, b"notes")),
                    (MRC.lookup, Lookup(VOLUME, ino["jobs"], b"other")),
                    (MRC.create, Create(VOLUME, ino["other"], b"x", 0o100644, os.O_CREAT)),
                    (MRC.mkdir, MkNod(VOLUME, ROOT_INO, b"x", 0o755)),
                    (MRC.rename, Rename(VOLUME, ino["run1"], b"input", ino["other"], b"x")),
                    (MRC.link, Link(VOLUME, ino["input"], ino["other"], b"x")),
                    (MRC.link, Link(VOLUME, j.notes.attr.ino, ino["run1"], b"x")),
                    (MRC.unlink, MRC.unlink.request(VOLUME, ROOT_INO, b"notes")),
                ]
                for method, request in outside_calls:
                    await assert_denied_and_audited(
                        g, mrc(g, pool, method, request), actor="alice@physics",
                        action=method.wire_name, reason=outside, still_serves=j.still_serves)
                # nor may it use alice's other volumes, or her powers beyond files
                async with g.client(g.root_user) as admin:
                    await mrc(g, admin, MRC.volume_create, VolumeCreate(
                        "other", owner="alice@physics", mode=0o777,
                        striping=StripingPolicy(STRIPE, 1)))
                await assert_denied_and_audited(
                    g, mrc(g, pool, MRC.getattr, Ino("other", ROOT_INO)), actor="alice@physics",
                    reason="covers another volume only", still_serves=j.still_serves)
                admin_calls: list[tuple[Method[Any, Any], Any, str]] = [
                    (MRC.delegate, Delegate(VOLUME, ino["run1"], "wk2@physics", HOUR),
                     "may not manage delegations"),
                    (MRC.delegation_list, Empty(), "may not manage delegations"),
                    (MRC.status, Empty(), "needs role advanced or super"),
                    (MRC.volume_delete, VolumeName("other"), "needs role super"),
                ]
                for method, request, reason in admin_calls:
                    await assert_denied_and_audited(
                        g, mrc(g, pool, method, request), actor="alice@physics",
                        action=method.wire_name, code=errno.EPERM, reason=reason,
                        still_serves=j.still_serves)
                # the refusals left the connection working inside
                attr = await mrc(g, pool, MRC.getattr, Ino(VOLUME, ino["input"]))
                assert attr.size == len(INPUT)

    run(main)


# ----------------------------------------------------------------------------- ending
def test_expired_delegation_is_refused(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g = j.grid
            request = Ino(VOLUME, j.ino["input"])
            async with worker_pool(g, j.wk1, j.token) as pool:
                await mrc(g, pool, MRC.getattr, request)
                j.clock.advance(HOUR - 5)
                await mrc(g, pool, MRC.getattr, request)
                j.clock.advance(10)
                await assert_denied_and_audited(
                    g, mrc(g, pool, MRC.getattr, request), actor="wk1@physics",
                    action="mrc.getattr/1",
                    reason=f"delegation {j.id} of alice@physics has expired",
                    still_serves=j.still_serves)
            async with worker_pool(g, j.wk1, j.token) as pool:  # a new connection too
                await assert_denied_and_audited(
                    g, mrc(g, pool, MRC.getattr, request), actor="wk1@physics",
                    action="mrc.assume/1", reason="has expired", still_serves=j.still_serves)
            async with g.client(j.alice) as pool:
                (info,) = await delegation.delegations(pool, g.mrc_address)
                assert info.id == j.id and info.revoked is None and not info.token

    run(main)


def test_revoked_delegation_is_refused(pki: PKI, tmp_path: Path) -> None:
    bob = pki.user("bob")

    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g = j.grid
            request = Ino(VOLUME, j.ino["input"])
            async with worker_pool(g, j.wk1, j.token) as pool:
                await mrc(g, pool, MRC.getattr, request)
                async with g.client(bob) as other:  # only alice or physics' super may
                    await assert_denied_and_audited(
                        g, delegation.revoke(other, g.mrc_address, j.id), actor="bob@physics",
                        action="mrc.delegation_revoke/1", code=errno.EPERM,
                        reason="may not revoke", still_serves=j.still_serves)
                    assert await delegation.delegations(other, g.mrc_address) == []
                await mrc(g, pool, MRC.getattr, request)
                marks = g.audit_marks()
                async with g.client(j.alice) as mine:
                    await delegation.revoke(mine, g.mrc_address, j.id)
                    (info,) = await delegation.delegations(mine, g.mrc_address)
                    assert info.revoked is not None
                assert any(r["event"] == "admin" and r["action"] == "delegation_revoke"
                           for _, r in g.audit_since(marks))
                # the very next request on the worker's connection is refused
                await assert_denied_and_audited(
                    g, mrc(g, pool, MRC.getattr, request), actor="wk1@physics",
                    action="mrc.getattr/1",
                    reason=f"delegation {j.id} of alice@physics was revoked",
                    still_serves=j.still_serves)
            # a delegation revoked by the super user of alice's VO
            async with g.client(j.alice) as mine:
                again = await delegation.delegate(mine, g.mrc_address, VOLUME, "/jobs/run1",
                                                  "wk1@physics", HOUR)
            async with g.client(g.root_user) as admin:
                listed = await delegation.delegations(admin, g.mrc_address)
                assert {d.id for d in listed} == {j.id, again.id}
                await delegation.revoke(admin, g.mrc_address, again.id)
            async with worker_pool(g, j.wk1, again.token) as pool:
                await assert_denied_and_audited(
                    g, mrc(g, pool, MRC.getattr, request), actor="wk1@physics",
                    action="mrc.assume/1", reason="was revoked", still_serves=j.still_serves)

    run(main)


def test_stolen_token_is_refused(pki: PKI, tmp_path: Path) -> None:
    wk2 = pki.user("wk2", role=Role.WORKER)
    bob = pki.user("bob")

    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g = j.grid
            request = Ino(VOLUME, j.ino["input"])
            async with worker_pool(g, j.wk1, j.token) as rightful:
                await mrc(g, rightful, MRC.getattr, request)
                async with worker_pool(g, wk2, j.token) as thief:
                    await assert_denied_and_audited(
                        g, mrc(g, thief, MRC.getattr, request), actor="wk2@physics",
                        action="mrc.assume/1",
                        reason=f"delegation {j.id} is for wk1@physics, not wk2@physics",
                        still_serves=j.still_serves)
                # a user who is not a worker cannot present a token at all
                async with g.client(bob) as pool:
                    await assert_denied_and_audited(
                        g, mrc(g, pool, MRC.assume, DelegationToken(j.token)),
                        actor="bob@physics", action="mrc.assume/1", code=errno.EPERM,
                        reason="needs a user certificate of role worker",
                        still_serves=j.still_serves)
                # a forged secret
                forged = j.token[:-4] + "0000" if not j.token.endswith("0000") else j.token[:-4]
                async with worker_pool(g, j.wk1, forged) as pool:
                    await assert_denied_and_audited(
                        g, mrc(g, pool, MRC.getattr, request), actor="wk1@physics",
                        action="mrc.assume/1", reason="not a valid delegation token",
                        still_serves=j.still_serves)
                # the rightful worker never noticed
                assert (await mrc(g, rightful, MRC.getattr, request)).ino == j.ino["input"]

    run(main)


# ----------------------------------------------------------------------------- limits
def test_a_delegation_grants_no_more_than_the_grantor_has(pki: PKI, tmp_path: Path) -> None:
    bob = pki.user("bob")

    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g, ino = j.grid, j.ino
            async with g.client(bob) as pool:  # run1 is 0777: bob keeps a private file there
                bobs = await create(g, pool, ino["run1"], b"bobs", 0o600, b"bob's")
            # root@physics (super on this volume) delegates the same directory
            async with g.client(g.root_user) as pool:
                info = await delegation.delegate(pool, g.mrc_address, VOLUME, "/jobs/run1",
                                                 "wk1@physics", HOUR)
                layout = await mrc(g, pool, MRC.open, Open(VOLUME, bobs.attr.ino, os.O_RDONLY))
                assert await read(g, pool, layout) == b"bob's"  # root itself may
            for token, actor in [(j.token, "alice@physics"), (info.token, "root@physics")]:
                async with worker_pool(g, j.wk1, token) as pool:
                    await assert_denied_and_audited(
                        g, mrc(g, pool, MRC.open, Open(VOLUME, bobs.attr.ino, os.O_RDONLY)),
                        actor=actor, action="mrc.open/1", reason="permission denied",
                        still_serves=j.still_serves)
                    assert (await mrc(g, pool, MRC.getattr, Ino(VOLUME, bobs.attr.ino))).ino
            # what may not be delegated at all
            async with g.client(j.alice) as pool:
                for path, grantee, lifetime, code, reason in [
                    ("/jobs/run1", "wk1@physics", 8 * 24 * HOUR, errno.EINVAL, "lifetime"),
                    ("/jobs/run1", "wk1", HOUR, errno.EINVAL, "not a user principal"),
                    ("/jobs/run1/input", "wk1@physics", HOUR, errno.ENOTDIR, "not a directory"),
                ]:
                    try:
                        await delegation.delegate(pool, g.mrc_address, VOLUME, path, grantee,
                                                  lifetime)
                    except XfsError as e:
                        assert e.code == code and reason in e.message, e
                    else:
                        raise AssertionError(f"{path} {grantee} {lifetime} was delegated")
            async with g.client(bob) as pool:  # bob may not write alice's /jobs
                await assert_denied_and_audited(
                    g, delegation.delegate(pool, g.mrc_address, VOLUME, "/jobs", "wk1@physics",
                                           HOUR),
                    actor="bob@physics", action="mrc.delegate/1",
                    reason="permission denied", still_serves=j.still_serves)

    run(main)


def test_attr_is_the_grantors_view(pki: PKI, tmp_path: Path) -> None:
    """What the worker's job sees of its files is what alice sees (owner, group)."""

    async def main() -> None:
        async with job(pki, tmp_path) as j:
            g = j.grid
            async with worker_pool(g, j.wk1, j.token) as pool:
                attr: Attr = await mrc(g, pool, MRC.mkdir,
                                       MkNod(VOLUME, j.ino["run1"], b"d", 0o750))
                assert (attr.owner, attr.group) == ("alice@physics", "alice@physics")

    run(main)
