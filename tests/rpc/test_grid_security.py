"""Security of a whole in-process grid: XCaps at the OSDs, identities and authority over TLS.

Every refusal is asserted exactly (``XfsError`` with its errno and reason, or
``Unavailable`` for a refused handshake), with the audit record it left (``denied``, see
``ingrid.assert_denied_and_audited``), and after each one a well-behaved client on a
fresh connection still gets served.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import os
import random
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import PKI, make_pki
from tests.rpc.ingrid import (
    HEARTBEAT,
    Grid,
    ShiftedClock,
    assert_denied_and_audited,
    forge,
    open_client,
    open_grid,
    run_within,
    save_minted,
    service_tls,
)
from xfs.client.session import Session
from xfs.common import audit, ca, tls
from xfs.common.ca import CertPaths
from xfs.common.config import OSDConfig
from xfs.common.framing import META_FRAME_LIMIT
from xfs.common.identity import (
    SERVICES_VO,
    CertKind,
    Claims,
    TrustStore,
)
from xfs.common.rpc import Dispatcher, Pool, RPCServer
from xfs.common.xcap import (
    CLOCK_SKEW,
    KeyRing,
    XCapVerifier,
    decode_xcap,
    encode_xcap,
    sign,
)
from xfs.mrc.xcaps import KEY_LEAD, XCapIssuer
from xfs.osd.objects import ObjectStore
from xfs.osd.service import OSDService
from xfs.proto.errors import Unavailable, XfsError
from xfs.proto.methods import (
    MRC,
    OSD,
    Create,
    CreateMany,
    Empty,
    FileOp,
    FileOps,
    Heartbeat,
    HeartbeatReply,
    Ino,
    InoAsk,
    Method,
    MkNod,
    NewFile,
    ObjRead,
    ObjWrite,
    Open,
    ReplicaFailed,
    SetAttr,
    UpdateSize,
    VolumeCreate,
)
from xfs.proto.records import (
    FileLayout,
    Kind,
    Replica,
    Rights,
    Role,
    StripingPolicy,
    UpdatePolicy,
    XCap,
    XLocSet,
)

DEADLINE = 30
STRIPE = 4096  # the smallest stripe the MRC allows: objects stay small
VOLUME = "home"
RW = os.O_RDWR
ALICE, BOB = "alice@physics", "bob@physics"


def run(fn: Callable[[], Awaitable[None]]) -> None:
    run_within(DEADLINE, fn)


# ----------------------------------------------------------------------------- the world
@dataclass
class World:
    """A grid with a volume (width 2, mode 0777) and alice's file of two objects."""

    grid: Grid
    alice: CertPaths
    bob: CertPaths
    layout: FileLayout  # alice's file "a", opened O_RDWR
    data: dict[int, bytes]  # objno -> what alice wrote

    def osd_of(self, objno: int, layout: FileLayout | None = None) -> str:
        osds = (layout or self.layout).xloc.replicas[0].osds
        return osds[objno % len(osds)]

    def osd_call(self, pool: Pool, uuid_: str, method: Any, request: Any) -> Awaitable[Any]:
        return pool.call(self.grid.osd_addresses[uuid_], method, request, expect=f"osd:{uuid_}")

    def mrc_call(self, pool: Pool, method: Any, request: Any) -> Awaitable[Any]:
        return pool.call(self.grid.mrc_address, method, request, expect=Kind.MRC)

    async def create(
        self,
        pool: Pool,
        name: bytes,
        mode: int = 0o600,
        volume: str = VOLUME,
        flags: int = os.O_CREAT | os.O_EXCL | RW,
    ) -> FileLayout:
        return await self.mrc_call(
            pool, MRC.create, Create(volume, 1, name, stat.S_IFREG | mode, flags)
        )

    async def read(
        self,
        pool: Pool,
        xcap: XCap,
        objno: int,
        *,
        xloc: XLocSet | None = None,
        layout: FileLayout | None = None,
    ) -> bytes:
        xloc = xloc or (layout or self.layout).xloc
        reply = await self.osd_call(
            pool, self.osd_of(objno, layout), OSD.read, ObjRead(xcap, xloc, objno, 0, STRIPE)
        )
        data: bytes = reply.data
        return data

    async def write(
        self,
        pool: Pool,
        xcap: XCap,
        objno: int,
        data: bytes,
        *,
        xloc: XLocSet | None = None,
        layout: FileLayout | None = None,
    ) -> None:
        xloc = xloc or (layout or self.layout).xloc
        await self.osd_call(
            pool, self.osd_of(objno, layout), OSD.write, ObjWrite(xcap, xloc, objno, 0, data)
        )

    async def still_serves(self) -> None:
        """A well-behaved client, on new connections, reads alice's data back intact
        (with a fresh XCap, so that tests may move the clock past alice's first one)."""
        async with self.grid.client(self.alice) as pool:
            ino = self.layout.attr.ino
            fresh = await self.mrc_call(pool, MRC.open, Open(VOLUME, ino, os.O_RDONLY))
            for objno, data in self.data.items():
                assert await self.read(pool, fresh.xcap, objno, layout=fresh) == data
            attr = await self.mrc_call(pool, MRC.getattr, Ino(VOLUME, ino))
            assert attr.ino == ino


@asynccontextmanager
async def world(
    pki: PKI,
    root: Path,
    *,
    osds: int = 2,
    clock: Callable[[], float] = time.time,
    crl_check_interval: float = 10.0,
) -> AsyncIterator[World]:
    alice, bob = pki.user("alice"), pki.user("bob")
    async with open_grid(
        pki, root, osds=osds, clock=clock, crl_check_interval=crl_check_interval
    ) as grid:
        async with grid.client(grid.root_user) as admin:
            await admin.call(
                grid.mrc_address,
                MRC.volume_create,
                VolumeCreate(
                    VOLUME, owner="alice@physics", mode=0o777, striping=StripingPolicy(STRIPE, 2)
                ),
                expect=Kind.MRC,
            )
        w = World(grid, alice, bob, None, {})  # type: ignore[arg-type]
        async with grid.client(alice) as pool:
            w.layout = await w.create(pool, b"a")
            assert w.layout.xcap.rights == int(Rights.READ | Rights.WRITE | Rights.TRUNCATE)
            assert len(w.layout.xloc.replicas[0].osds) == min(osds, 2)
            w.data = {0: b"alice-object-0" * 10, 1: b"alice-object-1" * 10}
            for objno, data in w.data.items():
                await w.write(pool, w.layout.xcap, objno, data)
        yield w


async def refused(call: Awaitable[Any], code: int = errno.EACCES, reason: str = "") -> XfsError:
    """Await ``call``; it must fail with exactly ``code`` (not a transport failure)."""
    with pytest.raises(XfsError) as e:
        await call
    assert not isinstance(e.value, Unavailable), e.value
    assert e.value.code == code, e.value
    assert reason in e.value.message, e.value
    return e.value


async def denied(
    w: World,
    call: Awaitable[Any],
    *,
    actor: str = ALICE,
    action: str = "",
    code: int = errno.EACCES,
    reason: str = "",
    service: str = "",
) -> XfsError:
    """``call`` is refused with ``code`` and ``reason``, a ``deny`` record of ``actor``
    and ``action`` is in ``service``'s audit log, and alice is still served."""
    return await assert_denied_and_audited(
        w.grid,
        call,
        actor=actor,
        action=action,
        code=code,
        reason=reason,
        service=service,
        still_serves=w.still_serves,
    )


def osd_log(uuid_: str) -> str:
    return f"osd:{uuid_}"


def flip(b: bytes, i: int, bit: int = 0) -> bytes:
    out = bytearray(b)
    out[i % len(out)] ^= 1 << bit
    return bytes(out)


