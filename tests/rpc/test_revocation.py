"""Revocation over real mutual TLS: CRLs refuse new connections and close live ones.

Every test builds its own PKI (they revoke and break CRLs) and a server whose trust store
is reloaded every ``CHECK`` seconds, with its audit log in the test's directory. Each
attack is refused with a clear reason and an audit record while a well-behaved client on
another connection keeps working.
"""

from __future__ import annotations

import datetime as dt
import errno
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import PKI, make_pki
from tests.rpc.ingrid import forge, run_within, save_minted, service_tls
from xfs.common import audit, ca, tls
from xfs.common.audit import AuditLog
from xfs.common.ca import CertPaths
from xfs.common.config import MRCConfig
from xfs.common.framing import META_FRAME_LIMIT
from xfs.common.identity import (
    CertKind,
    Claims,
    TrustStore,
)
from xfs.common.rpc import Dispatcher, Pool, RetryPolicy, RPCServer, open_pool
from xfs.mrc.service import MRCService
from xfs.proto.errors import Unavailable, XfsError
from xfs.proto.methods import MRC, OSD, Empty, Ino, OSDStatus
from xfs.proto.records import Attr, Identity, Kind, Role

DEADLINE = 20
CHECK = 0.1  # seconds between trust reloads of the servers under test
RETRY = RetryPolicy(attempts=2, first_backoff=0.01, max_backoff=0.05, connect_timeout=5.0)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    run_within(DEADLINE, fn)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_pki(tmp_path / "pki")


@dataclass
class Server:
    rpc: RPCServer
    audit_path: Path
    release: trio.Event  # lets the slow handler (MRC.getattr) return
    entered: trio.Event  # set once the slow handler holds a request

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.rpc.port}"

    def records(self, action: str) -> list[dict[str, Any]]:
        return [r for r in audit.records(self.audit_path) if r["action"] == action]

    async def wait_record(self, action: str, text: str = "") -> dict[str, Any]:
        """The first audit record of ``action`` whose reason or CRL mentions ``text``."""
        while True:
            for r in self.records(action):
                if text in r["detail"].get("why", "") + r["detail"].get("crl", ""):
                    return r
            await trio.sleep(0.02)


@asynccontextmanager
async def server(pki: PKI, root: Path) -> AsyncIterator[Server]:
    trust = TrustStore.load(pki.trust)
    release, entered = trio.Event(), trio.Event()

    async def status(peer: Identity, req: Empty) -> OSDStatus:
        return OSDStatus(peer.principal, 1, 2, 3)

    async def slow(peer: Identity, req: Ino) -> Attr:
        entered.set()
        await release.wait()
        return Attr(req.ino, 0o100644, 1, peer.principal, "g@physics", 0, 0, 0, 0)

    with AuditLog(root / "audit.log", "mrc") as log:
        dispatcher = Dispatcher(log)
        dispatcher.register(OSD.status, status)
        dispatcher.register(MRC.getattr, slow)
        srv = RPCServer(
            dispatcher=dispatcher,
            ssl_context=tls.server_context(pki.mrc.cert, pki.mrc.key, trust.ssl_cafile_bundle()),
            identify=trust.identify,
            trust=trust,
            crl_check_interval=CHECK,
            host="127.0.0.1",
            port=0,
            frame_limit=META_FRAME_LIMIT,
        )
        async with trio.open_nursery() as n:
            await n.start(srv.serve)
            try:
                yield Server(srv, root / "audit.log", release, entered)
            finally:
                release.set()
                await srv.stop(0.5)
                n.cancel_scope.cancel()


@asynccontextmanager
async def client(pki: PKI, cert: CertPaths) -> AsyncIterator[Pool]:
    """A client process of its own: its own trust store, read from the same files."""
    trust = TrustStore.load(pki.trust)
    ctx = tls.client_context(cert.cert, cert.key, trust.ssl_cafile_bundle())
    async with open_pool(ctx, trust.identify, retry=RETRY) as pool:
        yield pool


async def status(pool: Pool, srv: Server) -> str:
    return (await pool.call(srv.address, OSD.status, Empty(), expect=Kind.MRC)).uuid


async def wait_closed(pool: Pool, address: str) -> None:
    """Until the client has seen the server close its connection (the server audits first)."""
    while not pool._conns[address].closed:
        await trio.sleep(0.02)


