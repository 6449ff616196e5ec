"""One session per local uid, made on first use from that uid's own credential."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from xfs.client.credentials import CredentialStore
from xfs.client.session import Session
from xfs.common.identity import Credential

SessionFactory = Callable[[Credential], Awaitable[Session]]


class Sessions:
    def __init__(self, store: CredentialStore, factory: SessionFactory) -> None:
        self._store = store
        self._factory = factory
        self._by_uid: dict[int, Session] = {}
        self._lock = trio.Lock()

    async def get(self, uid: int) -> Session:
        session = self._by_uid.get(uid)
        if session is not None:
            return session
        async with self._lock:
            session = self._by_uid.get(uid)
            if session is None:
                credential = await trio.to_thread.run_sync(self._store.get, uid)
                session = self._by_uid[uid] = await self._factory(credential)
        return session

    def all(self) -> list[Session]:
        return list(self._by_uid.values())