# ----------------------------------------------------------------------------- genuine use
def test_genuine_xcap_round_trip(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            x = w.layout.xcap
            for objno in range(4):  # both stripe columns, both OSDs
                payload = bytes([objno]) * 100 + os.urandom(50)
                await w.write(pool, x, objno, payload)
                assert await w.read(pool, x, objno) == payload
                w.data[objno] = payload
            assert w.osd_of(0) != w.osd_of(1)
            size = await w.osd_call(pool, w.osd_of(1), OSD.size, FileOp(x, w.layout.xloc))
            assert size.size == 3 * STRIPE + 150
            # a token the test signs with the MRC's real ring, now, works too: the ring
            # used to mint expired tokens below is the real one
            fp = Grid.identity(w.alice).fingerprint
            fresh = XCapIssuer(w.grid.keyring(), time.time, 60).issue(
                x.volume, x.ino, Rights.READ, x.truncate_epoch, w.layout.xloc, fp
            )
            assert fresh.key_id == x.key_id
            assert await w.read(pool, fresh, 2) == w.data[2]
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- tampered XCaps
def _other_ring(x: XCap, w: World) -> XCap:
    return sign(x, KeyRing.generate())


def _other_ring_real_kid(x: XCap, w: World) -> XCap:
    return dataclasses.replace(sign(x, KeyRing.generate()), key_id=x.key_id)


def _issued(x: XCap, w: World, *, at: float, lifetime: float) -> XCap:
    fp = Grid.identity(w.alice).fingerprint
    issuer = XCapIssuer(w.grid.keyring(), lambda: at, lifetime)
    return issuer.issue(x.volume, x.ino, Rights(x.rights), x.truncate_epoch, w.layout.xloc, fp)


def _field(name: str, value: Callable[[XCap, World], Any]) -> Callable[[XCap, World], XCap]:
    return lambda x, w: dataclasses.replace(x, **{name: value(x, w)})


TAMPERED: dict[str, tuple[Callable[[XCap, World], XCap], str]] = {
    "forged-other-ring": (_other_ring, "unknown key id"),
    "forged-other-ring-real-key-id": (_other_ring_real_kid, "bad signature"),
    "signature-bit-flip": (
        _field("signature", lambda x, w: flip(x.signature, 10)),
        "bad signature",
    ),
    "signature-high-bit": (
        _field("signature", lambda x, w: flip(x.signature, 63, 7)),
        "bad signature",
    ),
    "signature-truncated": (
        _field("signature", lambda x, w: x.signature[:63]),
        "malformed signature",
    ),
    "signature-extended": (
        _field("signature", lambda x, w: x.signature + b"\0"),
        "malformed signature",
    ),
    "signature-empty": (_field("signature", lambda x, w: b""), "malformed signature"),
    "ino": (_field("ino", lambda x, w: x.ino + 1), "bad signature"),
    "rights": (_field("rights", lambda x, w: 0xF), "bad signature"),
    "expires": (_field("expires", lambda x, w: x.expires + 86400), "bad signature"),
    "not_before": (_field("not_before", lambda x, w: x.not_before - 86400), "bad signature"),
    "holder": (_field("holder", lambda x, w: Grid.identity(w.bob).fingerprint), "bad signature"),
    "volume": (_field("volume", lambda x, w: str(uuid.uuid4())), "bad signature"),
    "truncate_epoch": (
        _field("truncate_epoch", lambda x, w: x.truncate_epoch + 1),
        "bad signature",
    ),
    "xloc_version": (_field("xloc_version", lambda x, w: x.xloc_version + 1), "bad signature"),
    "xloc_hash": (_field("xloc_hash", lambda x, w: hashlib.sha256(b"x").digest()), "bad signature"),
    "key_id-unknown": (_field("key_id", lambda x, w: "0123456789abcdef"), "unknown key id"),
    "expired": (lambda x, w: _issued(x, w, at=time.time() - 3600, lifetime=600), "expired"),
    "zero-lifetime": (lambda x, w: _issued(x, w, at=time.time(), lifetime=0), "expired"),
    "not-yet-valid": (
        lambda x, w: _issued(x, w, at=time.time() + 3600, lifetime=600),
        "not valid before",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_xcap_is_refused(pki: PKI, tmp_path: Path, case: str) -> None:
    tamper, reason = TAMPERED[case]

    async def main() -> None:
        async with world(pki, tmp_path) as w:
            x = tamper(w.layout.xcap, w)
            assert x != w.layout.xcap
            async with w.grid.client(w.alice) as pool:
                xloc = w.layout.xloc
                await denied(
                    w,
                    w.read(pool, x, 0),
                    action=OSD.read.wire_name,
                    reason=reason,
                    service=osd_log(w.osd_of(0)),
                )
                await denied(
                    w,
                    w.write(pool, x, 1, b"mallory"),
                    action=OSD.write.wire_name,
                    reason=reason,
                    service=osd_log(w.osd_of(1)),
                )
                for uuid_ in xloc.replicas[0].osds:
                    for method in (OSD.truncate, OSD.delete, OSD.size, OSD.fsync):
                        await denied(
                            w,
                            w.osd_call(pool, uuid_, method, FileOp(x, xloc, 0)),
                            action=method.wire_name,
                            reason=reason,
                            service=osd_log(uuid_),
                        )
                # the genuine token still works on the very connection that was refused
                assert await w.read(pool, w.layout.xcap, 0) == w.data[0]
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- holder, file
def test_xcap_of_one_holder_is_refused_on_another_connection(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            x, xloc = w.layout.xcap, w.layout.xloc
            osd0 = w.osd_of(0)
            other_osd = next(u for u in w.grid.osd_certs if u != osd0)
            stolen = "issued to another certificate"
            for cert, who in ((w.bob, BOB), (w.grid.root_user, "root@physics")):
                # (a super user has no power at an OSD)
                async with w.grid.client(cert) as pool:
                    await denied(
                        w,
                        w.read(pool, x, 0),
                        actor=who,
                        action=OSD.read.wire_name,
                        reason=stolen,
                        service=osd_log(osd0),
                    )
                    await denied(
                        w,
                        w.write(pool, x, 0, b"bob was here"),
                        actor=who,
                        action=OSD.write.wire_name,
                        reason=stolen,
                    )
                    await denied(
                        w,
                        w.osd_call(pool, osd0, OSD.truncate, FileOp(x, xloc)),
                        actor=who,
                        action=OSD.truncate.wire_name,
                        reason=stolen,
                    )
            # a service certificate may not act as a user at an OSD at all
            for cert in (w.grid.osd_certs[other_osd], w.grid.pki.mrc):
                who = Grid.identity(cert).principal
                async with w.grid.client(cert) as pool:
                    await denied(
                        w,
                        w.read(pool, x, 0),
                        actor=who,
                        action=OSD.read.wire_name,
                        reason="may not call",
                        service=osd_log(osd0),
                    )
            # OSD.delete admits the MRC, but the XCap still names alice
            async with w.grid.client(w.grid.pki.mrc) as pool:
                await denied(
                    w,
                    w.osd_call(pool, osd0, OSD.delete, FileOp(x, xloc)),
                    actor=f"mrc:{pki.mrc_uuid}",
                    action=OSD.delete.wire_name,
                    reason=stolen,
                    service=osd_log(osd0),
                )

    run(main)


def test_xcap_is_bound_to_its_file(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            a = w.layout
            async with w.grid.client(w.grid.root_user) as admin:
                other_volume = await w.mrc_call(
                    admin,
                    MRC.volume_create,
                    VolumeCreate(
                        "other", owner="bob@physics", mode=0o777, striping=StripingPolicy(STRIPE, 2)
                    ),
                )
            async with w.grid.client(w.bob) as pool:
                b = await w.create(pool, b"b")
                await w.write(pool, b.xcap, 0, b"bob-data", layout=b)
                # bob may not open alice's 0600 file at the MRC
                await denied(
                    w,
                    w.mrc_call(pool, MRC.open, Open(VOLUME, a.attr.ino, os.O_RDONLY)),
                    actor=BOB,
                    action=MRC.open.wire_name,
                    service="mrc",
                )
                # so he points his own XCap at her file or at another volume: signature breaks
                for field, value in (
                    ("ino", a.attr.ino),
                    ("volume", other_volume.id),
                    ("volume", a.xcap.volume),
                ):
                    change: dict[str, Any] = {field: value}
                    forged = dataclasses.replace(b.xcap, **change)
                    if forged == b.xcap:  # same volume: ino is the one that differs
                        continue
                    await denied(
                        w,
                        w.read(pool, forged, 0),
                        actor=BOB,
                        action=OSD.read.wire_name,
                        reason="bad signature",
                    )
                    await denied(
                        w,
                        w.write(pool, forged, 0, b"x"),
                        actor=BOB,
                        action=OSD.write.wire_name,
                        reason="bad signature",
                    )
                # his genuine XCap of b with the XLocSet of a: refused unless the two sets
                # are the same, and then it addresses b, never a
                osd = w.osd_of(0, b)
                if osd in a.xloc.replicas[0].osds and a.xloc.digest() != b.xloc.digest():
                    await denied(
                        w,
                        w.osd_call(pool, osd, OSD.read, ObjRead(b.xcap, a.xloc, 0, 0, STRIPE)),
                        actor=BOB,
                        action=OSD.read.wire_name,
                        reason="XLocSet hash",
                    )
                else:
                    got = await w.read(pool, b.xcap, 0, xloc=a.xloc, layout=b)
                    assert got == b"bob-data"
                # alice's genuine XCap of a does not work for bob's b either: it names alice
                await denied(
                    w,
                    w.read(pool, a.xcap, 0, layout=b),
                    actor=BOB,
                    action=OSD.read.wire_name,
                    reason="issued to another certificate",
                )
            await w.still_serves()

    run(main)


def test_read_only_xcap_cannot_write_truncate_or_delete(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            ino = w.layout.attr.ino
            ro = await w.mrc_call(pool, MRC.open, Open(VOLUME, ino, os.O_RDONLY))
            assert ro.xcap.rights == int(Rights.READ)
            assert await w.read(pool, ro.xcap, 0, layout=ro) == w.data[0]
            x, xloc = ro.xcap, ro.xloc
            for objno in (0, 1):
                await denied(
                    w,
                    w.write(pool, x, objno, b"overwrite", layout=ro),
                    action=OSD.write.wire_name,
                    reason="grants rights",
                    service=osd_log(w.osd_of(objno)),
                )
            for osd in xloc.replicas[0].osds:
                for method in (OSD.truncate, OSD.delete, OSD.fsync):
                    await denied(
                        w,
                        w.osd_call(pool, osd, method, FileOp(x, xloc, 0)),
                        action=method.wire_name,
                        reason="grants rights",
                        service=osd_log(osd),
                    )
            # nor report a size at the MRC (only a writer's XCap may)
            await denied(
                w,
                w.mrc_call(pool, MRC.update_size, UpdateSize(VOLUME, ino, 1 << 40, x)),
                action=MRC.update_size.wire_name,
                reason="grants rights",
                service="mrc",
            )
            # write-only may not read, and no user XCap may delete (only the MRC's may)
            wo = await w.mrc_call(pool, MRC.open, Open(VOLUME, ino, os.O_WRONLY))
            await denied(
                w,
                w.read(pool, wo.xcap, 0, layout=wo),
                action=OSD.read.wire_name,
                reason="grants rights",
            )
            await denied(
                w,
                w.osd_call(pool, w.osd_of(0), OSD.delete, FileOp(w.layout.xcap, w.layout.xloc)),
                action=OSD.delete.wire_name,
                reason="grants rights",
            )
            for layout in (ro, wo, w.layout):
                assert layout.xcap.rights & Rights.DELETE == 0
            # nor delete in a batch, which only the MRC's certificate may call
            await denied(
                w,
                w.osd_call(
                    pool,
                    w.osd_of(0),
                    OSD.delete_many,
                    FileOps([FileOp(w.layout.xcap, w.layout.xloc)]),
                ),
                action=OSD.delete_many.wire_name,
                code=errno.EPERM,
                reason="may not call osd.delete_many",
                service=osd_log(w.osd_of(0)),
            )
            # what alice wrote is untouched, and the size was not moved
            attr = await w.mrc_call(pool, MRC.getattr, Ino(VOLUME, ino))
            assert attr.size == w.layout.attr.size

    run(main)


def test_forged_xlocset_is_refused(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            x, xloc = w.layout.xcap, w.layout.xloc
            (replica,) = xloc.replicas
            stranger = str(uuid.uuid4())
            forged = {
                "version": (dataclasses.replace(xloc, version=xloc.version + 1), "XLocSet version"),
                "columns-swapped": (
                    dataclasses.replace(
                        xloc, replicas=[Replica(replica.osds[::-1], replica.striping)]
                    ),
                    "XLocSet hash",
                ),
                "stripe-size": (
                    dataclasses.replace(
                        xloc, replicas=[Replica(replica.osds, StripingPolicy(2 * STRIPE, 2))]
                    ),
                    "XLocSet hash",
                ),
                "width-1": (
                    dataclasses.replace(
                        xloc, replicas=[Replica(replica.osds[:1], StripingPolicy(STRIPE, 1))]
                    ),
                    "XLocSet hash",
                ),
                "extra-replica": (
                    dataclasses.replace(
                        xloc, replicas=[replica, Replica([stranger, stranger], replica.striping)]
                    ),
                    "XLocSet hash",
                ),
                "osd-replaced": (
                    dataclasses.replace(
                        xloc, replicas=[Replica([replica.osds[0], stranger], replica.striping)]
                    ),
                    "XLocSet hash",
                ),
                "update-policy": (
                    dataclasses.replace(xloc, update_policy=UpdatePolicy.RW),
                    "XLocSet hash",
                ),
            }
            for name, (bad, reason) in forged.items():
                assert bad.digest() != x.xloc_hash, name
                await denied(
                    w,
                    w.read(pool, x, 0, xloc=bad),
                    action=OSD.read.wire_name,
                    reason=reason,
                    service=osd_log(w.osd_of(0)),
                )
                await denied(
                    w,
                    w.write(pool, x, 0, b"forged", xloc=bad),
                    action=OSD.write.wire_name,
                    reason=reason,
                )
                await denied(
                    w,
                    w.osd_call(pool, w.osd_of(1), OSD.truncate, FileOp(x, bad, 0)),
                    action=OSD.truncate.wire_name,
                    reason=reason,
                    service=osd_log(w.osd_of(1)),
                )
            # a genuine XCap and XLocSet of a file that is not on this OSD
            async with w.grid.client(w.grid.root_user) as admin:
                await w.mrc_call(
                    admin,
                    MRC.volume_create,
                    VolumeCreate(
                        "narrow",
                        owner="alice@physics",
                        mode=0o777,
                        striping=StripingPolicy(STRIPE, 1),
                    ),
                )
            n = await w.create(pool, b"n", volume="narrow")
            (holder,) = n.xloc.replicas[0].osds
            elsewhere = next(u for u in w.grid.osd_addresses if u != holder)
            await denied(
                w,
                w.osd_call(pool, elsewhere, OSD.write, ObjWrite(n.xcap, n.xloc, 0, 0, b"stray")),
                action=OSD.write.wire_name,
                reason="not in the XLocSet",
                service=osd_log(elsewhere),
            )
            await denied(
                w,
                w.osd_call(pool, elsewhere, OSD.read, ObjRead(n.xcap, n.xloc, 0, 0, 10)),
                action=OSD.read.wire_name,
                reason="not in the XLocSet",
                service=osd_log(elsewhere),
            )

    run(main)


# ----------------------------------------------------------------------------- fuzz
_INT_FIELDS = (
    "ino",
    "rights",
    "truncate_epoch",
    "xloc_version",
    "not_before",
    "expires",
    "max_size",
)
_BYTES_FIELDS = ("xloc_hash", "holder", "signature")
_STR_FIELDS = ("volume", "key_id")


def _mutate_int(v: int, rng: random.Random) -> int:
    return rng.choice(
        [
            v + 1,
            v - 1,
            v ^ (1 << rng.randrange(63)),
            -v,
            0,
            -1,
            (1 << 63) - 1,
            rng.randrange(-(1 << 63), 1 << 63),
        ]
    )


def _mutate_bytes(v: bytes, rng: random.Random) -> bytes:
    op = rng.randrange(5)
    if op == 0 and v:
        return flip(v, rng.randrange(len(v)), rng.randrange(8))
    if op == 1:
        return v[: rng.randrange(len(v) + 1)]
    if op == 2:
        return v + bytes([rng.randrange(256)])
    if op == 3:
        return rng.randbytes(len(v))
    return b""


def _mutate_str(v: str, rng: random.Random) -> str:
    op = rng.randrange(4)
    if op == 0 and v:
        i = rng.randrange(len(v))
        return v[:i] + rng.choice("0123456789abcdef-:x\0é") + v[i + 1 :]
    if op == 1:
        return v.upper()
    if op == 2:
        return v + rng.choice(["0", ":", " ", "\0"])
    return str(uuid.UUID(int=rng.getrandbits(128)))


KINDS = ("bytes", "field", "fields", "splice", "resign", "retired")


def mutants(
    genuine: XCap, other: XCap, rng: random.Random, forger: KeyRing, retired: KeyRing | None = None
) -> Iterator[tuple[str, XCap | None]]:
    """Endless mutations of ``genuine``: (kind, XCap), or (kind, None) if undecodable.

    ``forger`` signs with a key the MRC never had (claiming the real key id: "resign");
    ``retired`` holds a key the MRC had and retired ("retired": genuine fields, zero to
    two of them changed, signed by it)."""
    wire = encode_xcap(genuine)
    fields = [f.name for f in dataclasses.fields(XCap)]
    while True:
        kind = rng.choices(KINDS, weights=[30, 30, 10, 10, 10, 10 if retired else 0])[0]
        if kind == "bytes":
            b = bytearray(wire)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(b))
                if rng.random() < 0.6:
                    b[i] ^= 1 << rng.randrange(8)
                else:
                    b[i] = rng.randrange(256)
            try:
                yield kind, decode_xcap(bytes(b))
            except XfsError:
                yield kind, None
            continue
        x = genuine
        if kind in ("field", "fields", "resign", "retired"):
            changes = {"fields": rng.randint(2, 4), "retired": rng.randint(0, 2)}.get(kind, 1)
            for name in rng.sample(fields, changes):
                value = getattr(x, name)
                if name in _INT_FIELDS:
                    value = _mutate_int(value, rng)
                elif name in _BYTES_FIELDS:
                    value = _mutate_bytes(value, rng)
                else:
                    value = _mutate_str(value, rng)
                x = dataclasses.replace(x, **{name: value})
            if kind == "resign":  # signed by another key, then claiming the real key id
                x = dataclasses.replace(sign(x, forger), key_id=genuine.key_id)
            elif kind == "retired":
                assert retired is not None
                x = sign(x, retired)
        else:  # splice two genuine tokens field by field
            while True:
                picks = [rng.random() < 0.5 for _ in fields]
                if any(picks) and not all(picks):
                    break
            x = XCap(
                **{
                    f: getattr(other if p else genuine, f)
                    for f, p in zip(fields, picks, strict=True)
                }
            )
        yield kind, x


def test_fuzzed_xcaps_are_never_accepted_by_the_verifier(tmp_path: Path) -> None:
    rng = random.Random(0x5EC)
    now = 1_900_000_000
    # two handles on one key: the MRC's ring rotates it out, the test keeps signing with it
    ring = KeyRing.load_or_create(tmp_path / "keys", now - 7200)
    retired = KeyRing.load_or_create(tmp_path / "keys")
    forger = KeyRing.generate()
    holder = hashlib.sha256(b"alice").digest()
    xloc = XLocSet(1, [Replica([str(uuid.uuid4()), str(uuid.uuid4())], StripingPolicy(STRIPE, 2))])
    volume = str(uuid.uuid4())
    issuer = XCapIssuer(ring, lambda: now, 600)
    verifier = XCapVerifier(ring.public_keys)

    def check(x: XCap) -> None:
        verifier.verify(
            x, now=now + 1, holder=holder, file_id=x.file_id, rights=int(Rights.READ), xloc=xloc
        )

    old = issuer.issue(volume, 2, Rights.READ | Rights.WRITE, 0, xloc, holder)
    check(old)  # accepted and cached
    old_id = ring.current
    ring.rotate(now - 3600)
    ring.retire(old_id)
    with pytest.raises(XfsError, match="unknown key id"):
        check(old)  # rotated out: refused although its signature was cached
    genuine = issuer.issue(volume, 2, Rights.READ | Rights.WRITE, 0, xloc, holder)
    other = issuer.issue(volume, 3, Rights.READ, 1, xloc, holder)
    check(genuine)  # accepted (and now cached): the verifier is not refusing everything
    check(other)
    stats: dict[str, int] = {}
    accepted: list[tuple[str, XCap]] = []
    unchanged = undecodable = 0
    gen = mutants(genuine, other, rng, forger, retired)
    n = 0
    while sum(stats.values()) < 10_000 and n < 20_000:  # 10,000 distinct mutants checked
        n += 1
        kind, x = next(gen)
        if x is None:
            undecodable += 1
            continue
        if x in (genuine, other):  # an equivalent encoding of a genuine token
            unchanged += 1
            continue
        stats[kind] = stats.get(kind, 0) + 1
        try:
            check(x)
        except XfsError as e:
            assert e.code == errno.EACCES, (kind, x, e)
        else:
            accepted.append((kind, x))
    assert accepted == []
    checked = sum(stats.values())
    assert checked >= 10_000, (checked, undecodable, unchanged, stats)
    assert unchanged < n // 10, (unchanged, n)
    assert all(stats.get(k, 0) > 500 for k in KINDS), stats
    check(genuine)  # still accepted after all that


def test_fuzzed_xcaps_are_refused_by_a_real_osd(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            other = await w.create(pool, b"other")
            rng = random.Random(0xF00D)
            gen = mutants(w.layout.xcap, other.xcap, rng, KeyRing.generate())
            sent = 0
            marks = w.grid.audit_marks()
            while sent < 200:
                _, x = next(gen)
                if x is None or x in (w.layout.xcap, other.xcap):
                    continue
                if any(not -(1 << 63) <= getattr(x, f) < 1 << 64 for f in _INT_FIELDS):
                    continue
                call = w.write(pool, x, 0, b"fuzz") if sent % 2 else w.read(pool, x, 0)
                await refused(call)
                sent += 1
            assert sent == 200
            denials = [
                r
                for name, r in w.grid.audit_since(marks)
                if name.startswith("osd:") and r["event"] == audit.DENY
            ]
            assert len(denials) == 200
            assert {r["actor"] for r in denials} == {ALICE}
            assert {r["action"] for r in denials} == {OSD.read.wire_name, OSD.write.wire_name}
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- hostile numbers
def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (but the MRC's database and the audit logs) with its
    size (-1 for dirs) and mtime."""
    out: dict[str, tuple[int, int]] = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if "mrc" in rel.parts or "audit" in rel.parts:
            continue
        st = p.lstat()
        out[str(rel)] = (-1 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def test_hostile_object_numbers_and_ranges_are_refused(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path / "grid") as w, w.grid.client(w.alice) as pool:
            x, xloc = w.layout.xcap, w.layout.xloc
            osd0, osd1 = xloc.replicas[0].osds
            before = _tree(tmp_path)
            big = 1 << 41
            reads = [  # (osd, objno, offset, length)
                (osd0, -1, 0, 10),
                (osd1, -1, 0, 10),
                (osd0, big, 0, 10),
                (osd1, big + 1, 0, 10),
                (osd0, (1 << 64) - 2, 0, 10),
                (osd1, -(1 << 63), 0, 10),
                (osd0, 1, 0, 10),
                (osd1, 0, 0, 10),
                (osd1, 2, 0, 10),  # another stripe column
                (osd0, 0, -1, 10),
                (osd0, 0, 0, -1),
                (osd0, 0, STRIPE, 1),
                (osd0, 0, 0, STRIPE + 1),
                (osd0, 0, STRIPE - 1, 2),
                (osd0, 0, 1 << 63, 1),
                (osd0, 0, 0, (1 << 64) - 1),
                (osd0, 0, -(1 << 63), 1 << 62),
            ]
            for osd, objno, offset, length in reads:
                await denied(
                    w,
                    w.osd_call(pool, osd, OSD.read, ObjRead(x, xloc, objno, offset, length)),
                    action=OSD.read.wire_name,
                    code=errno.EINVAL,
                    service=osd_log(osd),
                )
            writes = [  # (osd, objno, offset, size of data)
                (osd0, -1, 0, 10),
                (osd0, big, 0, 10),
                (osd1, big + 1, 0, 10),
                (osd0, (1 << 64) - 2, 0, 1),
                (osd0, 1, 0, 10),
                (osd1, 0, 0, 10),
                (osd0, 0, -1, 10),
                (osd0, 0, STRIPE, 1),
                (osd0, 0, STRIPE - 1, 2),
                (osd0, 0, 0, STRIPE + 1),
                (osd0, 0, 1 << 63, 1),
                (osd0, 0, (1 << 64) - 1, 1),
            ]
            for osd, objno, offset, size in writes:
                await denied(
                    w,
                    w.osd_call(pool, osd, OSD.write, ObjWrite(x, xloc, objno, offset, b"h" * size)),
                    action=OSD.write.wire_name,
                    code=errno.EINVAL,
                    service=osd_log(osd),
                )
            scattered = [  # (offset, size of data, extents): one write of several ranges
                (0, 4, ((0, 2), (1, 2))),  # overlapping
                (0, 4, ((0, 2), (2, 0), (2, 2))),  # an empty range
                (5, 4, ((5, 2), (3, 2))),  # not ascending
                (0, 4, ((0, 2), (4, 1))),  # fewer bytes than the data holds
                (1, 4, ((0, 2), (4, 2))),  # the first range is not at the offset
                (0, 4, ((0, 2), (STRIPE - 1, 2))),  # past the object
                (0, 2048, tuple((i * 2, 1) for i in range(2048))),  # too many ranges
            ]
            for offset, size, ranges in scattered:
                request = ObjWrite(x, xloc, 0, offset, b"s" * size, False, ranges)
                await denied(
                    w,
                    w.osd_call(pool, osd0, OSD.write, request),
                    action=OSD.write.wire_name,
                    code=errno.EINVAL,
                    service=osd_log(osd0),
                )
            for osd in (osd0, osd1):
                await denied(
                    w,
                    w.osd_call(pool, osd, OSD.truncate, FileOp(x, xloc, -1)),
                    action=OSD.truncate.wire_name,
                    code=errno.EINVAL,
                    reason="negative size",
                    service=osd_log(osd),
                )
                # past 64 signed bits: out of range; a huge size within them is harmless,
                # it cuts nothing and creates nothing
                await denied(
                    w,
                    w.osd_call(pool, osd, OSD.truncate, FileOp(x, xloc, (1 << 64) - 1)),
                    action=OSD.truncate.wire_name,
                    code=errno.EINVAL,
                    reason="out of range",
                    service=osd_log(osd),
                )
                await w.osd_call(pool, osd, OSD.truncate, FileOp(x, xloc, (1 << 63) - 1))
            await w.still_serves()
            assert _tree(tmp_path) == before

    run(main)


# ----------------------------------------------------------------------------- TLS identities
_save = save_minted


def _user_claims(principal: str, vo: str, role: Role = Role.STANDARD) -> Claims:
    return Claims(CertKind.USER, principal, vo, role, ())


BAD_CERTS: dict[str, Callable[[PKI, Path, Grid], CertPaths]] = {
    "untrusted-ca": lambda p, d, g: _save(
        ca.mint_user(ca.mint_vo_ca("physics"), "alice"), d, "rogue"
    ),
    "expired": lambda p, d, g: ca.issue_user(
        p.vo_ca, "old", d, days=2, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    ),
    "not-yet-valid": lambda p, d, g: ca.issue_user(
        p.vo_ca, "early", d, days=30, not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    ),
    "chem-ca-claims-physics-user": lambda p, d, g: _save(
        forge(ca.load_ca(p.other_vo_ca), _user_claims("alice@physics", "physics", Role.SUPER)),
        d,
        "crossvo",
    ),
    "physics-ca-claims-an-osd": lambda p, d, g: _save(
        forge(
            ca.load_ca(p.vo_ca),
            Claims(
                CertKind.OSD, f"osd:{next(iter(g.osd_addresses))}", SERVICES_VO, Role.STANDARD, ()
            ),
        ),
        d,
        "fakeosd",
    ),
    "physics-ca-claims-the-mrc": lambda p, d, g: _save(
        forge(
            ca.load_ca(p.vo_ca),
            Claims(CertKind.MRC, f"mrc:{p.mrc_uuid}", SERVICES_VO, Role.STANDARD, ()),
        ),
        d,
        "fakemrc",
    ),
    "ca-certificate-as-a-peer": lambda p, d, g: CertPaths(
        p.vo_ca / ca.CA_CERT, p.vo_ca / ca.CA_KEY
    ),
    # names and attributes crafted to smuggle in groups or roles, signed by a trusted CA
    "group-injection": lambda p, d, g: _save(
        forge(
            ca.load_ca(p.vo_ca),
            Claims(
                CertKind.USER,
                "alice@physics",
                "physics",
                Role.STANDARD,
                ("users,role=super@physics",),
            ),
        ),
        d,
        "groupinject",
    ),
    "principal-injection": lambda p, d, g: _save(
        forge(
            ca.load_ca(p.vo_ca),
            Claims(CertKind.USER, "alice,role=super@physics", "physics", Role.STANDARD, ()),
        ),
        d,
        "principalinject",
    ),
    "group-of-another-vo": lambda p, d, g: _save(
        forge(
            ca.load_ca(p.vo_ca),
            Claims(CertKind.USER, "alice@physics", "physics", Role.STANDARD, ("admins@chem",)),
        ),
        d,
        "foreigngroup",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CERTS))
def test_bad_certificate_handshake_is_refused(pki: PKI, tmp_path: Path, case: str) -> None:
    async def main() -> None:
        async with world(pki, tmp_path / "grid") as w:
            cert = BAD_CERTS[case](pki, tmp_path / "certs", w.grid)

            async def handshake_refused(call: Awaitable[Any], service: str) -> None:
                # the refusal is recorded by the server, against the peer's address
                await assert_denied_and_audited(
                    w.grid,
                    call,
                    event=audit.CERT,
                    actor="127.0.0.1",
                    action="tls.",
                    service=service,
                    still_serves=w.still_serves,
                )

            async with w.grid.client(cert) as pool:
                await handshake_refused(
                    pool.call(w.grid.mrc_address, MRC.status, Empty(), expect=Kind.MRC), "mrc"
                )
                for uuid_, address in w.grid.osd_addresses.items():
                    await handshake_refused(
                        pool.call(address, OSD.status, Empty(), expect=f"osd:{uuid_}"),
                        osd_log(uuid_),
                    )
                # the same refusal again from the same address, within a minute: counted,
                # and the count written when the window ends (here: when the MRC stops)
                with pytest.raises(Unavailable):
                    await pool.call(
                        w.grid.mrc_address,
                        MRC.osd_heartbeat,
                        Heartbeat(str(uuid.uuid4()), "127.0.0.1:1", 1, 2),
                        expect=Kind.MRC,
                    )
                await w.still_serves()

    run(main)
    mrc_log = tmp_path / "grid" / "audit" / "mrc.log"
    refused = [
        r for r in audit.records(mrc_log) if r["event"] == audit.CERT and r["actor"] == "127.0.0.1"
    ]
    assert refused and refused[-1]["detail"].get("repeated", 0) >= 1, refused
    assert audit.verify(mrc_log).ok


def test_user_of_another_trusted_vo_is_accepted_as_itself(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            carol = pki.user("carol", vo_ca=pki.other_vo_ca)
            async with w.grid.client(carol) as pool:
                layout = await w.create(pool, b"carol", mode=0o644)
                assert layout.attr.owner == "carol@chem"
                await w.write(pool, layout.xcap, 0, b"chem data", layout=layout)
                assert await w.read(pool, layout.xcap, 0, layout=layout) == b"chem data"
                # and she is no one else: alice's 0600 file stays closed to her
                await denied(
                    w,
                    w.mrc_call(pool, MRC.open, Open(VOLUME, w.layout.attr.ino, os.O_RDONLY)),
                    actor="carol@chem",
                    action=MRC.open.wire_name,
                    service="mrc",
                )
                await denied(
                    w,
                    w.read(pool, w.layout.xcap, 0),
                    actor="carol@chem",
                    action=OSD.read.wire_name,
                    reason="issued to another certificate",
                )

    run(main)


# ----------------------------------------------------------------------------- authority
def test_heartbeats_only_from_the_osd_itself(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            (u0, a0), (u1, a1) = w.grid.osd_addresses.items()
            # a user certificate posing as an OSD
            async with w.grid.client(w.alice) as pool:
                await denied(
                    w,
                    w.mrc_call(pool, MRC.osd_heartbeat, Heartbeat(u0, a0, 1, 2)),
                    action=MRC.osd_heartbeat.wire_name,
                    code=errno.EPERM,
                    reason="may not call",
                    service="mrc",
                )
            async with w.grid.client(w.grid.osd_certs[u0]) as pool:
                await denied(
                    w,
                    w.mrc_call(
                        pool, MRC.osd_heartbeat, Heartbeat(u1, "127.0.0.1:1", 1 << 50, 1 << 50)
                    ),
                    actor=f"osd:{u0}",
                    action=MRC.osd_heartbeat.wire_name,
                    reason=f"may not report for OSD {u1}",
                    service="mrc",
                )
                # a service may not act as an administrator either
                await denied(
                    w,
                    w.mrc_call(pool, MRC.volume_create, VolumeCreate("osdvol")),
                    actor=f"osd:{u0}",
                    action=MRC.volume_create.wire_name,
                    reason="may not call",
                    service="mrc",
                )
                # its own heartbeat is fine
                reply = await w.mrc_call(pool, MRC.osd_heartbeat, Heartbeat(u0, a0, 1, 2))
                assert isinstance(reply, HeartbeatReply) and reply.xcap_keys
            async with w.grid.client(w.grid.root_user) as pool:
                status = await w.mrc_call(pool, MRC.status, Empty())
                addresses = {o.uuid: o.address for o in status.osds}
                assert addresses == {u0: a0, u1: a1}
            await w.still_serves()

    run(main)


def test_standard_user_may_not_create_volumes(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            for cert, who in (
                (w.alice, ALICE),
                (pki.user("dave", role=Role.ADVANCED), "dave@physics"),
            ):
                async with w.grid.client(cert) as pool:
                    await denied(
                        w,
                        w.mrc_call(pool, MRC.volume_create, VolumeCreate("mine")),
                        actor=who,
                        action=MRC.volume_create.wire_name,
                        code=errno.EPERM,
                        reason="may not call",
                        service="mrc",
                    )
                    await denied(
                        w,
                        w.mrc_call(pool, MRC.volume_delete, MRC.volume_delete.request(VOLUME)),
                        actor=who,
                        action=MRC.volume_delete.wire_name,
                        code=errno.EPERM,
                        reason="may not call",
                        service="mrc",
                    )

    run(main)


def test_client_refuses_a_server_that_is_not_the_expected_one(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            (u0, _), (u1, a1) = w.grid.osd_addresses.items()
            async with w.grid.client(w.alice) as pool:
                x = w.layout.xcap
                await refused(
                    pool.call(
                        a1, OSD.read, ObjRead(x, w.layout.xloc, 0, 0, 10), expect=f"osd:{u0}"
                    ),
                    reason=f"is osd:{u1}, not osd:{u0}",
                )
                await refused(
                    pool.call(a1, MRC.status, Empty(), expect=Kind.MRC), reason=f"is osd:{u1}"
                )
                await refused(
                    pool.call(w.grid.mrc_address, OSD.status, Empty(), expect=f"osd:{u0}"),
                    reason="not osd:",
                )
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- impostors
def test_osd_takes_xcap_keys_only_from_the_mrc(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        trust = TrustStore.load(pki.trust)
        impostor = pki.osd(str(uuid.uuid4()))
        evil = KeyRing.generate()
        beats: list[str] = []

        async def heartbeat(peer: Any, req: Heartbeat) -> HeartbeatReply:
            beats.append(req.uuid)
            return HeartbeatReply(evil.public_keys())

        dispatcher = Dispatcher()
        dispatcher.register(MRC.osd_heartbeat, heartbeat)
        fake_mrc = RPCServer(
            dispatcher=dispatcher,
            ssl_context=tls.server_context(impostor.cert, impostor.key, trust.ssl_cafile_bundle()),
            identify=trust.identify,
            host="127.0.0.1",
            port=0,
            frame_limit=META_FRAME_LIMIT,
        )
        store = ObjectStore(tmp_path / "osd")
        store.open()
        osd = OSDService(
            OSDConfig(
                tls=service_tls(pki.osd(store.uuid), pki),
                data_dir=tmp_path / "osd",
                mrc="",
                port=0,
                heartbeat_interval=HEARTBEAT,
                grace=0.5,
            )
        )
        async with trio.open_nursery() as n:
            try:
                await n.start(fake_mrc.serve)
                osd.config = dataclasses.replace(osd.config, mrc=f"127.0.0.1:{fake_mrc.port}")
                await n.start(osd.run)
                assert osd.server is not None
                await trio.sleep(5 * HEARTBEAT)
                alice = pki.user("alice")
                xloc = XLocSet(1, [Replica([store.uuid], StripingPolicy(STRIPE, 1))])
                forged = XCapIssuer(evil, time.time, 600).issue(
                    str(uuid.uuid4()),
                    2,
                    Rights.READ | Rights.WRITE,
                    0,
                    xloc,
                    Grid.identity(alice).fingerprint,
                )
                async with open_client(trust, alice) as pool:
                    await refused(
                        pool.call(
                            f"127.0.0.1:{osd.server.port}",
                            OSD.write,
                            ObjWrite(forged, xloc, 0, 0, b"owned"),
                            expect=f"osd:{store.uuid}",
                        ),
                        reason="unknown key id",
                    )
                assert beats == []
                denials = [
                    r
                    for r in audit.records(tmp_path / "osd" / "audit.log")
                    if r["event"] == audit.DENY
                ]
                assert [(r["actor"], r["action"]) for r in denials] == [
                    (ALICE, OSD.write.wire_name)
                ]
                assert "unknown key id" in denials[0]["detail"]["why"]
            finally:
                await osd.stop()
                await fake_mrc.stop(0.5)
                n.cancel_scope.cancel()

    run(main)


# ----------------------------------------------------------------------------- truncate epochs
def test_xcap_replayed_after_a_truncate_may_not_write(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            ino, old = w.layout.attr.ino, w.layout
            osds = old.xloc.replicas[0].osds
            # alice truncates: a new epoch and a new XCap, and every OSD is told
            result = await w.mrc_call(pool, MRC.setattr, SetAttr(VOLUME, ino, size=100))
            new = result.layout
            assert new is not None
            assert new.xcap.truncate_epoch == old.xcap.truncate_epoch + 1
            for osd in osds:
                await w.osd_call(pool, osd, OSD.truncate, FileOp(new.xcap, new.xloc, 100))
            w.data = {0: w.data[0][:100], 1: b""}
            stale = "older than 1"
            for objno in (0, 1):  # the old XCap may no longer write ...
                await denied(
                    w,
                    w.write(pool, old.xcap, objno, b"resurrected"),
                    action=OSD.write.wire_name,
                    reason=stale,
                    service=osd_log(w.osd_of(objno)),
                )
            for osd in osds:  # ... nor truncate (which would cut what came after)
                await denied(
                    w,
                    w.osd_call(pool, osd, OSD.truncate, FileOp(old.xcap, old.xloc)),
                    action=OSD.truncate.wire_name,
                    reason=stale,
                    service=osd_log(osd),
                )
            # reading is not fenced: a truncate changes no permission, and what is read is
            # the truncated file
            assert await w.read(pool, old.xcap, 0) == w.data[0]
            assert await w.read(pool, old.xcap, 1) == b""
            # a size reported under the old epoch is ignored: the truncate came after it
            attr = await w.mrc_call(pool, MRC.update_size, UpdateSize(VOLUME, ino, 9999, old.xcap))
            assert attr.size == 100
            # the new XCap works; after an O_TRUNC open (epoch 2) it is stale in turn
            await w.write(pool, new.xcap, 1, b"after")
            w.data[1] = b"after"
            trunc = await w.mrc_call(pool, MRC.open, Open(VOLUME, ino, RW | os.O_TRUNC))
            assert trunc.xcap.truncate_epoch == 2 and trunc.attr.size == 0
            for osd in osds:
                await w.osd_call(pool, osd, OSD.truncate, FileOp(trunc.xcap, trunc.xloc, 0))
            w.data = {0: b"", 1: b""}
            await denied(
                w,
                w.write(pool, new.xcap, 1, b"late"),
                action=OSD.write.wire_name,
                reason="older than 2",
            )
            await w.write(pool, trunc.xcap, 0, b"fresh")
            w.data[0] = b"fresh"
            # O_RDONLY|O_TRUNC is checked for write, and its XCap may truncate the OSDs
            ro_trunc = await w.mrc_call(pool, MRC.open, Open(VOLUME, ino, os.O_RDONLY | os.O_TRUNC))
            assert ro_trunc.xcap.rights == int(Rights.READ | Rights.TRUNCATE)
            for osd in osds:
                await w.osd_call(pool, osd, OSD.truncate, FileOp(ro_trunc.xcap, ro_trunc.xloc, 0))
            w.data = {0: b""}
            await w.still_serves()

    run(main)


def test_a_writer_renews_its_xcap_after_another_clients_truncate(pki: PKI, tmp_path: Path) -> None:
    """Two sessions of the library: B's truncate fences A's XCap, A renews and goes on."""

    async def main() -> None:
        async with (
            world(pki, tmp_path) as w,
            w.grid.client(w.alice) as pa,
            w.grid.client(w.alice) as pb,
            trio.open_nursery() as n,
        ):
            who = Grid.identity(w.alice)
            a, b = (
                Session(
                    pool=p,
                    mrc=w.grid.mrc_address,
                    volume=VOLUME,
                    identity=who,
                    nursery=n,
                    clock=time.time,
                )
                for p in (pa, pb)
            )
            layout = await w.create(pa, b"shared")
            fa = await a.open(layout.attr.ino, RW)
            await fa.write(0, b"A" * 100)
            await fa.flush()
            await fa.write(200, b"B" * 10)  # held back in A's write-behind buffer
            marks = w.grid.audit_marks()
            await b.setattr(layout.attr.ino, size=50)  # epoch 1, the OSDs truncated
            await fa.flush()  # refused once at the OSD, renewed at the MRC, sent again
            assert fa.layout.xcap.truncate_epoch == 1
            refusals = [r for _, r in w.grid.audit_since(marks) if r["event"] == audit.DENY]
            assert refusals and all("truncate epoch 0" in r["detail"]["why"] for r in refusals)
            fb = await b.open(layout.attr.ino, os.O_RDONLY)
            assert fb.size == 210
            assert await fb.read(0, 300) == b"A" * 50 + bytes(150) + b"B" * 10
            await a.release(fa)
            await b.release(fb)
            await w.still_serves()
            n.cancel_scope.cancel()

    run(main)


def test_update_size_needs_a_write_xcap_of_the_file(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            a = w.layout
            ino, size = a.attr.ino, a.attr.size
            b = await w.create(pool, b"b", mode=0o666)
            expired = _issued(a.xcap, w, at=time.time() - 3600, lifetime=600)
            for xcap, reason in (
                (b.xcap, "issued for"),
                (dataclasses.replace(a.xcap, expires=a.xcap.expires + 1), "bad signature"),
                (sign(a.xcap, KeyRing.generate()), "unknown key id"),
                (expired, "expired"),
            ):
                await denied(
                    w,
                    w.mrc_call(pool, MRC.update_size, UpdateSize(VOLUME, ino, 1 << 40, xcap)),
                    action=MRC.update_size.wire_name,
                    reason=reason,
                    service="mrc",
                )
            async with w.grid.client(w.bob) as bob:
                # bob may write b, but his XCap of b does not let him size a; nor does
                # alice's XCap of a, presented on his connection
                mine = await w.mrc_call(bob, MRC.open, Open(VOLUME, b.attr.ino, RW))
                for xcap, reason in (
                    (mine.xcap, "issued for"),
                    (a.xcap, "issued to another certificate"),
                ):
                    await denied(
                        w,
                        w.mrc_call(bob, MRC.update_size, UpdateSize(VOLUME, ino, 1 << 40, xcap)),
                        actor=BOB,
                        action=MRC.update_size.wire_name,
                        reason=reason,
                        service="mrc",
                    )
                attr = await w.mrc_call(
                    bob, MRC.update_size, UpdateSize(VOLUME, b.attr.ino, 77, mine.xcap)
                )
                assert attr.size == 77
            assert (await w.mrc_call(pool, MRC.getattr, Ino(VOLUME, ino))).size == size
            attr = await w.mrc_call(pool, MRC.update_size, UpdateSize(VOLUME, ino, 5000, a.xcap))
            assert attr.size == 5000

    run(main)


# ----------------------------------------------------------------------------- lifetime
LIFETIME = 600  # the grid's xcap_lifetime


def test_renewal_rechecks_permission_and_the_old_xcap_expires(pki: PKI, tmp_path: Path) -> None:
    clock = ShiftedClock()

    async def main() -> None:
        async with (
            world(pki, tmp_path, clock=clock) as w,
            w.grid.client(w.alice) as pool,
            w.grid.client(w.grid.root_user) as admin,
        ):
            c = await w.create(pool, b"c", mode=0o644)
            d = await w.create(pool, b"d", mode=0o600)
            await w.write(pool, c.xcap, 0, b"c-data", layout=c)
            await w.write(pool, d.xcap, 0, b"d-data", layout=d)
            # alice takes her own access away from c; root gives d to bob
            await w.mrc_call(pool, MRC.setattr, SetAttr(VOLUME, c.attr.ino, mode=0))
            await w.mrc_call(admin, MRC.setattr, SetAttr(VOLUME, d.attr.ino, owner=BOB))
            for layout in (c, d):
                for flags in (RW, os.O_RDONLY):
                    await denied(
                        w,
                        w.mrc_call(pool, MRC.open, Open(VOLUME, layout.attr.ino, flags)),
                        action=MRC.open.wire_name,
                        service="mrc",
                    )
                # the XCap already held works until it expires (the documented window) ...
                assert await w.read(pool, layout.xcap, 0, layout=layout) == (
                    b"c-data" if layout is c else b"d-data"
                )
            # (expires counts whole seconds from when it was issued, and this test may
            # take a second of real time on a busy machine: 2 s of margin)
            clock.advance(LIFETIME - 2)
            await w.write(pool, c.xcap, 0, b"still mine", layout=c)
            clock.advance(2)
            for layout in (c, d):  # ... and not longer
                await denied(
                    w,
                    w.read(pool, layout.xcap, 0, layout=layout),
                    action=OSD.read.wire_name,
                    reason="expired",
                )
                await denied(
                    w,
                    w.write(pool, layout.xcap, 0, b"late", layout=layout),
                    action=OSD.write.wire_name,
                    reason="expired",
                )
                await denied(
                    w,
                    w.mrc_call(
                        pool, MRC.update_size, UpdateSize(VOLUME, layout.attr.ino, 1, layout.xcap)
                    ),
                    action=MRC.update_size.wire_name,
                    reason="expired",
                )

    run(main)


def test_client_renewal_is_refused_after_chmod(pki: PKI, tmp_path: Path) -> None:
    """The library's own renewal (``OpenFile.fresh_layout``) re-checks at the MRC."""
    clock = ShiftedClock()

    async def main() -> None:
        async with (
            world(pki, tmp_path, clock=clock) as w,
            w.grid.client(w.alice) as pool,
            trio.open_nursery() as n,
        ):
            session = Session(
                pool=pool,
                mrc=w.grid.mrc_address,
                volume=VOLUME,
                identity=Grid.identity(w.alice),
                nursery=n,
                clock=clock,
            )
            layout = await w.create(pool, b"e", mode=0o644)
            f = await session.open(layout.attr.ino, RW)
            await f.write(0, b"before")
            await f.flush()
            first = f.layout.xcap
            clock.advance(LIFETIME - session.xcap_renew_margin + 1)  # renewal is due
            await f.write(0, b"renewed")
            await f.flush()
            assert f.layout.xcap.expires > first.expires  # renewed, permission re-checked
            await session.setattr(layout.attr.ino, mode=0)
            clock.advance(LIFETIME - session.xcap_renew_margin + 1)
            await f.write(0, b"after chmod")
            marks = w.grid.audit_marks()
            with pytest.raises(XfsError) as e:
                await f.flush()
            assert e.value.code == errno.EACCES, e.value
            assert any(
                r["event"] == audit.DENY
                and r["action"] == MRC.open.wire_name
                and r["actor"] == ALICE
                for _, r in w.grid.audit_since(marks)
            )
            await w.still_serves()
            n.cancel_scope.cancel()

    run(main)


def test_every_xcap_granted_is_checked_and_audited(pki: PKI, tmp_path: Path) -> None:
    """Each way an XCap reaches a client (create, open, truncate, ftruncate, renewal
    through ``replica_failed``) leaves an ``xcap`` record saying why it was granted; a
    renewal is checked against the file as it is now: after a chmod to 0600, or with
    the way to the file closed, bob's reader gets EACCES, audited, not a fresh XCap."""

    async def main() -> None:
        async with (
            world(pki, tmp_path) as w,
            w.grid.client(w.alice) as alice,
            w.grid.client(w.bob) as bob,
        ):

            async def granted(call: Awaitable[Any], basis: str, actor: str = ALICE) -> Any:
                marks = w.grid.audit_marks()
                reply = await call
                issued = [r for _, r in w.grid.audit_since(marks) if r["event"] == "xcap"]
                assert [(r["actor"], r["detail"]["basis"]) for r in issued] == [(actor, basis)]
                assert issued[0]["detail"]["volume"] == VOLUME
                return reply

            sub = await w.mrc_call(alice, MRC.mkdir, MkNod(VOLUME, 1, b"sub", stat.S_IFDIR | 0o755))
            made = await granted(
                w.mrc_call(
                    alice,
                    MRC.create,
                    Create(
                        VOLUME, sub.ino, b"r", stat.S_IFREG | 0o444, os.O_CREAT | os.O_EXCL | RW
                    ),
                ),
                "created",
            )  # read-only mode, and yet its maker writes it, as on Linux
            ino = made.attr.ino
            client = (await w.mrc_call(alice, MRC.client_open, Empty())).client
            first = (await w.mrc_call(alice, MRC.reserve_inos, InoAsk(VOLUME, client, 1))).first
            queued = NewFile(sub.ino, b"queued", first, 0o644, RW, 0, time.time_ns())
            batch = await granted(
                w.mrc_call(alice, MRC.create_many, CreateMany(VOLUME, client, [queued])), "created"
            )
            assert batch.files[0].layout.attr.ino == first  # (a create under a lease, sent)
            await w.write(alice, made.xcap, 0, b"shared", layout=made)
            await w.mrc_call(alice, MRC.setattr, SetAttr(VOLUME, ino, mode=0o644))
            await granted(w.mrc_call(alice, MRC.setattr, SetAttr(VOLUME, ino, size=6)), "checked")
            await granted(
                w.mrc_call(alice, MRC.setattr, SetAttr(VOLUME, ino, size=6, xcap=made.xcap)),
                "shown",
            )
            reader = await granted(
                w.mrc_call(bob, MRC.open, Open(VOLUME, ino, os.O_RDONLY)), "checked", BOB
            )
            osd = reader.xloc.replicas[0].osds[0]
            renew = ReplicaFailed(reader.xcap, reader.xloc.version, osd)
            renewed = await granted(w.mrc_call(bob, MRC.replica_failed, renew), "checked", BOB)
            assert renewed.xcap.rights == int(Rights.READ)
            # the file closed to bob: no renewal
            await w.mrc_call(alice, MRC.setattr, SetAttr(VOLUME, ino, mode=0o600))
            await denied(
                w,
                w.mrc_call(bob, MRC.replica_failed, renew),
                actor=BOB,
                action=MRC.replica_failed.wire_name,
                service="mrc",
            )
            # nor with the file open to him but the way to it shut
            await w.mrc_call(alice, MRC.setattr, SetAttr(VOLUME, ino, mode=0o644))
            await granted(w.mrc_call(bob, MRC.replica_failed, renew), "checked", BOB)
            await w.mrc_call(alice, MRC.setattr, SetAttr(VOLUME, sub.ino, mode=0o700))
            await denied(
                w,
                w.mrc_call(bob, MRC.replica_failed, renew),
                actor=BOB,
                action=MRC.replica_failed.wire_name,
                service="mrc",
                reason="may not search",
            )

    run(main)


# ----------------------------------------------------------------------------- key rotation
def _signer(w: World, kid: str) -> KeyRing:
    """A ring holding only the MRC's key ``kid`` (read from its store while it is there)."""
    raw = w.grid.stored_keys()[0][kid]
    return KeyRing({kid: Ed25519PrivateKey.from_private_bytes(raw)}, kid)


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Until ``check()`` holds: OSDs learn the MRC's keys by heartbeat."""
    with trio.fail_after(50 * HEARTBEAT + 5):
        while not await check():
            await trio.sleep(HEARTBEAT / 2)


def test_rotated_out_and_wrong_key_xcaps_are_refused(pki: PKI, tmp_path: Path) -> None:
    clock = ShiftedClock()

    async def main() -> None:
        async with world(pki, tmp_path, clock=clock) as w, w.grid.client(w.alice) as pool:
            rotator = w.grid.mrc.rotator
            assert rotator is not None
            x, xloc = w.layout.xcap, w.layout.xloc
            fp = Grid.identity(w.alice).fingerprint
            k1 = x.key_id
            old_signer = _signer(w, k1)

            def mint(ring: KeyRing) -> XCap:
                return XCapIssuer(ring, clock, LIFETIME).issue(
                    x.volume, x.ino, Rights.READ | Rights.WRITE, x.truncate_epoch, xloc, fp
                )

            async def accepted(token: XCap) -> bool:
                try:
                    return await w.read(pool, token, 0) == w.data[0]
                except XfsError as e:
                    assert "unknown key id" in e.message, e
                    return False

            async def reopen() -> XCap:
                layout = await w.mrc_call(pool, MRC.open, Open(VOLUME, x.ino, RW))
                xcap: XCap = layout.xcap
                return xcap

            # a day later the next key is staged: published to the OSDs, not yet signing
            clock.advance(24 * 3600 - KEY_LEAD)
            rotator.step()
            keys, _, current = w.grid.stored_keys()
            assert current == k1
            (k2,) = set(keys) - {k1}
            await _eventually(lambda: accepted(mint(_signer(w, k2))))
            last_of_k1 = await reopen()
            assert last_of_k1.key_id == k1
            # then it signs; the old key still verifies what it signed
            clock.advance(KEY_LEAD)
            rotator.step()
            first_of_k2 = await reopen()
            assert first_of_k2.key_id == k2
            assert await accepted(first_of_k2) and await accepted(last_of_k1)
            # once all it signed has expired it is retired, and within a heartbeat refused
            clock.advance(LIFETIME + CLOCK_SKEW)
            rotator.step()
            assert k1 not in w.grid.stored_keys()[0]
            rotated_out = mint(old_signer)  # within its validity window: only the key is bad
            assert rotated_out.not_before <= clock() < rotated_out.expires

            async def refused_now() -> bool:
                return not await accepted(rotated_out)

            await _eventually(refused_now)
            for osd in xloc.replicas[0].osds:
                await denied(
                    w,
                    w.osd_call(
                        pool,
                        osd,
                        OSD.read,
                        ObjRead(rotated_out, xloc, 0 if osd == w.osd_of(0) else 1, 0, 10),
                    ),
                    action=OSD.read.wire_name,
                    reason="unknown key id",
                    service=osd_log(osd),
                )
            await denied(
                w,
                w.write(pool, rotated_out, 0, b"old key"),
                action=OSD.write.wire_name,
                reason="unknown key id",
            )
            await denied(
                w,
                w.mrc_call(pool, MRC.update_size, UpdateSize(VOLUME, x.ino, 1 << 30, rotated_out)),
                action=MRC.update_size.wire_name,
                reason="unknown key id",
            )
            # wrong keys: one the MRC never had, with its own id or claiming the real one
            wrong = mint(KeyRing.generate())
            await denied(
                w, w.read(pool, wrong, 0), action=OSD.read.wire_name, reason="unknown key id"
            )
            await denied(
                w,
                w.read(pool, dataclasses.replace(wrong, key_id=k2), 0),
                action=OSD.read.wire_name,
                reason="bad signature",
            )
            assert await accepted(await reopen())
            keys = [
                r["action"]
                for _, r in w.grid.audit_since({})
                if r["event"] == audit.ADMIN and r["action"].startswith("xcap_key")
            ]
            assert keys == ["xcap_key_stage", "xcap_key_promote", "xcap_key_retire"]

    run(main)


# ----------------------------------------------------------------------------- hostile file ids
def test_hostile_file_ids_touch_nothing_outside_the_data_dir(pki: PKI, tmp_path: Path) -> None:
    """Even XCaps signed with the MRC's real key (a compromised or buggy MRC) cannot name
    paths: ids with '..', absolute paths, NUL bytes or huge numbers are refused."""

    async def main() -> None:
        sentinel = tmp_path / "sentinel"
        sentinel.mkdir()
        (sentinel / "precious").write_bytes(b"keep me")
        async with world(pki, tmp_path / "grid") as w, w.grid.client(w.alice) as pool:
            x, xloc = w.layout.xcap, w.layout.xloc
            osd0, osd1 = xloc.replicas[0].osds
            ring = w.grid.keyring()
            fp = Grid.identity(w.alice).fingerprint
            before, listing = _tree(tmp_path), sorted(os.listdir(sentinel))
            # from objects/<pp>/<volume>/<ino> five levels up is tmp_path
            volumes = [
                "../../../../../sentinel",
                "../../../..",
                "..",
                ".",
                "",
                str(sentinel),
                "/etc",
                f"{x.volume}/../../../../../sentinel",
                f"{x.volume}\0",
                "\0",
                f"{x.volume}:{x.ino}",
                x.volume.upper(),
                f"{x.volume}\n",
            ]
            ids = [(v, x.ino) for v in volumes] + [
                (x.volume, ino) for ino in (0, -1, 1 << 63, (1 << 64) - 1, -(1 << 63))
            ]
            everything = Rights.READ | Rights.WRITE | Rights.TRUNCATE | Rights.DELETE
            for i, (volume, ino) in enumerate(ids):
                hostile = XCapIssuer(ring, time.time, 600).issue(
                    volume, ino, everything, 0, xloc, fp
                )
                osd = (osd0, osd1)[i % 2]
                objno = i % 2
                calls: list[tuple[Method[Any, Any], Any]] = [
                    (OSD.read, ObjRead(hostile, xloc, objno, 0, 10)),
                    (OSD.write, ObjWrite(hostile, xloc, objno, 0, b"escape")),
                    (OSD.truncate, FileOp(hostile, xloc, 0)),
                    (OSD.size, FileOp(hostile, xloc)),
                    (OSD.fsync, FileOp(hostile, xloc)),
                    (OSD.delete, FileOp(hostile, xloc)),
                ]
                # (numbers past 64 signed bits are refused as they are decoded)
                code, reason = (
                    (errno.EINVAL, "out of range")
                    if ino >= 1 << 63
                    else (errno.EACCES, "names no file an OSD holds")
                )
                for method, request in calls:
                    await denied(
                        w,
                        w.osd_call(pool, osd, method, request),
                        action=method.wire_name,
                        code=code,
                        reason=reason,
                        service=osd_log(osd),
                    )
            assert _tree(tmp_path) == before
            assert sorted(os.listdir(sentinel)) == listing
            assert (sentinel / "precious").read_bytes() == b"keep me"
            for data_dir in w.grid.osd_dirs.values():  # nothing but the layout in the stores
                assert sorted(os.listdir(data_dir)) == ["FORMAT", "UUID", "objects"]

    run(main)


# ----------------------------------------------------------------------------- impostor OSDs
def test_a_user_certificate_posing_as_an_osd_gets_no_xcap(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            (u0, _), (u1, a1) = w.grid.osd_addresses.items()
            received: list[Any] = []

            async def read(peer: Any, req: ObjRead) -> Any:
                received.append(req)
                raise XfsError(errno.EIO, "stolen")

            dispatcher = Dispatcher()
            dispatcher.register(OSD.read, read)
            # alice's own certificate, and one the VO CA signed claiming to be OSD u0
            forged = _save(
                forge(
                    ca.load_ca(pki.vo_ca),
                    Claims(CertKind.OSD, f"osd:{u0}", SERVICES_VO, Role.STANDARD, ()),
                ),
                tmp_path / "certs",
                "fakeosd",
            )
            impostors = [
                RPCServer(
                    dispatcher=dispatcher,
                    ssl_context=tls.server_context(
                        cert.cert, cert.key, w.grid.trust.ssl_cafile_bundle()
                    ),
                    identify=w.grid.trust.identify,
                    host="127.0.0.1",
                    port=0,
                    frame_limit=META_FRAME_LIMIT,
                )
                for cert in (w.alice, forged)
            ]
            async with trio.open_nursery() as n, w.grid.client(w.bob) as pool:
                for impostor in impostors:
                    await n.start(impostor.serve)
                fake, fake_osd = (f"127.0.0.1:{i.port}" for i in impostors)
                session = Session(
                    pool=pool,
                    mrc=w.grid.mrc_address,
                    volume=VOLUME,
                    identity=Grid.identity(w.bob),
                    nursery=n,
                    clock=time.time,
                )
                b = await w.create(pool, b"b")
                # the layout's address of an OSD points at alice's server, or at the other
                # OSD: the client checks who answers against the XLocSet's OSD and refuses.
                # A user certificate is not even a server certificate (no serverAuth): the
                # handshake fails; another OSD's is, but names another OSD.
                for address, refusal in (
                    (fake, "CERTIFICATE_VERIFY_FAILED"),
                    (fake_osd, "is not signed by the service CA"),
                    (a1, f"is osd:{u1}, not osd:{u0}"),
                ):
                    bad = dataclasses.replace(b, addresses={**b.addresses, u0: address})
                    with pytest.raises(XfsError) as e:
                        await session.osd_call(bad, u0, OSD.read, ObjRead(b.xcap, b.xloc, 0, 0, 10))
                    assert isinstance(e.value, Unavailable) == (address == fake), e.value
                    assert refusal in e.value.message, e.value
                assert received == []  # the XCap never reached an impostor
                for impostor in impostors:
                    await impostor.stop(0.5)
                n.cancel_scope.cancel()
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- revocation
def test_xcap_of_a_revoked_certificate_is_useless(tmp_path: Path) -> None:
    """Revoking the holder's certificate ends its XCaps too: the holder can no longer
    connect, and nobody else can present them."""
    pki = make_pki(tmp_path / "pki")  # this test revokes: a PKI of its own

    async def main() -> None:
        async with world(pki, tmp_path / "grid", crl_check_interval=0.1) as w:
            mallory = pki.user("mallory")
            async with w.grid.client(mallory) as pool:
                m = await w.create(pool, b"m")
                await w.write(pool, m.xcap, 0, b"mine", layout=m)
                osd = w.osd_of(0, m)
                marks = w.grid.audit_marks()
                ca.revoke(pki.vo_ca, cert=mallory.cert)
                # Every server she is connected to drops her connections once it has
                # loaded the new CRL; each loads it on its own clock, so wait for both
                # the MRC and the OSD the read goes to.
                with trio.fail_after(10):
                    while {"mrc", osd_log(osd)} - {
                        service
                        for service, r in w.grid.audit_since(marks)
                        if r["action"] == "revoked-connection-closed"
                        and r["actor"] == "mallory@physics"
                    }:
                        await trio.sleep(0.05)
            assert m.xcap.expires > time.time()  # the XCap itself is still valid
            async with w.grid.client(mallory) as pool:
                await assert_denied_and_audited(
                    w.grid,
                    w.read(pool, m.xcap, 0, layout=m),
                    event=audit.CERT,
                    actor="127.0.0.1",
                    action="tls.",
                    service=osd_log(osd),
                    still_serves=w.still_serves,
                )
            async with w.grid.client(w.bob) as pool:  # replayed from another user's connection
                await denied(
                    w,
                    w.read(pool, m.xcap, 0, layout=m),
                    actor=BOB,
                    action=OSD.read.wire_name,
                    reason="issued to another certificate",
                    service=osd_log(osd),
                )
                await denied(
                    w,
                    w.write(pool, m.xcap, 0, b"bob", layout=m),
                    actor=BOB,
                    action=OSD.write.wire_name,
                    reason="issued to another certificate",
                )

    run(main)
