"""Multiplexed msgpack-RPC over mutual TLS: the dispatcher, the server, the client pool.

Server: every connection is identified once from its verified peer certificate; each
request runs in its own task (many in flight per connection); the dispatcher checks
the method's declared authority before decoding the typed request and calling the
handler. Client: a pool of multiplexed connections per address, which is the one layer
that retries (bounded attempts with backoff; a request already sent is retried only if
its method is idempotent). Callers own deadlines with trio cancel scopes.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from xfs.common import audit, framing, metrics
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.budget import FrameBudget
from xfs.common.identity import TrustStore
from xfs.common.links import Link, TLSLink, connect_link
from xfs.proto.codec import BadValue, Record
from xfs.proto.errors import ProtocolError, Unavailable, XfsError
from xfs.proto.methods import Authority, Method
from xfs.proto.records import Identity, Kind, Role

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Record)
Resp = TypeVar("Resp", bound=Record)
Handler = Callable[[Identity, Any], Awaitable[Any]]
Identify = Callable[[bytes], Identity]
# Who a connection acts as after an assume method: called before each of its later
# requests; raises XfsError once that identity may no longer be used (revoked, expired).
Acting = Callable[[], Identity]
AssumeHandler = Callable[[Identity, Req], Awaitable[tuple[Resp, Acting]]]

_NEEDS = {
    Authority.USER: "a user certificate of role standard, advanced or super",
    Authority.ADVANCED: "role advanced or super, or a grid operator",
    Authority.ADMIN: "role super",
    Authority.OPERATOR: "a grid operator's certificate (admin:<name>, from the service CA)",
    Authority.WORKER: "a user certificate of role worker",
    Authority.HOLDER: "a user certificate",
    Authority.OSD: "an OSD certificate",
    Authority.MRC: "the MRC certificate",
    Authority.USER_OR_MRC: "a user certificate or the MRC's",
}


_USER_AUTHORITIES = (Authority.USER, Authority.ADVANCED, Authority.ADMIN)


def authorized(authority: Authority, peer: Identity) -> bool:
    match authority:
        case Authority.ANY:
            return True
        case Authority.USER:
            return peer.kind is Kind.USER and peer.role is not Role.WORKER
        case Authority.ADVANCED:
            return peer.kind is Kind.ADMIN or (
                peer.kind is Kind.USER and peer.role in (Role.ADVANCED, Role.SUPER)
            )
        case Authority.OPERATOR:
            return peer.kind is Kind.ADMIN
        case Authority.ADMIN:
            return peer.is_super
        case Authority.WORKER:
            return peer.kind is Kind.USER and peer.role is Role.WORKER
        case Authority.HOLDER:
            return peer.kind is Kind.USER
        case Authority.OSD:
            return peer.kind is Kind.OSD
        case Authority.MRC:
            return peer.kind is Kind.MRC
        case Authority.USER_OR_MRC:
            return peer.kind in (Kind.USER, Kind.MRC)
    return False


class ConnState:
    """One server connection as the dispatcher sees it: the identity its certificate
    names, and, once an assume method succeeded on it, who its requests act as; and, for
    the idle deadline, when it last did something and how many requests it has open."""

    def __init__(self, peer: Identity) -> None:
        self.peer = peer
        self.acting: Acting | None = None
        self.assuming = False  # an assume is in flight
        self.last_activity = 0.0  # trio time of a frame received or an answer sent
        self.inflight = 0


class Dispatcher:
    """Routes wire method names to handlers, checking authority first.

    Authority is checked on the identity the connection acts as: its certificate's, or,
    after the one method registered with ``register_assume`` succeeded on it, the one its
    ``Acting`` callable returns, asked again before every request.
    """

    def __init__(self, audit: Audit = NO_AUDIT) -> None:
        self._routes: dict[str, tuple[Method[Any, Any], Handler]] = {}
        self._assume: str | None = None
        self.audit = audit

    def register(
        self, method: Method[Req, Resp], handler: Callable[[Identity, Req], Awaitable[Resp]]
    ) -> None:
        if method.wire_name in self._routes:
            raise ValueError(f"{method.wire_name} registered twice")
        self._routes[method.wire_name] = (method, handler)

    def waits(self, name: str) -> bool:
        """Whether the method of wire name ``name`` may be held open waiting."""
        route = self._routes.get(name)
        return route is not None and route[0].waits

    def register_assume(self, method: Method[Req, Resp], handler: AssumeHandler[Req, Resp]) -> None:
        """Register the method by which a connection takes on another identity: the
        handler returns its response and the ``Acting`` of the connection. Once per
        connection; requests sent before the reply act as the certificate."""
        if self._assume is not None:
            raise ValueError(f"{self._assume} is already the assume method")
        self.register(method, handler)  # type: ignore[arg-type]
        self._assume = method.wire_name

    async def dispatch(self, peer: Identity | ConnState, name: str, params: Any) -> Any:
        started = time.monotonic()
        outcome = "ok"
        try:
            return await self._dispatch(peer, name, params)
        except XfsError as e:
            outcome = errno.errorcode.get(e.code, "EIO")
            raise
        except BaseException:
            outcome = "failed"
            raise
        finally:
            if name in self._routes:  # (not every name a peer makes up)
                metrics.request(name, outcome, time.monotonic() - started)

    async def _dispatch(self, peer: Identity | ConnState, name: str, params: Any) -> Any:
        conn = peer if isinstance(peer, ConnState) else ConnState(peer)
        caller = conn.peer
        try:
            route = self._routes.get(name)
            if route is None:
                raise XfsError(errno.ENOSYS, f"unknown method {name!r:.80}")
            method, handler = route
            if conn.acting is not None:
                caller = conn.acting()
            if not authorized(method.authority, caller):
                raise XfsError(
                    errno.EPERM if caller.kind in (Kind.USER, Kind.ADMIN) else errno.EACCES,
                    self._refusal(caller, method),
                )
            request = method.request.from_wire(params)
            if name != self._assume:
                response = await handler(caller, request)
            elif conn.acting is not None or conn.assuming:
                raise XfsError(errno.EPERM, "this connection has assumed a delegation already")
            else:
                conn.assuming = True
                try:
                    response, conn.acting = await handler(caller, request)
                finally:
                    conn.assuming = False
        except XfsError as e:
            if e.code in (errno.EACCES, errno.EPERM) or isinstance(e, BadValue):
                via = {} if caller is conn.peer else {"via": conn.peer.principal}
                self.audit.record(
                    audit.DENY,
                    caller.principal,
                    name,
                    errno.errorcode[e.code],
                    why=e.message,
                    **via,
                )
            raise
        return response.to_wire()

    def _refusal(self, caller: Identity, method: Method[Any, Any]) -> str:
        reason = f"{caller.principal} ({caller.kind}/{caller.role}) may not call {method.wire_name}"
        if caller.role is Role.WORKER and method.authority in _USER_AUTHORITIES:
            then = f" (call {self._assume} first)" if self._assume else ""
            return f"{reason}: a worker acts only under a delegation{then}"
        return f"{reason}: it needs {_NEEDS.get(method.authority, 'another authority')}"


# ---------------------------------------------------------------------------- server
class RPCServer:
    """Accepts mutual-TLS connections and serves a dispatcher on them."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        ssl_context: ssl.SSLContext,
        identify: Identify,
        host: str,
        port: int,
        frame_limit: int,
        handshake_timeout: float = 10.0,
        max_inflight: int = 64,
        max_waiting: int = 1024,
        max_handshakes: int = 128,
        max_per_peer: int = 256,
        frame_limits: Mapping[Kind, int] | None = None,
        budget: FrameBudget | None = None,
        idle_timeout: float = 300.0,
        trust: TrustStore | None = None,
        crl_check_interval: float = 10.0,
    ) -> None:
        """With ``trust`` (the store behind ``identify``), a ``TrustWatch`` reloads it every
        ``crl_check_interval`` seconds while serving and closes connections it now refuses.
        A connection with no request open that receives nothing for ``idle_timeout``
        seconds (a peer gone silent, or stalled inside a frame) is closed; clients stop
        reusing theirs well before (``Pool.IDLE_REUSE``)."""
        self.dispatcher = dispatcher
        self.host, self.port = host, port
        self._ctx = ssl_context
        self._identify = identify
        self._frame_limit = frame_limit
        self._handshake_timeout = handshake_timeout
        self._max_inflight = max_inflight
        self._max_waiting = max_waiting
        self.last_user_request = -float("inf")  # trio time: background work defers to them
        self._max_handshakes = max_handshakes
        # connections one principal may hold: with each one's memory bounded by what
        # its peer sent (xfs.common.links), what one certificate can make a server hold
        self._max_per_peer = max_per_peer
        self._per_peer: dict[str, int] = {}
        self._frame_limits = dict(frame_limits or {})  # per peer kind, else frame_limit
        # frame memory of users' requests, for the whole server (xfs.common.budget)
        self._budget = budget
        self._idle_timeout = idle_timeout
        self._handshaking: OrderedDict[int, trio.CancelScope] = OrderedDict()
        self._accept_scope = trio.CancelScope()
        self._conn_scope = trio.CancelScope()
        self._inflight = 0
        self._idle = trio.Event()
        self._connections: dict[Link, Identity] = {}
        self._watch = TrustWatch(self, trust, crl_check_interval) if trust is not None else None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        listener.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        await listener.bind((self.host, self.port))
        listener.listen(256)
        self.port = listener.getsockname()[1]
        log.info("listening on %s:%d", self.host, self.port)
        with self._conn_scope:
            async with trio.open_nursery() as nursery:
                if self._watch is not None:
                    nursery.start_soon(self._watch.run)
                task_status.started(self.port)
                with self._accept_scope, listener:
                    while True:
                        sock, addr = await listener.accept()
                        nursery.start_soon(self._serve_connection, sock, addr)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give in-flight requests ``grace`` seconds, then close all."""
        self._accept_scope.cancel()
        if self._watch is not None:
            self._watch.stop()
        if self._inflight:
            with trio.move_on_after(grace):
                await self._idle.wait()
        self._conn_scope.cancel()
        for conn in list(self._connections):
            conn.close()

    def close_where(self, predicate: Callable[[Identity], bool]) -> int:
        """Close live connections whose peer matches (revocation uses ``close_refused``)."""
        closed = 0
        for conn, peer in list(self._connections.items()):
            if predicate(peer):
                conn.close()
                closed += 1
        return closed

    async def close_refused(self) -> int:
        """Identify every live connection again and close those now refused (a revoked
        certificate, its CA's CRL expired or missing, the certificate expired), telling the
        peer why in an ``error`` notification. Returns how many were closed."""
        closed = 0
        for conn, peer in list(self._connections.items()):
            try:
                self._identify(conn.peer_certificate())
                continue
            except XfsError as e:
                refusal = e
            principal = peer.principal
            log.warning("closing the connection of %s: %s", principal, refusal.message)
            self.dispatcher.audit.record(
                audit.CERT,
                principal,
                "revoked-connection-closed",
                refusal.name,
                why=refusal.message,
            )
            await self._send(conn, _error_notice(refusal))
            self._connections.pop(conn, None)  # now: the next round must not close it again
            conn.close()  # its receive loop ends with Unavailable
            closed += 1
        return closed

    async def _serve_connection(self, tsock: trio.socket.SocketType, addr: Any) -> None:
        conn: Link | None = None
        reason = "the TLS handshake took too long"
        # Handshakes run in trio (no thread is held while a peer dawdles), each within
        # handshake_timeout; at most max_handshakes at once: a new one makes the oldest
        # give way, so idle or dribbling peers cannot keep a legitimate one out.
        scope = trio.CancelScope(deadline=trio.current_time() + self._handshake_timeout)
        if len(self._handshaking) >= self._max_handshakes:
            _, oldest = self._handshaking.popitem(last=False)
            oldest.cancel()
        self._handshaking[id(scope)] = scope
        try:
            with scope:
                conn = await TLSLink.handshake(tsock, self._ctx, server_side=True)
        except (ssl.SSLError, OSError, XfsError) as e:
            reason = _handshake_failure(e)
        finally:
            if self._handshaking.pop(id(scope), None) is None and conn is None:
                reason = f"more than {self._max_handshakes} TLS handshakes at once"
        if conn is None:
            tsock.close()
            log.info("TLS handshake from %s refused: %s", addr, reason)
            self.dispatcher.audit.record(
                audit.CERT, addr[0], "tls.handshake", "refused", why=reason
            )
            return
        try:
            peer = self._identify(conn.peer_certificate())
        except XfsError as e:
            log.info("connection from %s refused: %s", addr, e.message)
            self.dispatcher.audit.record(
                audit.CERT, addr[0], "tls.identify", "refused", why=e.message
            )
            conn.close()
            return
        held = self._per_peer.get(peer.principal, 0)
        if held >= self._max_per_peer:
            why = f"{peer.principal} has {held} connections open: at most {self._max_per_peer}"
            log.info("connection from %s refused: %s", addr, why)
            self.dispatcher.audit.record(audit.DENY, peer.principal, "connect", "EAGAIN", why=why)
            conn.close()
            return
        self._per_peer[peer.principal] = held + 1
        self._connections[conn] = peer
        try:
            await self._receive_loop(conn, peer)
        finally:
            self._connections.pop(conn, None)
            left = self._per_peer.pop(peer.principal, 1) - 1
            if left:
                self._per_peer[peer.principal] = left
            conn.close()

    async def _receive_loop(self, conn: Link, peer: Identity) -> None:
        # requests in progress, and calls the server holds open waiting (a lock, a long
        # poll): a peer's blocked waits never keep its other requests from being read
        slots = trio.Semaphore(self._max_inflight)
        waits = trio.Semaphore(self._max_waiting)
        limit = self._frame_limits.get(peer.kind, self._frame_limit)
        state = ConnState(peer)  # what this connection acts as (see Dispatcher)
        state.last_activity = trio.current_time()
        budget = self._budget if peer.kind in (Kind.USER, Kind.ADMIN) else None
        admitted = 0

        async def admit(n: int) -> None:
            nonlocal admitted
            assert budget is not None
            await budget.admit(peer.principal, n)
            admitted = n

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._close_when_idle, conn, state)
            while True:
                admitted = 0
                try:
                    body = await conn.recv_frame(limit, admit if budget is not None else None)
                    state.last_activity = trio.current_time()
                    message = framing.decode(body)
                    if not isinstance(message, framing.Request):
                        raise ProtocolError("clients may only send requests")
                except Unavailable:
                    self._release(budget, peer, admitted)
                    break
                except XfsError as e:  # not protocol, or no room in the budget in time
                    self._release(budget, peer, admitted)
                    log.info("closing the connection of %s: %s", peer.principal, e.message)
                    if e.code == errno.EAGAIN:
                        self.dispatcher.audit.record(
                            audit.DENY, peer.principal, "frame", "EAGAIN", why=e.message
                        )
                    await self._send(conn, _error_notice(e))
                    break
                waiting = self.dispatcher.waits(message.method)
                held = waits if waiting else slots
                await held.acquire()
                nursery.start_soon(self._handle, conn, state, message, held, admitted, waiting)
            nursery.cancel_scope.cancel()

    def _release(self, budget: FrameBudget | None, peer: Identity, n: int) -> None:
        if budget is not None:
            budget.release(peer.principal, n)

    async def _close_when_idle(self, conn: Link, state: ConnState) -> None:
        while True:
            due = state.last_activity + self._idle_timeout
            now = trio.current_time()
            if now < due:
                await trio.sleep_until(due)
            elif state.inflight:
                await trio.sleep(min(1.0, self._idle_timeout))  # its answer counts as activity
            else:
                log.info(
                    "closing the connection of %s: idle for %g s",
                    state.peer.principal,
                    self._idle_timeout,
                )
                conn.close()  # the receive loop ends with Unavailable
                return

    async def _handle(
        self,
        conn: Link,
        state: ConnState,
        request: framing.Request,
        slots: trio.Semaphore,
        admitted: int = 0,
        waiting: bool = False,
    ) -> None:
        if state.peer.kind is Kind.USER and not waiting:
            self.last_user_request = trio.current_time()
        self._inflight += 1
        state.inflight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        try:
            try:
                result = await self.dispatcher.dispatch(state, request.method, request.params)
                frame = framing.frame([framing.RESPONSE, request.msgid, None, result])
            except XfsError as e:
                frame = framing.frame([framing.RESPONSE, request.msgid, e.to_wire(), None])
            except Exception:
                log.exception("handler %s failed", request.method)
                internal = ["EIO", f"internal error in {request.method}"]
                frame = framing.frame([framing.RESPONSE, request.msgid, internal, None])
            await self._send(conn, frame)
        finally:
            state.last_activity = trio.current_time()
            state.inflight -= 1
            slots.release()
            if admitted and self._budget is not None:
                self._budget.release(state.peer.principal, admitted)
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    @staticmethod
    async def _send(conn: Link, frame: framing.Chunks) -> None:
        with contextlib.suppress(Unavailable):  # the peer went away; its reader notices
            await conn.send(*frame)


def _error_notice(e: XfsError) -> framing.Chunks:
    """The notification that tells a peer why its connection ends."""
    return framing.frame([framing.NOTIFICATION, "error", e.to_wire()])


def _handshake_failure(e: BaseException) -> str:
    """Why a handshake failed, in words: a certificate's verify_message ("certificate has
    expired"), else the TLS reason, else the error itself."""
    return getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)