def serial_of(cert: CertPaths) -> int:
    return ca.read_cert(cert.cert).serial_number


NOW = dt.datetime.now(dt.UTC)


# ----------------------------------------------------------------------------- new connections
def test_revoked_certificate_is_refused_and_audited(pki: PKI, tmp_path: Path) -> None:
    alice, bob = pki.user("alice"), pki.user("bob")

    async def main() -> None:
        async with server(pki, tmp_path) as srv, client(pki, bob) as good:
            assert await status(good, srv) == "bob@physics"
            revoked, crl = ca.revoke(pki.vo_ca, cert=alice.cert)
            assert revoked.serial == serial_of(alice) and revoked.principal == "alice@physics"
            await srv.wait_record("crl-loaded", f"CRL {crl.number},")
            async with client(pki, alice) as pool:
                with pytest.raises(Unavailable):
                    await status(pool, srv)
            record = await srv.wait_record("tls.identify", "certificate revoked")
            assert record["event"] == audit.CERT and record["outcome"] == "refused"
            assert record["detail"]["why"] == (
                f"user alice@physics: certificate revoked (serial {revoked.serial}) "
                "by the CA of VO 'physics'"
            )
            assert await status(good, srv) == "bob@physics"  # the same connection, untouched
            assert len(good._conns) == 1

    run(main)


def test_missing_crl_refuses_every_peer_of_that_ca_only(pki: PKI, tmp_path: Path) -> None:
    alice, carol = pki.user("alice"), pki.user("carol", vo_ca=pki.other_vo_ca)

    async def main() -> None:
        async with (
            server(pki, tmp_path) as srv,
            client(pki, alice) as physics,
            client(pki, carol) as chem,
        ):
            assert await status(physics, srv) == "alice@physics"
            assert await status(chem, srv) == "carol@chem"
            (pki.vo_ca / ca.CA_CRL).unlink()
            # the live connection of the CA's peer is closed, the other one is not
            closed = await srv.wait_record("revoked-connection-closed", "CRL missing")
            assert closed["actor"] == "alice@physics"
            assert closed["detail"]["why"] == (
                "user alice@physics: CRL missing for the CA of VO 'physics'"
            )
            await wait_closed(physics, srv.address)
            with pytest.raises(Unavailable):
                await status(physics, srv)
            assert (await srv.wait_record("crl-loaded", "CRL missing"))["outcome"] == "unusable"
            assert await status(chem, srv) == "carol@chem"
            # a new CRL is picked up without a restart
            crl = ca.write_crl(pki.vo_ca)
            await srv.wait_record("crl-loaded", f"CRL {crl.number},")
            assert await status(physics, srv) == "alice@physics"
            assert await status(chem, srv) == "carol@chem"

    run(main)


def test_expired_and_not_yet_valid_crls_are_refused(pki: PKI, tmp_path: Path) -> None:
    alice, carol = pki.user("alice"), pki.user("carol", vo_ca=pki.other_vo_ca)

    async def main() -> None:
        async with server(pki, tmp_path) as srv, client(pki, carol) as chem:
            assert await status(chem, srv) == "carol@chem"
            for when, reason in [
                (NOW - dt.timedelta(days=10), "CRL expired"),
                (NOW + dt.timedelta(days=1), "CRL not yet valid"),
            ]:
                crl = ca.write_crl(pki.vo_ca, days=1, now=when)
                await srv.wait_record("crl-loaded", f"CRL {crl.number},")
                async with client(pki, alice) as pool:
                    with pytest.raises(Unavailable):
                        await status(pool, srv)
                why = (await srv.wait_record("tls.identify", reason))["detail"]["why"]
                assert why.startswith(f"user alice@physics: {reason} for the CA of VO 'physics'")
                assert await status(chem, srv) == "carol@chem"
            ca.write_crl(pki.vo_ca)
            async with client(pki, alice) as pool:
                assert await status(pool, srv) == "alice@physics"

    run(main)


def test_crl_signed_by_another_ca_is_refused(pki: PKI, tmp_path: Path) -> None:
    alice, carol = pki.user("alice"), pki.user("carol", vo_ca=pki.other_vo_ca)

    async def main() -> None:
        async with server(pki, tmp_path) as srv, client(pki, carol) as chem:
            shutil.copy(pki.other_vo_ca / ca.CA_CRL, pki.vo_ca / ca.CA_CRL)
            await srv.wait_record("crl-loaded", "wrong CRL")
            async with client(pki, alice) as pool:
                with pytest.raises(Unavailable):
                    await status(pool, srv)
            why = (await srv.wait_record("tls.identify", "wrong CRL"))["detail"]["why"]
            assert "not signed by this CA" in why and "the CA of VO 'physics'" in why
            assert await status(chem, srv) == "carol@chem"

    run(main)


