"""The RPC layer over real mutual TLS: multiplexing, limits, malformed input, refusals."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgpack
import pytest
import trio

from tests.conftest import PKI
from xfs.common import ca, tls
from xfs.common.budget import FrameBudget
from xfs.common.framing import FIRST_ALLOCATION, META_FRAME_LIMIT, encode_request
from xfs.common.identity import TrustStore
from xfs.common.rpc import Dispatcher, Pool, RetryPolicy, RPCServer, open_pool
from xfs.proto.errors import Unavailable, XfsError
from xfs.proto.methods import MRC, OSD, Empty, Ino, OSDStatus
from xfs.proto.records import Attr, Identity, Kind, Role

DEADLINE = 20


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(DEADLINE):
            await fn()

    trio.run(bounded)


@asynccontextmanager
async def server(pki: PKI, **kw: object) -> AsyncIterator[RPCServer]:
    trust = TrustStore.load(pki.trust)
    dispatcher = Dispatcher()
    seen: list[Identity] = []

    async def status(peer: Identity, req: Empty) -> OSDStatus:
        seen.append(peer)
        return OSDStatus(peer.principal, 1, 2, 3)

    async def getattr_(peer: Identity, req: Ino) -> Attr:
        await trio.sleep(0.01 * (req.ino % 5))  # replies come back out of order
        if req.ino >= 1000:
            await trio.sleep(req.ino / 1000)  # a slow request: ino seconds / 1000
        return Attr(req.ino, 0o100644, 1, peer.principal, "g@physics", req.ino, 0, 0, 0)

    dispatcher.register(OSD.status, status)
    dispatcher.register(MRC.getattr, getattr_)
    srv = RPCServer(dispatcher=dispatcher,
                    ssl_context=tls.server_context(pki.mrc.cert, pki.mrc.key,
                                                   trust.ssl_cafile_bundle()),
                    identify=trust.identify, host="127.0.0.1", port=0,
                    frame_limit=META_FRAME_LIMIT, **kw)  # type: ignore[arg-type]
    async with trio.open_nursery() as n:
        await n.start(srv.serve)
        try:
            yield srv
        finally:
            await srv.stop(1)
            n.cancel_scope.cancel()


@asynccontextmanager
async def client(pki: PKI, cert: ca.CertPaths) -> AsyncIterator[Pool]:
    trust = TrustStore.load(pki.trust)
    ctx = tls.client_context(cert.cert, cert.key, trust.ssl_cafile_bundle())
    async with open_pool(ctx, trust.identify, retry=RetryPolicy(attempts=2)) as pool:
        yield pool


def test_calls_are_multiplexed_and_identify_the_caller(pki: PKI) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv, client(pki, alice) as pool:
            addr = f"127.0.0.1:{srv.port}"
            results: dict[int, Attr] = {}

            async def one(i: int) -> None:
                results[i] = await pool.call(addr, MRC.getattr, Ino("v", i), expect=Kind.MRC)

            async with trio.open_nursery() as n:
                for i in range(1, 101):
                    n.start_soon(one, i)
            assert all(results[i].size == i for i in range(1, 101))
            assert {a.owner for a in results.values()} == {"alice@physics"}
            assert len(pool._conns) == 1  # all on one connection

    run(main)


def test_authority_is_checked_before_the_handler(pki: PKI) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv, client(pki, alice) as pool:
            with pytest.raises(XfsError) as e:
                await pool.call(f"127.0.0.1:{srv.port}", MRC.volume_create,
                                MRC.volume_create.request("v"))
            assert e.value.code in (errno.EPERM, errno.ENOSYS)

    run(main)


def test_expected_server_identity_is_enforced(pki: PKI) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv, client(pki, alice) as pool:
            with pytest.raises(XfsError) as e:
                await pool.call(f"127.0.0.1:{srv.port}", OSD.status, Empty(),
                                expect=f"osd:{uuid.uuid4()}")
            assert e.value.code == errno.EACCES

    run(main)


def _raw_tls(pki: PKI, port: int, cert: ca.CertPaths) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=TrustStore.load(pki.trust).ssl_cafile_bundle())
    ctx.load_cert_chain(cert.cert, cert.key)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(sock)


def _read_frame(s: ssl.SSLSocket) -> list[object]:
    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            raise EOFError
        header += chunk
    (n,) = struct.unpack(">I", header)
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return msgpack.unpackb(body)  # type: ignore[no-any-return]


@pytest.mark.parametrize("frame", [
    struct.pack(">I", 0xFFFFFFF0),  # oversize length: refused before allocating
    struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
    struct.pack(">I", 3) + msgpack.packb([9, 1, 2])[:3],  # not an RPC message
    encode_request(1, "osd.status/1", {"x": 1})[:-1] + b"",  # truncated then EOF
    struct.pack(">I", 0),  # empty frame
], ids=["oversize", "garbage", "not-rpc", "truncated", "empty"])
def test_malformed_frames_get_an_error_and_the_server_keeps_serving(pki: PKI,
                                                                    frame: bytes) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv, client(pki, alice) as pool:
            def attack() -> object:
                s = _raw_tls(pki, srv.port, alice)
                try:
                    s.sendall(frame)
                    s.shutdown(socket.SHUT_WR) if frame.endswith(b"") and len(frame) > 50 else None
                    try:
                        return _read_frame(s)
                    except (EOFError, ssl.SSLError, OSError):
                        return None
                finally:
                    s.close()

            reply = await trio.to_thread.run_sync(attack)
            if reply is not None:
                assert reply[0] == 2 and reply[1] == "error"  # type: ignore[index]
                assert reply[2][0] == "EPROTO"  # type: ignore[index]
            # the server still serves everyone else
            status = await pool.call(f"127.0.0.1:{srv.port}", OSD.status, Empty())
            assert status.uuid == "alice@physics"

    run(main)


def test_bad_params_get_eproto_and_unknown_methods_enosys(pki: PKI) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv:
            def probe() -> list[object]:
                s = _raw_tls(pki, srv.port, alice)
                try:
                    s.sendall(encode_request(7, "mrc.getattr/1", {"volume": 3}))
                    first = _read_frame(s)
                    s.sendall(encode_request(8, "mrc.nope/1", {}))
                    return [first, _read_frame(s)]
                finally:
                    s.close()

            bad, unknown = await trio.to_thread.run_sync(probe)
            assert bad[:2] == [1, 7] and bad[2][0] == "EPROTO"  # type: ignore[index]
            assert unknown[:2] == [1, 8] and unknown[2][0] == "ENOSYS"  # type: ignore[index]

    run(main)


def _refused(pki: PKI, cert: ca.CertPaths) -> None:
    async def main() -> None:
        async with server(pki) as srv, client(pki, cert) as pool:
            with pytest.raises(Unavailable):
                await pool.call(f"127.0.0.1:{srv.port}", OSD.status, Empty())
            # and a good client still gets through
            async with client(pki, pki.user("bob")) as good:
                assert (await good.call(f"127.0.0.1:{srv.port}", OSD.status, Empty())).total == 2

    run(main)


def test_certificate_of_an_untrusted_ca_is_refused(pki: PKI, tmp_path: Path) -> None:
    rogue = tmp_path / "rogue"
    ca.init_vo_ca(rogue, "physics")
    _refused(pki, ca.issue_user(rogue, "mallory", tmp_path / "u"))


def test_expired_certificate_is_refused(pki: PKI, tmp_path: Path) -> None:
    import datetime as dt

    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    _refused(pki, ca.issue_user(pki.vo_ca, "old", tmp_path / "u", days=2, not_before=old))


def test_unreachable_server_fails_within_the_retry_budget(pki: PKI) -> None:
    alice = pki.user("alice")
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()

    async def main() -> None:
        async with client(pki, alice) as pool:
            with pytest.raises(Unavailable):
                await pool.call(f"127.0.0.1:{port}", OSD.status, Empty())

    run(main)


def test_super_role_may_call_admin_methods(pki: PKI) -> None:
    root = pki.user("root", role=Role.SUPER)

    async def main() -> None:
        async with server(pki) as srv, client(pki, root) as pool:
            with pytest.raises(XfsError) as e:  # authorised, but not registered here
                await pool.call(f"127.0.0.1:{srv.port}", MRC.volume_create,
                                MRC.volume_create.request("v"))
            assert e.value.code == errno.ENOSYS

    run(main)


# ------------------------------------------------------------------ idle deadlines
def test_a_silent_connection_is_closed_after_idle_timeout(pki: PKI) -> None:
    """Also one stalled inside a frame: it announced 64 KiB and sent 5 bytes."""
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki, idle_timeout=0.5) as srv:
            def stall(announce: bool) -> float:
                s = _raw_tls(pki, srv.port, alice)
                try:
                    if announce:
                        s.sendall(struct.pack(">I", 64 << 10) + b"\x94\x00\x01\xa1x")
                    start = time.monotonic()
                    s.settimeout(10)
                    with contextlib.suppress(ssl.SSLError, OSError):
                        assert s.recv(1) == b""  # the server closed it
                    return time.monotonic() - start
                finally:
                    s.close()

            assert 0.3 < await trio.to_thread.run_sync(stall, False) < 5
            assert 0.3 < await trio.to_thread.run_sync(stall, True) < 5

    run(main)


def test_a_request_in_progress_keeps_its_connection_open(pki: PKI) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki, idle_timeout=0.3) as srv, client(pki, alice) as pool:
            addr = f"127.0.0.1:{srv.port}"
            attr = await pool.call(addr, MRC.getattr, Ino("v", 1500), expect=Kind.MRC)
            assert attr.size == 1500  # answered after 1.5 s: the connection stayed open
            conn = pool._conns[addr]
            await trio.sleep(1.0)  # idle now: the server closes it, the pool notices
            assert conn.closed
            attr = await pool.call(addr, MRC.getattr, Ino("v", 7), expect=Kind.MRC)
            assert attr.size == 7 and pool._conns[addr] is not conn  # dialed again

    run(main)


def test_a_connection_idle_too_long_is_replaced_before_reuse(pki: PKI) -> None:
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv, client(pki, alice) as pool:
            addr = f"127.0.0.1:{srv.port}"
            pool.IDLE_REUSE = 0.2
            await pool.call(addr, OSD.status, Empty())
            first = pool._conns[addr]
            await pool.call(addr, OSD.status, Empty())
            assert pool._conns[addr] is first  # busy: reused
            await trio.sleep(0.4)
            await pool.call(addr, OSD.status, Empty())
            assert first.closed and pool._conns[addr] is not first

    run(main)


def test_frames_larger_than_the_first_allocation_arrive_whole(pki: PKI) -> None:
    """A frame's buffer grows as its bytes arrive: one of 3.5 MiB, sent in pieces."""
    alice = pki.user("alice")

    async def main() -> None:
        async with server(pki) as srv:
            def send_big() -> object:
                s = _raw_tls(pki, srv.port, alice)
                try:
                    pad = os.urandom(FIRST_ALLOCATION * 3)
                    frame = encode_request(7, OSD.status.wire_name, {"pad": pad})
                    for i in range(0, len(frame), 300_000):
                        s.sendall(frame[i : i + 300_000])
                    return _read_frame(s)
                finally:
                    s.close()

            reply = await trio.to_thread.run_sync(send_big)
            # the whole frame was decoded: the unknown field is refused, by name
            assert reply[0] == 1 and reply[1] == 7, reply  # type: ignore[index]

    run(main)