class TrustWatch:
    """Reloads a server's trust store every ``interval`` seconds and closes the live
    connections it now refuses (``RPCServer.close_refused``).

    ``TrustStore.reload`` re-reads only the CA files and CRLs whose mtime changed, so a
    round is a few ``stat`` calls plus one identification per live connection. A CRL that
    expires without being replaced is caught here too, as are certificates that expire.
    Every change of the store is recorded (``crl-loaded``, one record per CA).
    """

    def __init__(self, server: RPCServer, trust: TrustStore, interval: float) -> None:
        self._server = server
        self._trust = trust
        self._interval = interval
        self._recorded = -1  # the trust store generation last recorded in the audit log
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        with self._scope:
            while True:
                await self.check()
                await trio.sleep(self._interval)

    def stop(self) -> None:
        self._scope.cancel()

    async def check(self) -> int:
        """One round: reload, record what changed, close what is now refused."""
        self._trust.reload()  # small local files, read in this thread like identify does
        if self._trust.generation != self._recorded:
            self._recorded = self._trust.generation
            for anchor in self._trust.anchors:
                state = anchor.revocation
                what = state.describe() if state is not None else "revocation not checked"
                ok = state is not None and not state.problem
                log.info("%s: %s", anchor.name, what)
                self._server.dispatcher.audit.record(
                    audit.CERT,
                    anchor.cert.subject.rfc4514_string(),
                    "crl-loaded",
                    "ok" if ok else "unusable",
                    ca=anchor.name,
                    crl=what,
                )
        return await self._server.close_refused()