# ----------------------------------------------------------------------------- bad certificates
def _forge(issuer: ca.Minted, claims: Claims, out: Path) -> CertPaths:
    """A user certificate for ``claims`` signed by ``issuer``, whatever its VO."""
    return save_minted(forge(issuer, claims), out, "forged")


BAD: dict[str, tuple[Callable[[PKI, Path], CertPaths], str, str]] = {
    # case: (certificate, audited action, reason in the audit record)
    "expired": (
        lambda p, d: ca.issue_user(
            p.vo_ca, "old", d, days=2, not_before=NOW - dt.timedelta(days=30)
        ),
        "tls.handshake",
        "certificate has expired",
    ),
    "not-yet-valid": (
        lambda p, d: ca.issue_user(
            p.vo_ca, "early", d, days=30, not_before=NOW + dt.timedelta(days=1)
        ),
        "tls.handshake",
        "certificate is not yet valid",
    ),
    "untrusted-ca": (
        lambda p, d: _forge(
            ca.mint_vo_ca("physics"),
            Claims(CertKind.USER, "mallory@physics", "physics", Role.SUPER, ()),
            d,
        ),
        "tls.handshake",
        "certificate signature failure",  # a CA of the same name, another key
    ),
    "other-vo-ca": (
        lambda p, d: _forge(
            ca.load_ca(p.other_vo_ca),
            Claims(CertKind.USER, "alice@physics", "physics", Role.SUPER, ()),
            d,
        ),
        "tls.identify",
        "is signed by the CA of 'chem', not of 'physics'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_client_certificates_are_refused_and_audited(
    pki: PKI, tmp_path: Path, case: str
) -> None:
    make, action, reason = BAD[case]
    bad, bob = make(pki, tmp_path / "certs"), pki.user("bob")

    async def main() -> None:
        async with server(pki, tmp_path) as srv, client(pki, bob) as good:
            assert await status(good, srv) == "bob@physics"
            async with client(pki, bad) as pool:
                with pytest.raises(Unavailable):
                    await status(pool, srv)
            record = await srv.wait_record(action, reason)
            assert record["event"] == audit.CERT and record["outcome"] == "refused"
            assert await status(good, srv) == "bob@physics"
            assert len(good._conns) == 1

    run(main)


# ----------------------------------------------------------------------------- live connections
def test_revoked_while_connected_is_closed_within_the_interval(pki: PKI, tmp_path: Path) -> None:
    alice, bob = pki.user("alice"), pki.user("bob")

    async def main() -> None:
        async with (
            server(pki, tmp_path) as srv,
            client(pki, alice) as pool,
            client(pki, bob) as good,
        ):
            assert await status(pool, srv) == "alice@physics"
            assert await status(good, srv) == "bob@physics"
            bob_conn = good._conns[srv.address]
            failure: list[XfsError] = []

            async def in_flight() -> None:
                try:
                    await pool.call(srv.address, MRC.getattr, Ino("v", 1))
                except XfsError as e:
                    failure.append(e)

            async with trio.open_nursery() as n:
                n.start_soon(in_flight)
                await srv.entered.wait()  # the call is on the server when the CRL changes
                revoked, _ = ca.revoke(pki.vo_ca, serial=serial_of(alice))
                with trio.fail_after(2 + 3 * CHECK):  # the reload interval, and some
                    closed = await srv.wait_record("revoked-connection-closed")
            assert closed["actor"] == "alice@physics"
            assert closed["outcome"] == "EACCES"
            await wait_closed(pool, srv.address)
            # the call in flight learnt why
            assert failure and failure[0].code == errno.EACCES
            assert f"certificate revoked (serial {revoked.serial})" in failure[0].message
            with pytest.raises(Unavailable):  # and the next one is refused at connect
                await status(pool, srv)
            await srv.wait_record("tls.identify", "certificate revoked")
            # bob's connection never noticed
            assert await status(good, srv) == "bob@physics"
            assert good._conns[srv.address] is bob_conn and not bob_conn.closed
            assert [r["actor"] for r in srv.records("revoked-connection-closed")] == [
                "alice@physics"
            ]

    run(main)


def test_crl_expiring_while_connected_closes_that_cas_peers(pki: PKI, tmp_path: Path) -> None:
    alice, carol = pki.user("alice"), pki.user("carol", vo_ca=pki.other_vo_ca)

    async def main() -> None:
        # a CRL that runs out two seconds from now, and nobody re-issues it
        soon = dt.datetime.now(dt.UTC) - dt.timedelta(days=1) + dt.timedelta(seconds=2)
        ca.write_crl(pki.vo_ca, days=1, now=soon)
        async with (
            server(pki, tmp_path) as srv,
            client(pki, alice) as physics,
            client(pki, carol) as chem,
        ):
            assert await status(physics, srv) == "alice@physics"
            assert await status(chem, srv) == "carol@chem"
            with trio.fail_after(5):
                closed = await srv.wait_record("revoked-connection-closed", "CRL expired")
            assert closed["actor"] == "alice@physics"
            await wait_closed(physics, srv.address)
            with pytest.raises(Unavailable):
                await status(physics, srv)
            assert await status(chem, srv) == "carol@chem"

    run(main)


# ----------------------------------------------------------------------------- servers refused
def test_clients_refuse_a_server_whose_certificate_is_revoked(pki: PKI, tmp_path: Path) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki, tmp_path) as srv:
            revoked, _ = ca.revoke(pki.services_ca, cert=pki.mrc.cert)
            async with client(pki, alice) as pool:
                with pytest.raises(XfsError) as e:
                    await status(pool, srv)
            assert e.value.code == errno.EACCES
            assert e.value.message == (
                f"mrc mrc:{pki.mrc_uuid}: certificate revoked (serial {revoked.serial}) "
                "by the service CA"
            )

    run(main)


