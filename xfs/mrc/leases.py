"""Background work for client leases: waking lock waiters, recalling append and directory
leases, and ending expired leases."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from xfs.mrc.clients import ClientOps

log = logging.getLogger(__name__)

LockKey = tuple[str, int]  # (volume id, ino)

RECALL_WAIT = 20.0  # seconds a silent holder has to give a lease back before it is ended
MAX_RECALL = 120.0  # seconds a holder that still polls may take to give a lease back
POLL_WAIT = 5.0  # seconds a client's lease_recalls call waits for a recall before replying


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


APPEND = "append"  # kinds of lease a client is asked to give back
DIR = "dir"
Asked = tuple[str, str, int]  # (kind, volume name, ino)


class Recaller:
    """Recalls leases that clients hold: append leases of files and directory leases
    (docs/design/leases.md).

    Before another client's call may go on, every holder is asked to give the lease
    back: its ``lease_recalls`` poll returns it; the holder reports what it did under the
    lease and returns it. A holder that does not answer within ``wait`` seconds of the
    recall (or of its last poll, while it still polls: it is busy sending what it did
    under the lease; ``MAX_RECALL`` at most) loses the lease; it stops using it by itself
    earlier than that (it trusts a lease only so long after its last poll answered).
    """

    def __init__(self, waiters: LockWaiters, wait: float = RECALL_WAIT) -> None:
        self._waiters = waiters
        self._wait = wait
        self._pending: dict[str, set[Asked]] = {}  # client -> what it is asked for
        self._polls: dict[str, trio.Event] = {}  # client -> fires on its next recall
        self._seen: dict[str, float] = {}  # client -> when (trio time) it last polled
        self._recalling: dict[tuple[str, int], int] = {}  # (vid, ino) -> recalls under way

    def recalling(self, vid: str, ino: int) -> bool:
        """Whether a recall of the inode's lease is under way (then none is granted)."""
        return (vid, ino) in self._recalling

    async def recall(
        self,
        kind: str,
        volume: str,
        vid: str,
        ino: int,
        holders: Callable[[], list[str]],
        revoke: Callable[[], list[str]],
    ) -> None:
        """Return once ``holders()`` is empty: asked, given back, or ended by ``revoke``
        after ``wait`` seconds."""
        key = (vid, ino)
        start = trio.current_time()
        self._recalling[key] = self._recalling.get(key, 0) + 1
        try:
            while True:
                held = holders()
                if not held:
                    return
                # no await between the test and taking the event: no change slips by
                changed = self._waiters.event(key)
                for client in held:
                    self._ask(client, (kind, volume, ino))
                now = trio.current_time()
                alive = max(self._seen.get(client, start) for client in held)
                deadline = min(max(start, alive) + self._wait, start + max(self._wait, MAX_RECALL))
                if now >= deadline:
                    break
                with trio.move_on_at(min(deadline, now + POLL_WAIT)):
                    await changed.wait()
        finally:
            left = self._recalling.pop(key) - 1
            if left:
                self._recalling[key] = left
        revoked = revoke()
        if revoked:
            log.warning(
                "%s lease of inode %d (volume %s) not given back within %.0f s: "
                "ended for client(s) %s",
                kind,
                ino,
                volume,
                self._wait,
                ", ".join(revoked),
            )
            self._waiters.changed([key])

    def _ask(self, client: str, asked: Asked) -> None:
        self._pending.setdefault(client, set()).add(asked)
        poll = self._polls.pop(client, None)
        if poll is not None:
            poll.set()

    async def poll(self, client: str, timeout: float = POLL_WAIT) -> list[Asked]:
        """The leases ``client`` is asked to give back, waiting up to ``timeout`` for one."""
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[client] = trio.current_time()
        if client not in self._pending:
            poll = self._polls.setdefault(client, trio.Event())
            with trio.move_on_after(timeout):
                await poll.wait()
            if self._polls.get(client) is poll and not poll.is_set():
                del self._polls[client]
        return sorted(self._pending.pop(client, ()))

    def forget(self, client: str) -> None:
        """The client said goodbye: nothing more to ask of it."""
        self._pending.pop(client, None)
        self._seen.pop(client, None)
