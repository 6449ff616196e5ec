"""Security of a whole in-process grid: XCaps at the OSDs, identities and authority over TLS.

Every refusal is asserted exactly (``XfsError`` with its errno and reason, or
``Unavailable`` for a refused handshake), and after each one a well-behaved client on a
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import PKI
from tests.rpc.ingrid import HEARTBEAT, Grid, open_client, open_grid, service_tls
from xfs.common import ca, tls
from xfs.common.ca import CertPaths, Minted
from xfs.common.config import OSDConfig
from xfs.common.framing import META_FRAME_LIMIT
from xfs.common.identity import (
    SERVICES_VO,
    XFS_IDENTITY_OID,
    CertKind,
    Claims,
    TrustStore,
    encode_claims,
    subject_for,
)
from xfs.common.rpc import Dispatcher, Pool, RPCServer
from xfs.common.xcap import (
    KeyRing,
    XCapVerifier,
    decode_xcap,
    encode_xcap,
    sign,
)
from xfs.mrc.xcaps import XCapIssuer
from xfs.osd.objects import ObjectStore
from xfs.osd.service import OSDService
from xfs.proto.errors import Unavailable, XfsError
from xfs.proto.methods import (
    MRC,
    OSD,
    Create,
    Empty,
    FileOp,
    Heartbeat,
    HeartbeatReply,
    Ino,
    ObjRead,
    ObjWrite,
    Open,
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


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(DEADLINE):
            await fn()

    trio.run(bounded)


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
        return pool.call(
            self.grid.osd_addresses[uuid_], method, request, expect=f"osd:{uuid_}"
        )

    def mrc_call(self, pool: Pool, method: Any, request: Any) -> Awaitable[Any]:
        return pool.call(self.grid.mrc_address, method, request, expect=Kind.MRC)

    async def create(self, pool: Pool, name: bytes, mode: int = 0o600, volume: str = VOLUME,
                     flags: int = os.O_CREAT | os.O_EXCL | RW) -> FileLayout:
        return await self.mrc_call(
            pool, MRC.create, Create(volume, 1, name, stat.S_IFREG | mode, flags)
        )

    async def read(self, pool: Pool, xcap: XCap, objno: int, *, xloc: XLocSet | None = None,
                   layout: FileLayout | None = None) -> bytes:
        xloc = xloc or (layout or self.layout).xloc
        reply = await self.osd_call(pool, self.osd_of(objno, layout), OSD.read,
                                    ObjRead(xcap, xloc, objno, 0, STRIPE))
        return reply.data  # type: ignore[no-any-return]

    async def write(self, pool: Pool, xcap: XCap, objno: int, data: bytes, *,
                    xloc: XLocSet | None = None, layout: FileLayout | None = None) -> None:
        xloc = xloc or (layout or self.layout).xloc
        await self.osd_call(pool, self.osd_of(objno, layout), OSD.write,
                            ObjWrite(xcap, xloc, objno, 0, data))

    async def still_serves(self) -> None:
        """A well-behaved client, on new connections, reads alice's data back intact."""
        async with self.grid.client(self.alice) as pool:
            for objno, data in self.data.items():
                assert await self.read(pool, self.layout.xcap, objno) == data
            attr = await self.mrc_call(pool, MRC.getattr, Ino(VOLUME, self.layout.attr.ino))
            assert attr.ino == self.layout.attr.ino