def test_connections_per_principal_and_frames_per_peer_kind_are_bounded(pki: PKI) -> None:
    """One certificate holds at most ``max_per_peer`` connections (each costing at most
    what its peer sent), and a peer kind may have a smaller frame limit than others:
    what one principal can make a server hold is bounded. Refusals are audited."""
    alice, bob = pki.user("alice"), pki.user("bob")

    async def main() -> None:
        async with server(pki, max_per_peer=3,
                          frame_limits={Kind.USER: 64 << 10}) as srv:
            recorder = _Recorder()
            srv.dispatcher.audit = recorder
            record = recorder.records

            def open_three_then_one() -> tuple[list[ssl.SSLSocket], bytes]:
                held = [_raw_tls(pki, srv.port, alice) for _ in range(3)]
                for s in held:  # the server has identified each of them
                    s.sendall(encode_request(1, "osd.status/1", {}))
                    _read_frame(s)
                extra = _raw_tls(pki, srv.port, alice)
                extra.settimeout(5)
                try:
                    got = extra.recv(1)
                except (ssl.SSLError, OSError):
                    got = b""
                extra.close()
                return held, got

            held, got = await trio.to_thread.run_sync(open_three_then_one)
            try:
                assert got == b"", "a fourth connection of alice was served"
                assert any(a[:4] == ("deny", "alice@physics", "connect", "EAGAIN")
                           for a in record), record
                async with client(pki, bob) as pool:  # another principal is served
                    reply = await pool.call(f"127.0.0.1:{srv.port}", OSD.status, Empty())
                    assert reply.uuid == "bob@physics"

                def oversize() -> list[object]:
                    s = _raw_tls(pki, srv.port, bob)
                    try:
                        s.sendall(struct.pack(">I", (64 << 10) + 1))
                        return _read_frame(s)
                    finally:
                        s.close()

                notice = await trio.to_thread.run_sync(oversize)
                assert notice[0] == 2 and "EPROTO" in str(notice), notice
            finally:
                for s in held:
                    s.close()

    run(main)


