"""The OSD process: the composition root that builds everything and tears it down."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from xfs.common import clock as clocks
from xfs.common import metrics
from xfs.common.audit import AuditLog
from xfs.common.budget import for_server
from xfs.common.config import OSDConfig
from xfs.common.framing import DATA_FRAME_LIMIT, META_FRAME_LIMIT
from xfs.common.rpc import Dispatcher, RPCServer, open_pool
from xfs.common.service_tls import ServiceTLS
from xfs.common.xcap import VerifiedCache, XCapVerifier
from xfs.osd.handlers import OSDHandlers
from xfs.osd.heartbeat import Heartbeat
from xfs.osd.local import LocalServer
from xfs.osd.objects import ObjectStore
from xfs.osd.replication import Lease, Replication
from xfs.proto.records import Kind

log = logging.getLogger(__name__)


class OSDService:
    def __init__(self, config: OSDConfig, *, clock: Callable[[], float] = clocks.wall) -> None:
        self.config = config
        self._clock = clock
        self._scope = trio.CancelScope()
        self.server: RPCServer | None = None
        self.uuid = ""
        self.registered = trio.Event()  # set once the MRC answered and its keys are held

    async def run(
        self, *, task_status: trio.TaskStatus[OSDService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = self.config
        store = ObjectStore(config.data_dir)
        store.open()
        tls = ServiceTLS.load(config.tls)
        if tls.identity.kind is not Kind.OSD:
            raise SystemExit(f"{config.tls.cert} is not an OSD certificate")
        self.uuid = store.uuid
        if tls.identity.principal != f"osd:{self.uuid}":
            raise SystemExit(
                f"{config.tls.cert} names {tls.identity.principal}, but the store in "
                f"{config.data_dir} belongs to osd:{self.uuid}"
            )
        keys: dict[str, bytes] = {}
        verifier = XCapVerifier(lambda: keys, VerifiedCache())
        audit = AuditLog(
            config.audit_log or config.data_dir / "audit.log",
            "osd",
            self._clock,
            max_bytes=config.audit_max_bytes,
            max_age=config.audit_max_age,
        )
        metrics.serve("osd", config.metrics_host, config.metrics_port)
        metrics.gauge(
            "osd_free_bytes", "Free bytes of the OSD's file system.", lambda: store.usage()[0]
        )
        metrics.gauge("osd_total_bytes", "Size of the OSD's file system.", lambda: store.usage()[1])
        dispatcher = Dispatcher(audit)
        handlers = OSDHandlers(
            store, self.uuid, verifier, self._clock, audit=audit, io_threads=config.io_threads
        )
        handlers.register(dispatcher)
        self.server = RPCServer(
            dispatcher=dispatcher,
            ssl_context=tls.server,
            identify=tls.trust.identify,
            trust=tls.trust,
            crl_check_interval=config.crl_check_interval,
            idle_timeout=config.idle_timeout,
            host=config.host,
            port=config.port,
            frame_limit=DATA_FRAME_LIMIT,  # users write objects, primaries forward them
            frame_limits={Kind.MRC: META_FRAME_LIMIT, Kind.ADMIN: META_FRAME_LIMIT},
            budget=for_server(config.frame_memory, DATA_FRAME_LIMIT),
        )
        with audit, self._scope:
            async with (
                open_pool(tls.client, tls.trust.identify, frame_limit=META_FRAME_LIMIT) as pool,
                open_pool(tls.client, tls.trust.identify, frame_limit=DATA_FRAME_LIMIT) as peers,
                trio.open_nursery() as n,
            ):
                lease = Lease()
                addresses: dict[str, str] = {}
                replication = Replication(
                    store,
                    self.uuid,
                    peers,
                    config.mrc,
                    lease=lease,
                    peers=addresses,
                    peer_timeout=config.peer_timeout,
                    forward_deadline=config.forward_deadline,
                    run=handlers.run_io,
                )
                replication.nursery = n
                handlers.replication = replication
                port = await n.start(self.server.serve)
                if config.local_reads:
                    local = LocalServer(self.uuid, handlers.open_local, audit)
                    await n.start(local.serve)
                heartbeat = Heartbeat(
                    pool,
                    config.mrc,
                    self.uuid,
                    f"{config.host}:{port}",
                    store,
                    keys,
                    config.heartbeat_interval,
                    config.labels,
                    lease,
                    addresses,
                )
                n.start_soon(heartbeat.run)
                n.start_soon(self._note_registration, heartbeat)
                log.info(
                    "OSD %s serving %s on %s:%d", self.uuid, config.data_dir, config.host, port
                )
                task_status.started(self)
                await trio.sleep_forever()

    async def _note_registration(self, heartbeat: Heartbeat) -> None:
        await heartbeat.registered.wait()
        self.registered.set()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(self.config.grace)
        self._scope.cancel()
