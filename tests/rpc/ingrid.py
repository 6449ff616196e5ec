"""An in-process grid for RPC tests: one MRC and N OSDs in one trio nursery, on loopback.

    async with open_grid(pki, tmp_path) as grid:
        async with grid.client(alice) as pool:
            layout = await pool.call(grid.mrc_address, MRC.create, ..., expect=Kind.MRC)

Every server listens on 127.0.0.1 port 0 with its own data directory under ``root``; OSD
certificates name the uuid of the store created for them. ``open_grid`` returns once every
OSD has heartbeat (so it holds the MRC's XCap keys) and stops everything on the way out.

Each service writes its audit log to ``root/audit/<service>.log`` (outside the data
directories, so a test can compare those trees); :func:`assert_denied_and_audited` checks
a refusal, its audit record and that a well-behaved client is still served. All services
read ``clock`` (a :class:`ShiftedClock` lets a test move time forward past expiries).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager as AsyncCM
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import PKI
from xfs.common import audit, tls
from xfs.common.ca import CertPaths, Minted
from xfs.common.config import MRCConfig, OSDConfig, TLSConfig
from xfs.common.identity import (
    XFS_IDENTITY_OID,
    Claims,
    TrustStore,
    encode_claims,
    load_credential,
    subject_for,
)
from xfs.common.rpc import Pool, RetryPolicy, open_pool
from xfs.common.xcap import KeyRing
from xfs.mrc.service import MRCService
from xfs.mrc.shared import StoreKeys
from xfs.mrc.store import Store
from xfs.osd.objects import ObjectStore
from xfs.osd.service import OSDService
from xfs.proto.errors import Unavailable, XfsError
from xfs.proto.methods import MRC, Empty
from xfs.proto.records import Identity, Kind, Role

HEARTBEAT = 0.1  # seconds between OSD heartbeats
FAST_RETRY = RetryPolicy(attempts=2, first_backoff=0.01, max_backoff=0.05, connect_timeout=5.0)
AUDIT_WAIT = 5.0  # seconds a test waits for an audit record written after the reply


def run_within(deadline: float, fn: Callable[[], Awaitable[None]]) -> None:
    """Run the async test body ``fn`` under trio with an absolute deadline."""

    async def bounded() -> None:
        with trio.fail_after(deadline):
            await fn()

    trio.run(bounded)


def mrc_call(grid: Grid, pool: Pool, method: Any, request: Any) -> Awaitable[Any]:
    """Call ``method`` on the grid's MRC, insisting that it proves an MRC certificate."""
    return pool.call(grid.mrc_address, method, request, expect=Kind.MRC)


# ----------------------------------------------------------------------------- forged certificates
def save_minted(minted: Minted, dir: Path, name: str) -> CertPaths:
    """Write a minted certificate and key as ``dir/name.crt`` and ``dir/name.key``."""
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