# ---------------------------------------------------------------------------- client
class NotSent(Unavailable):
    """The request never left this process: always safe to retry."""


def unreachable(e: BaseException) -> bool:
    """Whether a failed call means "that server did not answer" (not a refusal): the
    connection failed, the deadline passed, or it said it cannot act now (``EAGAIN``)."""
    if isinstance(e, trio.TooSlowError | Unavailable):
        return True
    return isinstance(e, XfsError) and e.code in (errno.EAGAIN, errno.EHOSTDOWN)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    first_backoff: float = 0.05
    max_backoff: float = 1.0
    connect_timeout: float = 5.0
    # a call to a group of servers of which one serves ("a:1,b:2": MRCs over one store,
    # docs/design/metadata-ha.md) goes on trying to reach one of them this long (seconds)
    # while none answers: another takes over within that time
    failover: float = 30.0


def members(address: str) -> list[str]:
    """The servers an address names: "host:port", or a group "host:port,host:port"."""
    return [a.strip() for a in address.split(",") if a.strip()]


@dataclass
class _Pending:
    done: trio.Event
    error: Any = None
    result: Any = None
    failure: XfsError | None = None


class ClientConnection:
    """One multiplexed client connection; its reader task runs in the pool's nursery."""

    def __init__(self, conn: Link, peer: Identity, address: str, frame_limit: int) -> None:
        self.link = conn
        self.peer = peer
        self.address = address
        self._frame_limit = frame_limit
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self.closed = False
        self.last_activity = trio.current_time()  # a request sent or an answer received

    def idle_for(self) -> float:
        """Seconds since this connection last sent or received, 0 with calls open."""
        return 0.0 if self._pending else trio.current_time() - self.last_activity

    async def run(self) -> None:
        failure: XfsError = Unavailable(f"connection to {self.address} closed")
        try:
            while True:
                body = await self.link.recv_frame(self._frame_limit)
                self.last_activity = trio.current_time()
                message = framing.decode(body)
                if isinstance(message, framing.Response):
                    pending = self._pending.pop(message.msgid, None)
                    if pending is not None:
                        pending.error, pending.result = message.error, message.result
                        pending.done.set()
                elif isinstance(message, framing.Notification) and message.method == "error":
                    failure = XfsError.from_wire(message.params)
                    break
                else:
                    raise ProtocolError("servers may only send responses")
        except XfsError as e:
            failure = e
        finally:
            self.close(failure)

    def close(self, failure: XfsError | None = None) -> None:
        self.closed = True
        self.link.close()
        failure = failure or Unavailable(f"connection to {self.address} closed")
        for pending in self._pending.values():
            pending.failure = failure
            pending.done.set()
        self._pending.clear()

    async def call(self, name: str, params: Any) -> Any:
        if self.closed:
            raise NotSent(f"connection to {self.address} is closed")
        msgid = next(self._ids) & framing.MAX_MSGID
        pending = _Pending(trio.Event())
        self._pending[msgid] = pending
        try:
            frame = framing.frame([framing.REQUEST, msgid, name, params])
            self.last_activity = trio.current_time()
            try:
                await self.link.send(*frame)
            except Unavailable as e:
                raise NotSent(e.message) from None
            await pending.done.wait()
        finally:
            self._pending.pop(msgid, None)
        if pending.failure is not None:
            raise pending.failure
        if pending.error is not None:
            raise XfsError.from_wire(pending.error)
        return pending.result


