"""Background work for client leases: waking lock waiters and ending expired leases."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from xfs.mrc.clients import ClientOps

log = logging.getLogger(__name__)

LockKey = tuple[str, int]  # (volume id, ino)


class LockWaiters:
    """Callers waiting for the locks of an inode to change (F_SETLKW)."""

    def __init__(self) -> None:
        self._events: dict[LockKey, trio.Event] = {}

    def event(self, key: LockKey) -> trio.Event:
        """The event that fires on the next change; take it BEFORE testing the locks,
        so a change between the test and the wait is not missed."""
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = trio.Event()
        return event

    def changed(self, keys: Iterable[LockKey]) -> None:
        for key in keys:
            event = self._events.pop(key, None)
            if event is not None:
                event.set()


class LeaseSweeper:
    """Ends the leases of clients that stopped renewing them (died or cut off)."""

    def __init__(
        self,
        ns: ClientOps,
        waiters: LockWaiters,
        on_deletion: Callable[[], None],
        interval: float,
    ) -> None:
        self._ns = ns
        self._waiters = waiters
        self._on_deletion = on_deletion
        self._interval = interval
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        with self._scope:
            while True:
                try:
                    self.sweep()
                except Exception:  # (a busy store, say): try again next round
                    log.exception("sweeping client leases failed")
                await trio.sleep(self._interval)

    def stop(self) -> None:
        self._scope.cancel()

    def sweep(self) -> int:
        ended = self._ns.expire_clients()
        if ended.clients:
            log.info(
                "%d client lease(s) expired: locks released on %d file(s), %d file(s) freed",
                ended.clients,
                len(ended.unlocked),
                len(ended.pending),
            )
        self._waiters.changed(ended.unlocked)
        if ended.pending:
            self._on_deletion()
        return ended.clients