def test_clients_refuse_a_server_whose_ca_has_no_current_crl(pki: PKI, tmp_path: Path) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki, tmp_path) as srv:
            (pki.services_ca / ca.CA_CRL).unlink()
            async with client(pki, alice) as pool:
                with pytest.raises(XfsError) as e:
                    await status(pool, srv)
                assert e.value.code == errno.EACCES
                assert "CRL missing for the service CA" in e.value.message
                ca.write_crl(pki.services_ca, days=1, now=NOW - dt.timedelta(days=3))
                with pytest.raises(XfsError) as e:
                    await status(pool, srv)
                assert "CRL expired for the service CA" in e.value.message
                ca.write_crl(pki.services_ca)  # re-read before refusing: no restart
                assert await status(pool, srv) == "alice@physics"

    run(main)


# ----------------------------------------------------------------------------- the MRC service
def test_mrc_service_closes_revoked_connections(pki: PKI, tmp_path: Path) -> None:
    """The wiring: ``crl_check_interval`` and the audit log of a real MRC."""
    admin, other = pki.user("admin", role=Role.SUPER), pki.user("ops", role=Role.SUPER)
    mrc = MRCService(
        MRCConfig(
            tls=service_tls(pki.mrc, pki),
            data_dir=tmp_path / "mrc",
            port=0,
            grace=0.5,
            crl_check_interval=CHECK,
        )
    )

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(mrc.run)
            try:
                assert mrc.server is not None
                address = f"127.0.0.1:{mrc.server.port}"
                async with client(pki, admin) as pool, client(pki, other) as good:
                    await pool.call(address, MRC.status, Empty(), expect=Kind.MRC)
                    await good.call(address, MRC.status, Empty(), expect=Kind.MRC)
                    ca.revoke(pki.vo_ca, cert=admin.cert)
                    log = tmp_path / "mrc" / "audit.log"
                    await wait_closed(pool, address)
                    with pytest.raises(Unavailable):
                        await pool.call(address, MRC.status, Empty(), expect=Kind.MRC)
                    await good.call(address, MRC.status, Empty(), expect=Kind.MRC)
                actions = [r["action"] for r in audit.records(log) if r["event"] == audit.CERT]
                assert actions.count("crl-loaded") >= 6  # three CAs, loaded and reloaded
                assert "revoked-connection-closed" in actions and "tls.identify" in actions
                assert audit.verify(log).ok
            finally:
                await mrc.stop()
                n.cancel_scope.cancel()

    run(main)
