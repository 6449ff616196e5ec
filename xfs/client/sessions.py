"""One session per local uid, made on first use from that uid's own credential.

``only_uid``: a mount that serves one uid alone (a worker's mount under a delegation,
which acts for the grantor: no other local user may borrow that); others get EACCES.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

from xfs.client.credentials import CredentialStore
from xfs.client.session import Session
from xfs.common import audit
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.identity import Credential
from xfs.proto.errors import XfsError

SessionFactory = Callable[[Credential], Awaitable[Session]]


class Sessions:
    def __init__(
        self,
        store: CredentialStore,
        factory: SessionFactory,
        *,
        only_uid: int | None = None,
        audit: Audit = NO_AUDIT,
    ) -> None:
        self._store = store
        self._audit = audit
        self._factory = factory
        self._only_uid = only_uid
        self._by_uid: dict[int, Session] = {}
        self._lock = trio.Lock()

    async def get(self, uid: int) -> Session:
        session = self._by_uid.get(uid)
        if session is not None:
            return session
        if self._only_uid is not None and uid != self._only_uid:
            self._deny(uid, f"this mount serves uid {self._only_uid} only (a delegation)")
        async with self._lock:
            session = self._by_uid.get(uid)
            if session is None:
                try:
                    credential = await trio.to_thread.run_sync(self._store.get, uid)
                except XfsError as e:
                    self._deny(uid, e.message)
                session = self._by_uid[uid] = await self._factory(credential)
        return session

    def _deny(self, uid: int, why: str) -> NoReturn:
        self._audit.record(audit.DENY, f"uid:{uid}", "credential", "EACCES", why=why)
        raise XfsError(errno.EACCES, why)

    def all(self) -> list[Session]:
        return list(self._by_uid.values())
