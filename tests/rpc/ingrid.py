"""An in-process grid for RPC tests: one MRC and N OSDs in one trio nursery, on loopback.

    async with open_grid(pki, tmp_path) as grid:
        async with grid.client(alice) as pool:
            layout = await pool.call(grid.mrc_address, MRC.create, ..., expect=Kind.MRC)

Every server listens on 127.0.0.1 port 0 with its own data directory under ``root``; OSD
certificates name the uuid of the store created for them. ``open_grid`` returns once every
OSD has heartbeat (so it holds the MRC's XCap keys) and stops everything on the way out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager as AsyncCM
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.conftest import PKI
from xfs.common import tls
from xfs.common.ca import CertPaths
from xfs.common.config import MRCConfig, OSDConfig, TLSConfig
from xfs.common.identity import TrustStore, load_credential
from xfs.common.rpc import Pool, RetryPolicy, open_pool
from xfs.common.xcap import KeyRing
from xfs.mrc.service import MRCService
from xfs.osd.objects import ObjectStore
from xfs.osd.service import OSDService
from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC, Empty
from xfs.proto.records import Identity, Kind, Role

HEARTBEAT = 0.1  # seconds between OSD heartbeats
FAST_RETRY = RetryPolicy(attempts=2, first_backoff=0.01, max_backoff=0.05, connect_timeout=5.0)


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

    @property
    def mrc_dir(self) -> Path:
        return self.mrc.config.data_dir

    def keyring(self) -> KeyRing:
        """The MRC's real XCap signing keys, read from its data directory."""
        return KeyRing.load_or_create(self.mrc_dir / "xcap-keys")

    @staticmethod
    def identity(cert: CertPaths) -> Identity:
        return load_credential(cert.cert, cert.key).identity

    def client(self, cert: CertPaths, retry: RetryPolicy = FAST_RETRY) -> AsyncCM[Pool]:
        """A client pool (its own connections) under ``cert``."""
        return open_client(self.trust, cert, retry)


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
    pki: PKI, root: Path, *, osds: int = 2, mrc_xcap_lifetime: float = 600.0
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
        )
    )
    super_user = pki.user("root", role=Role.SUPER)
    async with trio.open_nursery() as nursery:
        services: list[MRCService | OSDService] = []
        try:
            await nursery.start(mrc.run)
            services.append(mrc)
            assert mrc.server is not None
            grid = Grid(pki, root, trust, mrc, f"127.0.0.1:{mrc.server.port}", super_user)
            for i in range(osds):
                data = root / f"osd{i}"
                store = ObjectStore(data)
                store.open()
                cert = pki.osd(store.uuid)
                osd = OSDService(
                    OSDConfig(
                        tls=service_tls(cert, pki),
                        data_dir=data,
                        mrc=grid.mrc_address,
                        port=0,
                        heartbeat_interval=HEARTBEAT,
                        grace=0.5,
                    )
                )
                await nursery.start(osd.run)
                services.append(osd)
                assert osd.server is not None
                grid.osds.append(osd)
                grid.osd_dirs[osd.uuid] = data
                grid.osd_addresses[osd.uuid] = f"127.0.0.1:{osd.server.port}"
                grid.osd_certs[osd.uuid] = cert
            async with grid.client(super_user) as pool:
                await wait_for_osds(pool, grid.mrc_address, set(grid.osd_addresses), grid.osds)
            yield grid
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for service in reversed(services):
                    await service.stop()
            nursery.cancel_scope.cancel()