class _Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, ...]] = []

    def record(self, event: str, actor: str, action: str, outcome: str = "ok",
               **detail: object) -> None:
        self.records.append((event, actor, action, outcome))


def test_frames_are_admitted_against_the_servers_budget_and_the_senders_share(
    pki: PKI,
) -> None:
    """Alice announces 1 MiB frames and sends 5 bytes of each: two fit her 2 MiB share,
    the third waits and its connection is closed (EAGAIN) after the budget's wait; bob,
    meanwhile, is served; once alice's connections close, her share is free again."""
    alice, bob = pki.user("alice"), pki.user("bob")
    budget = FrameBudget(capacity=3 << 20, per_peer=2 << 20, wait=1.0)

    async def main() -> None:
        async with server(pki, budget=budget) as srv:
            recorder = _Recorder()
            srv.dispatcher.audit = recorder
            def announce() -> ssl.SSLSocket:
                s = _raw_tls(pki, srv.port, alice)
                s.sendall(struct.pack(">I", 1 << 20) + b"\x94\x00\x01\xa1x")
                return s

            first = [await trio.to_thread.run_sync(announce) for _ in range(2)]
            try:
                with trio.move_on_after(5):  # both headers read and admitted
                    while budget.used < 2 << 20:
                        await trio.sleep(0.02)
                assert budget.used == 2 << 20
                third = await trio.to_thread.run_sync(announce)
                try:
                    notice = await trio.to_thread.run_sync(_read_frame, third)
                    assert notice[0] == 2 and "EAGAIN" in str(notice), notice
                    assert ("deny", "alice@physics", "frame", "EAGAIN") in recorder.records
                finally:
                    third.close()
                async with client(pki, bob) as pool:  # another principal: its own share
                    reply = await pool.call(f"127.0.0.1:{srv.port}", OSD.status, Empty())
                    assert reply.uuid == "bob@physics"
            finally:
                for s in first:
                    s.close()
            with trio.fail_after(5):
                while budget.used:
                    await trio.sleep(0.05)
            async with client(pki, alice) as pool:
                reply = await pool.call(f"127.0.0.1:{srv.port}", OSD.status, Empty())
                assert reply.uuid == "alice@physics"

    run(main)