class ShiftedClock:
    """Wall time plus an offset that only moves forward: expiry without waiting for it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Grid:
    pki: PKI
    root: Path
    trust: TrustStore
    mrc: MRCService
    mrc_address: str
    root_user: CertPaths  # a super user
    osds: list[OSDService] = field(default_factory=list)
    osd_dirs: dict[str, Path] = field(default_factory=dict)  # uuid -> data dir
    osd_addresses: dict[str, str] = field(default_factory=dict)  # uuid -> "host:port"
    osd_certs: dict[str, CertPaths] = field(default_factory=dict)  # uuid -> its certificate
    audit_logs: dict[str, Path] = field(default_factory=dict)  # "mrc" / "osd:<uuid>" -> log

    @property
    def mrc_dir(self) -> Path:
        return self.mrc.config.data_dir

    def stored_keys(self) -> tuple[dict[str, bytes], dict[str, float], str]:
        """The MRC's XCap keys as its store holds them: key id -> raw private key, key id
        -> since, the current key id."""
        with contextlib.closing(Store.open(self.mrc_dir / "mrc.db")) as store:
            return StoreKeys(store).load()

    def keyring(self) -> KeyRing:
        """The MRC's real XCap signing keys (a copy in memory), read from its store."""
        raws, since, current = self.stored_keys()
        keys = {kid: Ed25519PrivateKey.from_private_bytes(raw) for kid, raw in raws.items()}
        return KeyRing(keys, current, since=since)

    @staticmethod
    def identity(cert: CertPaths) -> Identity:
        return load_credential(cert.cert, cert.key).identity

    def client(self, cert: CertPaths, retry: RetryPolicy = FAST_RETRY) -> AsyncCM[Pool]:
        """A client pool (its own connections) under ``cert``."""
        return open_client(self.trust, cert, retry)

    def audit_marks(self) -> dict[str, int]:
        """How many records each audit log holds now (see ``audit_since``)."""
        return {name: len(self._records(path)) for name, path in self.audit_logs.items()}

    def audit_since(self, marks: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
        """(service, record) of every record written after ``marks``."""
        return [
            (name, record)
            for name, path in self.audit_logs.items()
            for record in self._records(path)[marks.get(name, 0) :]
        ]

    @staticmethod
    def _records(path: Path) -> list[dict[str, Any]]:
        return list(audit.records(path)) if path.exists() else []


async def assert_denied_and_audited(
    grid: Grid,
    call: Awaitable[Any],
    *,
    actor: str,
    action: str = "",
    code: int = errno.EACCES,
    reason: str = "",
    event: str = audit.DENY,
    service: str = "",
    still_serves: Callable[[], Awaitable[None]] | None = None,
) -> XfsError:
    """Await ``call``: it must be refused, leave an audit record, and harm no one else.

    The refusal is an ``XfsError`` with ``code`` whose message contains ``reason`` (for
    ``event="cert"``: a refused handshake, ``Unavailable``). A record of ``event`` by
    ``actor`` must appear in the audit log of ``service`` (any, if empty) with an action
    starting with ``action`` (a wire name such as ``"osd.write/1"``) and, for a denial,
    the errno's name as outcome and ``reason`` in its ``why``; every log's hash chain
    still verifies. Then ``still_serves`` (a well-behaved client on other connections).
    """
    marks = grid.audit_marks()
    with pytest.raises(XfsError) as caught:
        await call
    error = caught.value
    if event == audit.CERT:
        assert isinstance(error, Unavailable), error
    else:
        assert not isinstance(error, Unavailable), error
        assert error.code == code, error
        assert reason in error.message, error

    def matches(name: str, record: dict[str, Any]) -> bool:
        if service and name != service:
            return False
        if record["event"] != event or record["actor"] != actor:
            return False
        if not str(record["action"]).startswith(action):
            return False
        if event == audit.DENY:
            why = str(record["detail"].get("why", ""))
            return record["outcome"] == errno.errorcode[code] and reason in why
        return True

    with trio.move_on_after(AUDIT_WAIT):
        while not any(matches(n, r) for n, r in grid.audit_since(marks)):
            await trio.sleep(0.02)
    found = grid.audit_since(marks)
    assert any(matches(n, r) for n, r in found), (event, actor, action, reason, error, found)
    for path in grid.audit_logs.values():
        if path.exists():
            assert audit.verify(path).ok, path
    if still_serves is not None:
        await still_serves()
    return error


@asynccontextmanager
async def open_client(
    trust: TrustStore, cert: CertPaths, retry: RetryPolicy = FAST_RETRY
) -> AsyncIterator[Pool]:
    ctx = tls.client_context(cert.cert, cert.key, trust.ssl_cafile_bundle())
    async with open_pool(ctx, trust.identify, retry=retry) as pool:
        yield pool


def service_tls(cert: CertPaths, pki: PKI) -> TLSConfig:
    return TLSConfig(cert=cert.cert, key=cert.key, trust=list(pki.trust))


async def wait_for_osds(pool: Pool, mrc: str, uuids: set[str],
                        osds: list[OSDService]) -> None:
    """Poll ``MRC.status`` until every OSD of ``uuids`` is alive and holds the XCap keys."""
    while True:
        try:
            status = await pool.call(mrc, MRC.status, Empty(), expect=Kind.MRC)
            if uuids <= {o.uuid for o in status.osds if o.alive}:
                break
        except XfsError:
            pass
        await trio.sleep(0.02)
    for osd in osds:
        await osd.registered.wait()


@asynccontextmanager
async def open_grid(
    pki: PKI,
    root: Path,
    *,
    osds: int = 2,
    mrc_xcap_lifetime: float = 600.0,
    clock: Callable[[], float] = time.time,
    crl_check_interval: float = 10.0,
) -> AsyncIterator[Grid]:
    root.mkdir(parents=True, exist_ok=True)
    trust = TrustStore.load(pki.trust)
    mrc = MRCService(
        MRCConfig(
            tls=service_tls(pki.mrc, pki),
            data_dir=root / "mrc",
            port=0,
            xcap_lifetime=mrc_xcap_lifetime,
            grace=0.5,
            audit_log=root / "audit" / "mrc.log",
            crl_check_interval=crl_check_interval,
        ),
        clock=clock,
    )
    super_user = pki.user("root", role=Role.SUPER)
    async with trio.open_nursery() as nursery:
        services: list[MRCService | OSDService] = []
        try:
            await nursery.start(mrc.run)
            services.append(mrc)
            assert mrc.server is not None
            grid = Grid(pki, root, trust, mrc, f"127.0.0.1:{mrc.server.port}", super_user)
            grid.audit_logs["mrc"] = root / "audit" / "mrc.log"
            for i in range(osds):
                data = root / f"osd{i}"
                store = ObjectStore(data)
                store.open()
                cert = pki.osd(store.uuid)
                log = root / "audit" / f"osd{i}.log"
                osd = OSDService(
                    OSDConfig(
                        tls=service_tls(cert, pki),
                        data_dir=data,
                        mrc=grid.mrc_address,
                        port=0,
                        heartbeat_interval=HEARTBEAT,
                        grace=0.5,
                        audit_log=log,
                        crl_check_interval=crl_check_interval,
                    ),
                    clock=clock,
                )
                await nursery.start(osd.run)
                services.append(osd)
                assert osd.server is not None
                grid.osds.append(osd)
                grid.osd_dirs[osd.uuid] = data
                grid.osd_addresses[osd.uuid] = f"127.0.0.1:{osd.server.port}"
                grid.osd_certs[osd.uuid] = cert
                grid.audit_logs[f"osd:{osd.uuid}"] = log
            async with grid.client(super_user) as pool:
                await wait_for_osds(pool, grid.mrc_address, set(grid.osd_addresses), grid.osds)
            yield grid
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for service in reversed(services):
                    await service.stop()
            nursery.cancel_scope.cancel()
