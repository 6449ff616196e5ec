"""The mount process: the composition root of the FUSE client.

Builds the credential store, identity map and per-uid sessions, mounts the volume, and
tears everything down in reverse order: on SIGTERM or unmount, open files are flushed
(within a deadline) before the FUSE session closes. With a delegation token (a worker's
mount for a batch job) it serves the uid that runs it alone, acting for the grantor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from xfs.client import fuse_ext  # before pyfuse3: see xfs.client.fuse_ext

# isort: split
import pyfuse3
import trio

from xfs.client.credentials import CredentialStore
from xfs.client.delegation import assume_on_connect, read_token
from xfs.client.idmap import IdentityMap
from xfs.client.operations import Operations
from xfs.client.session import Session
from xfs.client.sessions import Sessions
from xfs.common import metrics, tls
from xfs.common.audit import NO_AUDIT, Audit, AuditLog
from xfs.common.config import MountConfig
from xfs.common.framing import DATA_FRAME_LIMIT
from xfs.common.identity import Credential, TrustStore
from xfs.common.rpc import Pool

log = logging.getLogger(__name__)


class Mount:
    def __init__(self, config: MountConfig) -> None:
        self.config = config
        self.operations: Operations | None = None
        self._stopping = False

    async def run(self, *, task_status: trio.TaskStatus[Mount] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        metrics.serve("mount", config.metrics_host, config.metrics_port)
        trust = TrustStore.load(config.trust)
        bundle = trust.ssl_cafile_bundle()
        store = CredentialStore(
            config.credentials,
            enroll_ca=config.enroll_ca,
            lifetime=config.credential_lifetime,
        )
        idmap = IdentityMap.load(config.vo, config.identity_map)
        # under a delegation every new MRC connection presents the token first
        token = None if config.delegation is None else read_token(config.delegation)
        # a worker's mount shows the grantor it acts for as the uid that runs it, so
        # that the kernel's checks (default_permissions) see it as the owner it is
        greet = (
            None
            if token is None
            else assume_on_connect(token, lambda d: idmap.bind(d.grantor, os.getuid()))
        )

        audit_log: contextlib.AbstractContextManager[Audit] = (
            contextlib.nullcontext(NO_AUDIT)
            if config.audit_log is None
            else AuditLog(config.audit_log, "mount")
        )
        with audit_log as mount_audit:
            async with trio.open_nursery() as nursery:

                async def make_session(credential: Credential) -> Session:
                    ctx = tls.client_context(credential.cert_path, credential.key_path, bundle)
                    pool = Pool(
                        nursery, ctx, trust.identify, frame_limit=DATA_FRAME_LIMIT, on_connect=greet
                    )
                    return Session(
                        pool=pool,
                        mrc=config.mrc,
                        volume=config.volume,
                        identity=credential.identity,
                        nursery=nursery,
                        clock=time.time,
                        io_timeout=config.io_timeout,
                        osd_timeout=config.osd_timeout,
                        xcap_renew_margin=config.xcap_renew_margin,
                        write_window=config.write_window,
                        read_cache_objects=config.read_cache_objects,
                        read_ahead=config.read_ahead,
                        local_reads=config.local_reads,
                    )

                sessions = Sessions(
                    store,
                    make_session,
                    idmap=idmap,
                    only_uid=None if token is None else os.getuid(),
                    audit=mount_audit,
                )
                own = await sessions.get(os.getuid())
                await own.volume_info()  # fail early, with a clear error, if it is not there

                self.operations = Operations(
                    sessions,
                    idmap,
                    attr_timeout=config.attr_timeout,
                    entry_timeout=config.entry_timeout,
                    negative_timeout=config.negative_timeout,
                )
                # the kernel checks permissions itself, with each process's own ids,
                # against the mapped attributes and ACLs: docs/design/permissions.md
                options = {
                    f"fsname=xfs:{config.volume}",
                    "subtype=xfs",
                    "noatime",
                    "default_permissions",
                }
                if config.allow_other:
                    options.add("allow_other")
                requests = fuse_ext.install(self.operations)
                pyfuse3.init(self.operations, str(config.mountpoint), options)
                try:
                    fuse_ext.verify_installed()
                except fuse_ext.LockHookError:
                    pyfuse3.close(unmount=True)
                    raise
                log.info("mounted volume %s at %s", config.volume, config.mountpoint)
                try:
                    await nursery.start(requests.run)
                    task_status.started(self)
                    await pyfuse3.main()
                finally:
                    requests.stop()
                    await self._flush_all(sessions)
                    pyfuse3.close(unmount=True)
                    nursery.cancel_scope.cancel()

    async def _flush_all(self, sessions: Sessions) -> None:
        with trio.move_on_after(self.config.io_timeout) as scope:
            scope.shield = True
            for session in sessions.all():
                for f in list(session.files.values()):
                    try:
                        await f.flush()
                    except Exception as e:  # report, and go on flushing the others
                        log.error("flushing inode %d on unmount failed: %s", f.ino, e)
                try:
                    await session.close_client()  # its opens and locks end now
                except Exception as e:
                    log.warning("ending the client lease failed (it will expire): %s", e)

    def stop(self) -> None:
        """Make ``run`` return: unmount after flushing open files."""
        if not self._stopping:
            self._stopping = True
            pyfuse3.terminate()