@asynccontextmanager
async def world(pki: PKI, root: Path, *, osds: int = 2) -> AsyncIterator[World]:
    alice, bob = pki.user("alice"), pki.user("bob")
    async with open_grid(pki, root, osds=osds) as grid:
        async with grid.client(grid.root_user) as admin:
            await admin.call(
                grid.mrc_address,
                MRC.volume_create,
                VolumeCreate(VOLUME, owner="alice@physics", mode=0o777,
                             striping=StripingPolicy(STRIPE, 2)),
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
    "signature-bit-flip": (_field("signature", lambda x, w: flip(x.signature, 10)),
                           "bad signature"),
    "signature-high-bit": (_field("signature", lambda x, w: flip(x.signature, 63, 7)),
                           "bad signature"),
    "signature-truncated": (_field("signature", lambda x, w: x.signature[:63]),
                            "malformed signature"),
    "signature-extended": (_field("signature", lambda x, w: x.signature + b"\0"),
                           "malformed signature"),
    "signature-empty": (_field("signature", lambda x, w: b""), "malformed signature"),
    "ino": (_field("ino", lambda x, w: x.ino + 1), "bad signature"),
    "rights": (_field("rights", lambda x, w: 0xF), "bad signature"),
    "expires": (_field("expires", lambda x, w: x.expires + 86400), "bad signature"),
    "not_before": (_field("not_before", lambda x, w: x.not_before - 86400), "bad signature"),
    "holder": (_field("holder", lambda x, w: Grid.identity(w.bob).fingerprint), "bad signature"),
    "volume": (_field("volume", lambda x, w: str(uuid.uuid4())), "bad signature"),
    "truncate_epoch": (_field("truncate_epoch", lambda x, w: x.truncate_epoch + 1),
                       "bad signature"),
    "xloc_version": (_field("xloc_version", lambda x, w: x.xloc_version + 1), "bad signature"),
    "xloc_hash": (_field("xloc_hash", lambda x, w: hashlib.sha256(b"x").digest()),
                  "bad signature"),
    "key_id-unknown": (_field("key_id", lambda x, w: "0123456789abcdef"), "unknown key id"),
    "expired": (lambda x, w: _issued(x, w, at=time.time() - 3600, lifetime=600), "expired"),
    "zero-lifetime": (lambda x, w: _issued(x, w, at=time.time(), lifetime=0), "expired"),
    "not-yet-valid": (lambda x, w: _issued(x, w, at=time.time() + 3600, lifetime=600),
                      "not valid before"),
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
                await refused(w.read(pool, x, 0), reason=reason)
                await w.still_serves()
                await refused(w.write(pool, x, 1, b"mallory"), reason=reason)
                await w.still_serves()
                for uuid_ in xloc.replicas[0].osds:
                    await refused(w.osd_call(pool, uuid_, OSD.truncate, FileOp(x, xloc, 0)),
                                  reason=reason)
                    await refused(w.osd_call(pool, uuid_, OSD.delete, FileOp(x, xloc)),
                                  reason=reason)
                    await refused(w.osd_call(pool, uuid_, OSD.size, FileOp(x, xloc)),
                                  reason=reason)
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
            for cert in (w.bob, w.grid.root_user):  # a super user has no power at an OSD
                async with w.grid.client(cert) as pool:
                    await refused(w.read(pool, x, 0), reason="issued to another certificate")
                    await refused(w.write(pool, x, 0, b"bob was here"),
                                  reason="issued to another certificate")
                    await refused(w.osd_call(pool, osd0, OSD.truncate, FileOp(x, xloc)),
                                  reason="issued to another certificate")
                await w.still_serves()
            # a service certificate may not act as a user at an OSD at all
            for cert in (w.grid.osd_certs[other_osd], w.grid.pki.mrc):
                async with w.grid.client(cert) as pool:
                    await refused(w.read(pool, x, 0), reason="may not call")
                await w.still_serves()
            # OSD.delete admits the MRC, but the XCap still names alice
            async with w.grid.client(w.grid.pki.mrc) as pool:
                await refused(w.osd_call(pool, osd0, OSD.delete, FileOp(x, xloc)),
                              reason="issued to another certificate")
            await w.still_serves()

    run(main)


def test_xcap_is_bound_to_its_file(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            a = w.layout
            async with w.grid.client(w.grid.root_user) as admin:
                other_volume = await w.mrc_call(admin, MRC.volume_create, VolumeCreate(
                    "other", owner="bob@physics", mode=0o777, striping=StripingPolicy(STRIPE, 2)))
            async with w.grid.client(w.bob) as pool:
                b = await w.create(pool, b"b")
                await w.write(pool, b.xcap, 0, b"bob-data", layout=b)
                # bob may not open alice's 0600 file at the MRC
                await refused(w.mrc_call(pool, MRC.open, Open(VOLUME, a.attr.ino, os.O_RDONLY)))
                # so he points his own XCap at her file or at another volume: signature breaks
                for field, value in (("ino", a.attr.ino), ("volume", other_volume.id),
                                     ("volume", a.xcap.volume)):
                    forged = dataclasses.replace(b.xcap, **{field: value})
                    if forged == b.xcap:  # same volume: ino is the one that differs
                        continue
                    await refused(w.read(pool, forged, 0), reason="bad signature")
                    await refused(w.write(pool, forged, 0, b"x"), reason="bad signature")
                    await w.still_serves()
                # his genuine XCap of b with the XLocSet of a: refused unless the two sets
                # are the same, and then it addresses b, never a
                osd = w.osd_of(0, b)
                if osd in a.xloc.replicas[0].osds and a.xloc.digest() != b.xloc.digest():
                    await refused(w.osd_call(pool, osd, OSD.read,
                                             ObjRead(b.xcap, a.xloc, 0, 0, STRIPE)),
                                  reason="XLocSet hash")
                else:
                    got = await w.read(pool, b.xcap, 0, xloc=a.xloc, layout=b)
                    assert got == b"bob-data"
                # alice's genuine XCap of a does not work for bob's b either: it names alice
                await refused(w.read(pool, a.xcap, 0, layout=b),
                              reason="issued to another certificate")
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
                await refused(w.write(pool, x, objno, b"overwrite", layout=ro),
                              reason="grants rights")
                await w.still_serves()
            for osd in xloc.replicas[0].osds:
                for method in (OSD.truncate, OSD.delete, OSD.fsync):
                    await refused(w.osd_call(pool, osd, method, FileOp(x, xloc, 0)),
                                  reason="grants rights")
                    await w.still_serves()
            # write-only may not read, and no user XCap may delete (only the MRC's may)
            wo = await w.mrc_call(pool, MRC.open, Open(VOLUME, ino, os.O_WRONLY))
            await refused(w.read(pool, wo.xcap, 0, layout=wo), reason="grants rights")
            await refused(w.osd_call(pool, w.osd_of(0), OSD.delete, FileOp(w.layout.xcap,
                                                                           w.layout.xloc)),
                          reason="grants rights")
            await w.still_serves()

    run(main)


def test_forged_xlocset_is_refused(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            x, xloc = w.layout.xcap, w.layout.xloc
            (replica,) = xloc.replicas
            stranger = str(uuid.uuid4())
            forged = {
                "version": (dataclasses.replace(xloc, version=xloc.version + 1),
                            "XLocSet version"),
                "columns-swapped": (dataclasses.replace(xloc, replicas=[
                    Replica(replica.osds[::-1], replica.striping)]), "XLocSet hash"),
                "stripe-size": (dataclasses.replace(xloc, replicas=[
                    Replica(replica.osds, StripingPolicy(2 * STRIPE, 2))]), "XLocSet hash"),
                "width-1": (dataclasses.replace(xloc, replicas=[
                    Replica(replica.osds[:1], StripingPolicy(STRIPE, 1))]), "XLocSet hash"),
                "extra-replica": (dataclasses.replace(xloc, replicas=[
                    replica, Replica([stranger, stranger], replica.striping)]), "XLocSet hash"),
                "osd-replaced": (dataclasses.replace(xloc, replicas=[
                    Replica([replica.osds[0], stranger], replica.striping)]), "XLocSet hash"),
                "update-policy": (dataclasses.replace(xloc, update_policy=UpdatePolicy.RW),
                                  "XLocSet hash"),
            }
            for name, (bad, reason) in forged.items():
                assert bad.digest() != x.xloc_hash, name
                await refused(w.read(pool, x, 0, xloc=bad), reason=reason)
                await refused(w.write(pool, x, 0, b"forged", xloc=bad), reason=reason)
                await refused(w.osd_call(pool, w.osd_of(1), OSD.truncate, FileOp(x, bad, 0)),
                              reason=reason)
                await w.still_serves()
            # a genuine XCap and XLocSet of a file that is not on this OSD
            async with w.grid.client(w.grid.root_user) as admin:
                await w.mrc_call(admin, MRC.volume_create, VolumeCreate(
                    "narrow", owner="alice@physics", mode=0o777,
                    striping=StripingPolicy(STRIPE, 1)))
            n = await w.create(pool, b"n", volume="narrow")
            (holder,) = n.xloc.replicas[0].osds
            elsewhere = next(u for u in w.grid.osd_addresses if u != holder)
            await refused(w.osd_call(pool, elsewhere, OSD.write,
                                     ObjWrite(n.xcap, n.xloc, 0, 0, b"stray")),
                          reason="not in the XLocSet")
            await refused(w.osd_call(pool, elsewhere, OSD.read,
                                     ObjRead(n.xcap, n.xloc, 0, 0, 10)),
                          reason="not in the XLocSet")
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- fuzz
_INT_FIELDS = ("ino", "rights", "truncate_epoch", "xloc_version", "not_before", "expires")
_BYTES_FIELDS = ("xloc_hash", "holder", "signature")
_STR_FIELDS = ("volume", "key_id")


def _mutate_int(v: int, rng: random.Random) -> int:
    return rng.choice([
        v + 1, v - 1, v ^ (1 << rng.randrange(63)), -v, 0, -1, (1 << 63) - 1,
        rng.randrange(-(1 << 63), 1 << 63),
    ])


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
        return v[:i] + rng.choice("0123456789abcdef-:x\0é") + v[i + 1:]
    if op == 1:
        return v.upper()
    if op == 2:
        return v + rng.choice(["0", ":", " ", "\0"])
    return str(uuid.UUID(int=rng.getrandbits(128)))


def mutants(genuine: XCap, other: XCap, rng: random.Random,
            forger: KeyRing) -> Iterator[tuple[str, XCap | None]]:
    """Endless mutations of ``genuine``: (kind, XCap), or (kind, None) if undecodable."""
    wire = encode_xcap(genuine)
    fields = [f.name for f in dataclasses.fields(XCap)]
    while True:
        kind = rng.choices(["bytes", "field", "fields", "splice", "resign"],
                           weights=[35, 35, 10, 10, 10])[0]
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
        if kind in ("field", "fields", "resign"):
            for name in rng.sample(fields, 1 if kind != "fields" else rng.randint(2, 4)):
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
        else:  # splice two genuine tokens field by field
            while True:
                picks = [rng.random() < 0.5 for _ in fields]
                if any(picks) and not all(picks):
                    break
            x = XCap(**{f: getattr(other if p else genuine, f)
                        for f, p in zip(fields, picks, strict=True)})
        yield kind, x


def test_fuzzed_xcaps_are_never_accepted_by_the_verifier() -> None:
    rng = random.Random(0x5EC)
    ring, forger = KeyRing.generate(), KeyRing.generate()
    now = 1_900_000_000
    holder = hashlib.sha256(b"alice").digest()
    xloc = XLocSet(1, [Replica([str(uuid.uuid4()), str(uuid.uuid4())],
                                StripingPolicy(STRIPE, 2))])
    volume = str(uuid.uuid4())
    issuer = XCapIssuer(ring, lambda: now, 600)
    genuine = issuer.issue(volume, 2, Rights.READ | Rights.WRITE, 0, xloc, holder)
    other = issuer.issue(volume, 3, Rights.READ, 1, xloc, holder)
    verifier = XCapVerifier(ring.public_keys)

    def check(x: XCap) -> None:
        verifier.verify(x, now=now + 1, holder=holder, file_id=x.file_id,
                        rights=int(Rights.READ), xloc=xloc)

    check(genuine)  # accepted (and now cached): the verifier is not refusing everything
    check(other)
    stats: dict[str, int] = {}
    accepted: list[tuple[str, XCap]] = []
    unchanged = undecodable = 0
    gen = mutants(genuine, other, rng, forger)
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
    assert all(stats.get(k, 0) > 500 for k in ("bytes", "field", "fields", "splice", "resign"))
    check(genuine)  # still accepted after all that


def test_fuzzed_xcaps_are_refused_by_a_real_osd(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w, w.grid.client(w.alice) as pool:
            other = await w.create(pool, b"other")
            rng = random.Random(0xF00D)
            gen = mutants(w.layout.xcap, other.xcap, rng, KeyRing.generate())
            sent = 0
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
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- hostile numbers
def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (but the MRC's database) with its size, -1 for dirs."""
    out: dict[str, int] = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if "mrc" in rel.parts:
            continue
        out[str(rel)] = -1 if p.is_dir() else p.lstat().st_size
    return out


def test_hostile_object_numbers_and_ranges_are_refused(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path / "grid") as w, w.grid.client(w.alice) as pool:
            x, xloc = w.layout.xcap, w.layout.xloc
            osd0, osd1 = xloc.replicas[0].osds
            before = _tree(tmp_path)
            big = 1 << 41
            reads = [  # (osd, objno, offset, length)
                (osd0, -1, 0, 10), (osd1, -1, 0, 10), (osd0, big, 0, 10), (osd1, big + 1, 0, 10),
                (osd0, (1 << 64) - 2, 0, 10), (osd1, -(1 << 63), 0, 10),
                (osd0, 1, 0, 10), (osd1, 0, 0, 10), (osd1, 2, 0, 10),  # another stripe column
                (osd0, 0, -1, 10), (osd0, 0, 0, -1), (osd0, 0, STRIPE, 1),
                (osd0, 0, 0, STRIPE + 1),
                (osd0, 0, STRIPE - 1, 2), (osd0, 0, 1 << 63, 1), (osd0, 0, 0, (1 << 64) - 1),
                (osd0, 0, -(1 << 63), 1 << 62),
            ]
            for osd, objno, offset, length in reads:
                await refused(w.osd_call(pool, osd, OSD.read,
                                         ObjRead(x, xloc, objno, offset, length)),
                              code=errno.EINVAL)
                await w.still_serves()
            writes = [  # (osd, objno, offset, size of data)
                (osd0, -1, 0, 10), (osd0, big, 0, 10), (osd1, big + 1, 0, 10),
                (osd0, (1 << 64) - 2, 0, 1), (osd0, 1, 0, 10), (osd1, 0, 0, 10),
                (osd0, 0, -1, 10), (osd0, 0, STRIPE, 1), (osd0, 0, STRIPE - 1, 2),
                (osd0, 0, 0, STRIPE + 1), (osd0, 0, 1 << 63, 1), (osd0, 0, (1 << 64) - 1, 1),
            ]
            for osd, objno, offset, size in writes:
                await refused(w.osd_call(pool, osd, OSD.write,
                                         ObjWrite(x, xloc, objno, offset, b"h" * size)),
                              code=errno.EINVAL)
                await w.still_serves()
            for osd in (osd0, osd1):
                await refused(w.osd_call(pool, osd, OSD.truncate, FileOp(x, xloc, -1)),
                              code=errno.EINVAL)
                await w.still_serves()
                # a huge size is harmless: it cuts nothing and creates nothing
                await w.osd_call(pool, osd, OSD.truncate, FileOp(x, xloc, (1 << 64) - 1))
            await w.still_serves()
            assert _tree(tmp_path) == before

    run(main)


# ----------------------------------------------------------------------------- TLS identities
def _save(minted: Minted, dir: Path, name: str) -> CertPaths:
    dir.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(dir / f"{name}.crt", dir / f"{name}.key")
    paths.cert.write_bytes(minted.cert_pem())
    paths.key.write_bytes(minted.key_pem())
    return paths


def forge(issuer: Minted, claims: Claims) -> Minted:
    """A leaf certificate for any claims, signed by ``issuer`` whatever it may vouch for."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject_for(claims))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                              ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.UnrecognizedExtension(XFS_IDENTITY_OID, encode_claims(claims)),
                       critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Minted(cert, key)


def _user_claims(principal: str, vo: str, role: Role = Role.STANDARD) -> Claims:
    return Claims(CertKind.USER, principal, vo, role, ())


BAD_CERTS: dict[str, Callable[[PKI, Path, Grid], CertPaths]] = {
    "untrusted-ca": lambda p, d, g: _save(ca.mint_user(ca.mint_vo_ca("physics"), "alice"),
                                          d, "rogue"),
    "expired": lambda p, d, g: ca.issue_user(
        p.vo_ca, "old", d, days=2, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30)),
    "not-yet-valid": lambda p, d, g: ca.issue_user(
        p.vo_ca, "early", d, days=30, not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)),
    "chem-ca-claims-physics-user": lambda p, d, g: _save(
        forge(ca.load_ca(p.other_vo_ca), _user_claims("alice@physics", "physics", Role.SUPER)),
        d, "crossvo"),
    "physics-ca-claims-an-osd": lambda p, d, g: _save(
        forge(ca.load_ca(p.vo_ca), Claims(CertKind.OSD, f"osd:{next(iter(g.osd_addresses))}",
                                          SERVICES_VO, Role.STANDARD, ())), d, "fakeosd"),
    "physics-ca-claims-the-mrc": lambda p, d, g: _save(
        forge(ca.load_ca(p.vo_ca), Claims(CertKind.MRC, f"mrc:{p.mrc_uuid}", SERVICES_VO,
                                          Role.STANDARD, ())), d, "fakemrc"),
    "ca-certificate-as-a-peer": lambda p, d, g: CertPaths(p.vo_ca / ca.CA_CERT,
                                                          p.vo_ca / ca.CA_KEY),
}


@pytest.mark.parametrize("case", list(BAD_CERTS))
def test_bad_certificate_handshake_is_refused(pki: PKI, tmp_path: Path, case: str) -> None:
    async def main() -> None:
        async with world(pki, tmp_path / "grid") as w:
            cert = BAD_CERTS[case](pki, tmp_path / "certs", w.grid)
            async with w.grid.client(cert) as pool:
                with pytest.raises(Unavailable):
                    await pool.call(w.grid.mrc_address, MRC.status, Empty(), expect=Kind.MRC)
                await w.still_serves()
                for uuid_, address in w.grid.osd_addresses.items():
                    with pytest.raises(Unavailable):
                        await pool.call(address, OSD.status, Empty(), expect=f"osd:{uuid_}")
                    await w.still_serves()
                with pytest.raises(Unavailable):
                    await pool.call(w.grid.mrc_address, MRC.osd_heartbeat,
                                    Heartbeat(str(uuid.uuid4()), "127.0.0.1:1", 1, 2),
                                    expect=Kind.MRC)
            await w.still_serves()

    run(main)


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
                await refused(w.mrc_call(pool, MRC.open,
                                         Open(VOLUME, w.layout.attr.ino, os.O_RDONLY)))
                await refused(w.read(pool, w.layout.xcap, 0),
                              reason="issued to another certificate")
            await w.still_serves()

    run(main)


# ----------------------------------------------------------------------------- authority
def test_heartbeats_only_from_the_osd_itself(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            (u0, a0), (u1, a1) = w.grid.osd_addresses.items()
            async with w.grid.client(w.alice) as pool:
                await refused(w.mrc_call(pool, MRC.osd_heartbeat, Heartbeat(u0, a0, 1, 2)),
                              code=errno.EPERM, reason="may not call")
            await w.still_serves()
            async with w.grid.client(w.grid.osd_certs[u0]) as pool:
                await refused(w.mrc_call(pool, MRC.osd_heartbeat,
                                         Heartbeat(u1, "127.0.0.1:1", 1 << 50, 1 << 50)),
                              reason=f"may not report for OSD {u1}")
                await w.still_serves()
                # a service may not act as an administrator either
                await refused(w.mrc_call(pool, MRC.volume_create, VolumeCreate("osdvol")),
                              reason="may not call")
                # its own heartbeat is fine
                reply = await w.mrc_call(pool, MRC.osd_heartbeat, Heartbeat(u0, a0, 1, 2))
                assert isinstance(reply, HeartbeatReply) and reply.xcap_keys
            async with w.grid.client(w.alice) as pool:
                status = await w.mrc_call(pool, MRC.status, Empty())
                addresses = {o.uuid: o.address for o in status.osds}
                assert addresses == {u0: a0, u1: a1}
            await w.still_serves()

    run(main)


def test_standard_user_may_not_create_volumes(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            for cert in (w.alice, pki.user("dave", role=Role.ADVANCED)):
                async with w.grid.client(cert) as pool:
                    await refused(w.mrc_call(pool, MRC.volume_create, VolumeCreate("mine")),
                                  code=errno.EPERM, reason="may not call")
                    await refused(w.mrc_call(pool, MRC.volume_delete,
                                             MRC.volume_delete.request(VOLUME)),
                                  code=errno.EPERM, reason="may not call")
                await w.still_serves()

    run(main)


def test_client_refuses_a_server_that_is_not_the_expected_one(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            (u0, _), (u1, a1) = w.grid.osd_addresses.items()
            async with w.grid.client(w.alice) as pool:
                x = w.layout.xcap
                await refused(pool.call(a1, OSD.read, ObjRead(x, w.layout.xloc, 0, 0, 10),
                                        expect=f"osd:{u0}"),
                              reason=f"is osd:{u1}, not osd:{u0}")
                await refused(pool.call(a1, MRC.status, Empty(), expect=Kind.MRC),
                              reason=f"is osd:{u1}")
                await refused(pool.call(w.grid.mrc_address, OSD.status, Empty(),
                                        expect=f"osd:{u0}"), reason="not osd:")
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
            ssl_context=tls.server_context(impostor.cert, impostor.key,
                                           trust.ssl_cafile_bundle()),
            identify=trust.identify, host="127.0.0.1", port=0, frame_limit=META_FRAME_LIMIT,
        )
        store = ObjectStore(tmp_path / "osd")
        store.open()
        osd = OSDService(OSDConfig(
            tls=service_tls(pki.osd(store.uuid), pki), data_dir=tmp_path / "osd",
            mrc="", port=0, heartbeat_interval=HEARTBEAT, grace=0.5))
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
                    str(uuid.uuid4()), 2, Rights.READ | Rights.WRITE, 0, xloc,
                    Grid.identity(alice).fingerprint)
                async with open_client(trust, alice) as pool:
                    await refused(pool.call(f"127.0.0.1:{osd.server.port}", OSD.write,
                                            ObjWrite(forged, xloc, 0, 0, b"owned"),
                                            expect=f"osd:{store.uuid}"),
                                  reason="unknown key id")
                assert beats == []
            finally:
                await osd.stop()
                await fake_mrc.stop(0.5)
                n.cancel_scope.cancel()

    run(main)