OnConnect = Callable[[ClientConnection], Awaitable[None]]


class Pool:
    """Connections to many servers under one credential; the layer that retries.

    ``on_connect`` runs on every new connection before any call is sent on it (a worker
    presents its delegation there: see xfs.client.delegation); if it fails, so does the
    call that needed the connection.
    """

    #: Seconds idle after which a connection is not used again but replaced: well under
    #: any server's ``idle_timeout``, so a server never closes one a request is crossing.
    IDLE_REUSE = 60.0

    def __init__(
        self,
        nursery: trio.Nursery,
        ssl_context: ssl.SSLContext,
        identify: Identify,
        *,
        frame_limit: int = framing.DATA_FRAME_LIMIT,
        retry: RetryPolicy = RetryPolicy(),
        on_connect: OnConnect | None = None,
    ) -> None:
        self._nursery = nursery
        self._ctx = ssl_context
        self._identify = identify
        self._frame_limit = frame_limit
        self.retry = retry
        self._on_connect = on_connect
        self._conns: dict[str, ClientConnection] = {}
        self._dialing: dict[str, trio.Lock] = {}
        self._answered: dict[str, int] = {}  # group -> the member that answered last

    async def call(
        self,
        address: str,
        method: Method[Req, Resp],
        request: Req,
        *,
        expect: str | Kind | None = None,
    ) -> Resp:
        """Call ``method`` on the server at ``address`` ("host:port").

        ``expect`` names the principal the server must prove (``osd:<uuid>``) or its kind.
        """
        backoff = self.retry.first_backoff
        group = len(members(address)) > 1
        failover_until = trio.current_time() + self.retry.failover
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = await self._connection(address, expect)
                wire = await conn.call(method.wire_name, request.to_wire())
                return method.response.from_wire(wire)
            except NotSent as e:
                last: XfsError = e
            except Unavailable as e:
                if not method.idempotent:
                    raise
                last = e
            # a group is tried until one of its servers answers (bounded by ``failover``)
            more = trio.current_time() < failover_until if group else False
            if attempt >= self.retry.attempts and not more:
                break
            log.debug("%s to %s failed (%s); retrying", method.wire_name, address, last)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.retry.max_backoff)
        kind = NotSent if isinstance(last, NotSent) else Unavailable
        raise kind(f"{method.wire_name} to {address}: {last.message}")

    async def _connection(self, address: str, expect: str | Kind | None) -> ClientConnection:
        conn = self._conns.get(address)
        if conn is not None and not conn.closed and conn.idle_for() > self.IDLE_REUSE:
            # the server may be closing it right now (its idle_timeout is longer, but
            # a request crossing the close would be lost): start afresh instead
            conn.close()
        if conn is not None and not conn.closed:
            self._check_peer(conn, expect)
            return conn
        lock = self._dialing.setdefault(address, trio.Lock())
        async with lock:
            conn = self._conns.get(address)
            if conn is None or conn.closed:
                conn = await self._dial(address, expect)
                self._nursery.start_soon(conn.run)
                if self._on_connect is not None:
                    await self._greet(conn)
                self._conns[address] = conn
        self._check_peer(conn, expect)
        return conn

    async def _greet(self, conn: ClientConnection) -> None:
        assert self._on_connect is not None
        try:
            await self._on_connect(conn)
        except Unavailable as e:
            conn.close()
            raise NotSent(e.message) from None  # nothing of the caller's was sent yet
        except BaseException:
            conn.close()
            raise

    async def _dial(self, address: str, expect: str | Kind | None = None) -> ClientConnection:
        servers = members(address)
        if len(servers) > 1:
            return await self._dial_any(address, servers, expect)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise XfsError(errno.EINVAL, f"bad server address {address!r}")
        try:
            tls = await self._connect(host, int(port))
        except Unavailable as e:
            raise NotSent(e.message) from None
        try:
            peer = self._identify(tls.peer_certificate())
        except XfsError:
            tls.close()
            raise
        return ClientConnection(tls, peer, address, self._frame_limit)

    async def _dial_any(
        self, group: str, servers: list[str], expect: str | Kind | None
    ) -> ClientConnection:
        """A connection to the first server of ``group`` that answers, beginning with the
        one that answered last (the others refuse until they serve: standby MRCs)."""
        first = self._answered.get(group, 0)
        failures = []
        for k in range(len(servers)):
            i = (first + k) % len(servers)
            try:
                conn = await self._dial(servers[i], expect)
            except NotSent as e:
                failures.append(e.message)
                continue
            if i != first:
                log.info("%s: now through %s", group, servers[i])
            self._answered[group] = i
            return conn
        raise NotSent("; ".join(failures))

    async def _connect(self, host: str, port: int) -> Link:
        return await connect_link(host, port, self._ctx, self.retry.connect_timeout)

    @staticmethod
    def _check_peer(conn: ClientConnection, expect: str | Kind | None) -> None:
        peer = conn.peer
        ok = peer.kind is expect if isinstance(expect, Kind) else expect in (None, peer.principal)
        if not ok:
            raise XfsError(
                errno.EACCES, f"server at {conn.address} is {peer.principal}, not {expect}"
            )

    def use_credential(self, cert: Path, key: Path) -> None:
        """Connect with this certificate from now on (a renewed one): new calls dial new
        connections; those open now finish what they carry and end with their
        certificate (the server closes a connection whose certificate expired)."""
        self._ctx.load_cert_chain(cert, key)
        self._conns.clear()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


@asynccontextmanager
async def open_pool(
    ssl_context: ssl.SSLContext,
    identify: Identify,
    *,
    frame_limit: int = framing.DATA_FRAME_LIMIT,
    retry: RetryPolicy = RetryPolicy(),
    on_connect: OnConnect | None = None,
) -> AsyncIterator[Pool]:
    async with trio.open_nursery() as nursery:
        pool = Pool(
            nursery,
            ssl_context,
            identify,
            frame_limit=frame_limit,
            retry=retry,
            on_connect=on_connect,
        )
        try:
            yield pool
        finally:
            pool.close()
            nursery.cancel_scope.cancel()
