"""The MRC process: the composition root that builds everything and tears it down."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from xfs.common import clock as clocks
from xfs.common import metrics
from xfs.common.audit import AuditLog
from xfs.common.budget import for_server
from xfs.common.config import MRCConfig
from xfs.common.framing import META_FRAME_LIMIT
from xfs.common.identity import load_credential
from xfs.common.rpc import Dispatcher, RPCServer, open_pool
from xfs.common.service_tls import ServiceTLS
from xfs.common.xcap import KeyRing
from xfs.mrc import shared
from xfs.mrc.delegations import Delegations
from xfs.mrc.deleter import Deleter
from xfs.mrc.handlers import MRCHandlers
from xfs.mrc.healer import Healer
from xfs.mrc.leases import LeaseSweeper, LockWaiters
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.policies import Policies
from xfs.mrc.replication import ReplicationHandlers
from xfs.mrc.scrubber import Scrubber
from xfs.mrc.sql import MetaStore, open_store
from xfs.mrc.store import StoreError
from xfs.mrc.syncer import Syncer
from xfs.mrc.xcaps import KeyRotator, XCapIssuer
from xfs.proto.records import Kind

log = logging.getLogger(__name__)


class MRCService:
    def __init__(self, config: MRCConfig, *, clock: Callable[[], float] = clocks.wall) -> None:
        self.config = config
        self._clock = clock
        self._scope = trio.CancelScope()
        self._standby = trio.CancelScope()  # while another MRC serves the store
        self.server: RPCServer | None = None
        self.deleter: Deleter | None = None
        self.healer: Healer | None = None
        self.scrubber: Scrubber | None = None
        self.rotator: KeyRotator | None = None

    def _metrics(self, registry: OSDRegistry, ns: Namespace) -> None:
        config = self.config
        metrics.serve("mrc", config.metrics_host, config.metrics_port)
        metrics.quotas(
            lambda: [
                (volume, principal, limit.files, limit.bytes, use.files, use.bytes)
                for volume, principal, limit, use in ns.quotas_of()
            ]
        )

        def repair(field: str) -> Callable[[], float]:
            return lambda: 0 if self.healer is None else getattr(self.healer.status, field)

        metrics.gauge(
            "replicas_below_factor",
            "Replicas missing to reach the files' factor, as the healer last counted.",
            repair("below_factor"),
        )
        metrics.gauge(
            "replicas_filling", "Replicas being filled in the background.", repair("filling")
        )
        metrics.gauge(
            "replicated_files", "Files with a replication policy.", repair("replicated_files")
        )
        metrics.gauge(
            "osds_alive",
            "OSDs heard from within osd_dead_after.",
            lambda: sum(o.alive for o in registry.all()),
        )
        metrics.gauge(
            "osds_dead",
            "OSDs declared dead, their replicas being replaced.",
            lambda: 0 if self.healer is None else len(self.healer.status.dead),
        )

        def scrub(field: str) -> Callable[[], float]:
            return lambda: 0 if self.scrubber is None else getattr(self.scrubber.status, field)

        metrics.gauge("scrub_passes", "Whole scrubbing passes done.", scrub("passes"))
        metrics.gauge("scrub_files", "Files scrubbed in the current pass.", scrub("files"))
        metrics.gauge(
            "scrub_repaired", "Corrupt objects the scrubber had repaired.", scrub("repaired")
        )
        metrics.gauge(
            "scrub_unrepaired", "Corrupt objects no replica could mend.", scrub("unrepaired")
        )

    def _last_user_request(self) -> float:
        return self.server.last_user_request if self.server is not None else -float("inf")

    async def run(
        self, *, task_status: trio.TaskStatus[MRCService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = self.config
        tls = ServiceTLS.load(config.tls)
        if tls.identity.kind is not Kind.MRC:
            raise SystemExit(f"{config.tls.cert} is not an MRC certificate")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            store = open_store(config.store or config.data_dir / "mrc.db", application="xfs-mrc")
        except StoreError as e:  # one line where `xfs up` and the log say why
            raise SystemExit(str(e)) from None
        audit_path = config.audit_log or config.data_dir / "audit.log"
        audit = AuditLog(
            audit_path,
            "mrc",
            self._clock,
            max_bytes=config.audit_max_bytes,
            max_age=config.audit_max_age,
        ).open()
        try:
            with self._standby:
                await self._wait_to_lead(store)
            if self._standby.cancelled_caught:
                return  # stopped while standing by
            shared.adopt_files(store, config.data_dir)
            ring = KeyRing.load_or_create_in(shared.StoreKeys(store), self._clock())
            ns = Namespace(store)
            registry = OSDRegistry(
                store, self._clock, config.osd_dead_after, lease=config.osd_lease
            )
            registry.load()
            delegations = Delegations(store, self._clock, config.max_delegation)
            delegations.load()
            fingerprint = load_credential(config.tls.cert, config.tls.key).fingerprint
            xcaps = XCapIssuer(
                ring,
                self._clock,
                config.xcap_lifetime,
                may_hold=ns.may_hold,
                audit=audit,
                own_holder=fingerprint,
            )
            self.rotator = KeyRotator(
                ring,
                self._clock,
                period=config.xcap_key_rotation * 3600,
                lifetime=config.xcap_lifetime,
                audit=audit,
            )
            dispatcher = Dispatcher(audit)
            self._metrics(registry, ns)
            with self._scope:
                async with (
                    open_pool(tls.client, tls.trust.identify, frame_limit=META_FRAME_LIMIT) as pool,
                    trio.open_nursery() as n,
                ):
                    self.deleter = Deleter(
                        ns, registry, xcaps, pool, last_request=self._last_user_request
                    )
                    policy_store = Policies(store, ns, registry)
                    self.healer = Healer(
                        ns,
                        registry,
                        xcaps,
                        pool,
                        replace_after=config.osd_replace_after,
                        interval=config.heal_interval,
                        placement_of=policy_store.placement_of,
                    )
                    self.scrubber = Scrubber(
                        ns,
                        registry,
                        xcaps,
                        pool,
                        interval=config.scrub_interval,
                        rate=config.scrub_rate,
                    )
                    ReplicationHandlers(
                        ns,
                        registry,
                        xcaps,
                        lease=config.osd_lease,
                        replace_after=config.osd_replace_after,
                        on_change=self.healer.wake,
                        audit=audit,
                    ).register(dispatcher)
                    syncer = Syncer(store, config.sync_interval)
                    await n.start(syncer.run)
                    waiters = LockWaiters()
                    # clients get one lease's time after the MRC's downtime to come back
                    # (renew, register their open files again, send what they queued)
                    # before the sweeper ends their leases
                    ns.extend_clients(int(config.client_lease * 1e9))
                    sweeper = LeaseSweeper(
                        ns, waiters, self.deleter.wake, max(0.2, config.client_lease / 10)
                    )
                    MRCHandlers(
                        ns,
                        registry,
                        xcaps,
                        self.deleter.wake,
                        tls.identity.principal.removeprefix("mrc:"),
                        waiters=waiters,
                        client_lease=config.client_lease,
                        audit=audit,
                        delegations=delegations,
                        osd_lease=config.osd_lease,
                        repair=lambda: self.healer.status if self.healer else None,
                        scrub=lambda: self.scrubber.status if self.scrubber else None,
                        policies=policy_store,
                        on_xloc=self.healer.wake,
                        sync=syncer.sync,
                    ).register(dispatcher)
                    self.server = RPCServer(
                        dispatcher=dispatcher,
                        ssl_context=tls.server,
                        identify=tls.trust.identify,
                        trust=tls.trust,
                        crl_check_interval=config.crl_check_interval,
                        idle_timeout=config.idle_timeout,
                        host=config.host,
                        port=config.port,
                        frame_limit=META_FRAME_LIMIT,
                        budget=for_server(config.frame_memory, META_FRAME_LIMIT),
                    )
                    port = await n.start(self.server.serve)
                    n.start_soon(self.deleter.run)
                    n.start_soon(self.healer.run)
                    n.start_soon(self.scrubber.run)
                    n.start_soon(sweeper.run)
                    n.start_soon(self.rotator.run)
                    log.info("MRC serving %s on %s:%d", store.name, config.host, port)
                    task_status.started(self)
                    await trio.sleep_forever()
        finally:
            audit.close()
            store.close()

    async def _wait_to_lead(self, store: MetaStore) -> None:
        """Return once this MRC serves ``store``: at once, unless another MRC does (MRCs
        over one PostgreSQL store, docs/design/metadata-ha.md); then stand by, neither
        listening nor writing, and take over when that one's lead ends."""
        if store.try_lead():
            return
        log.info("standing by: another MRC serves %s", store.name)
        while not store.try_lead():
            await trio.sleep(self.config.standby_poll)
        log.info("taking over %s from the MRC that served it", store.name)

    async def stop(self) -> None:
        self._standby.cancel()
        if self.server is not None:
            await self.server.stop(self.config.grace)
        self._scope.cancel()
