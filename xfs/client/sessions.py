"""One session per local caller, made on first use from that caller's own credential.

Which caller: with an enrolling credential store (the embedded default) the local uid
*and* the process's groups, so that the MRC judges each request with the groups Linux
would use (``CredentialStore.get``); otherwise the uid alone, whose user-supplied
certificate names its VO groups. A credential must name the principal that the identity
map shows as that uid, or the kernel's checks (``default_permissions``, made with the
mapped owner) and the MRC's would disagree; such a uid is refused.

``only_uid``: a mount that serves one uid alone (a worker's mount under a delegation,
which acts for the grantor: no other local user may borrow that); others get EACCES.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

from xfs.client.callers import Caller
from xfs.client.credentials import CredentialStore, account_name
from xfs.client.idmap import OVERFLOW_ID, IdentityMap
from xfs.client.session import Session
from xfs.common import audit
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.identity import Credential
from xfs.proto.errors import XfsError

log = logging.getLogger(__name__)

SessionFactory = Callable[[Credential], Awaitable[Session]]
MAX_GROUP_SETS = 64  # sessions one uid may have, one per distinct group set
ACCOUNT_RECHECK = 5.0  # seconds between looking up again which account a uid is


class Sessions:
    def __init__(
        self,
        store: CredentialStore,
        factory: SessionFactory,
        *,
        idmap: IdentityMap | None = None,
        only_uid: int | None = None,
        audit: Audit = NO_AUDIT,
    ) -> None:
        self._store = store
        self._idmap = idmap
        self._audit = audit
        self._factory = factory
        self._only_uid = only_uid
        self._sessions: dict[tuple[int, tuple[str, ...] | None], Session] = {}
        self._per_uid: dict[int, int] = {}
        self._accounts: dict[int, str] = {}  # uid -> the account name its sessions are for
        self._checked: dict[tuple[int, tuple[str, ...] | None], float] = {}
        self._lock = trio.Lock()

    @property
    def follow_groups(self) -> bool:
        """Whether a caller's groups choose its session (else its uid alone does)."""
        return self._only_uid is None and self._idmap is not None and self._store.enrolls

    def _key(self, who: Caller | int) -> tuple[int, tuple[str, ...] | None]:
        if isinstance(who, int):
            return who, None
        if not self.follow_groups or self._idmap is None:
            return who.uid, None
        names = dict.fromkeys(self._idmap.group(g) for g in who.gids if g != OVERFLOW_ID)
        return who.uid, tuple(names)

    async def get(self, who: Caller | int) -> Session:
        """The session of a caller (a uid alone: with the uid's own credential)."""
        key = self._key(who)
        session = self._sessions.get(key)
        if session is not None and self._store.enrolls and self._recheck_due(key):
            if not self._same_account(key[0]):
                self._forget(key[0])  # the uid is another account's now: it starts afresh
                session = None
            else:  # (off the request's path: the store reads files, in a thread)
                session.nursery.start_soon(self._renew, key, session)
        if session is not None:
            return session
        uid, groups = key
        if self._only_uid is not None and uid != self._only_uid:
            self._deny(uid, f"this mount serves uid {self._only_uid} only (a delegation)")
        if uid == OVERFLOW_ID and self._only_uid is None:
            # principals this node cannot map show as this id: acting for it would let
            # the kernel take it for their owner
            self._deny(uid, f"uid {OVERFLOW_ID} is the overflow id of unknown principals")
        async with self._lock:
            session = self._sessions.get(key)
            if session is None:
                if groups is not None and self._per_uid.get(uid, 0) >= MAX_GROUP_SETS:
                    self._deny(uid, f"more than {MAX_GROUP_SETS} group sets in use")
                try:
                    credential = await trio.to_thread.run_sync(self._store.get, uid, groups)
                except XfsError as e:
                    self._deny(uid, e.message)
                self._check_mapped(uid, credential)
                session = self._sessions[key] = await self._factory(credential)
                self._accounts[uid] = account_name(uid)
                if groups is not None:
                    self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        return session

    def _recheck_due(self, key: tuple[int, tuple[str, ...] | None]) -> bool:
        """Time to look again at a session's account and credential (every
        ``ACCOUNT_RECHECK`` seconds)?"""
        now = trio.current_time()
        if now - self._checked.get(key, now) < ACCOUNT_RECHECK:
            self._checked.setdefault(key, now)
            return False
        self._checked[key] = now
        return True

    def _same_account(self, uid: int) -> bool:
        """Is ``uid`` still the account its sessions were made for (by name)?"""
        name = self._accounts.get(uid)
        return name is None or account_name(uid) == name

    async def _renew(self, key: tuple[int, tuple[str, ...] | None], session: Session) -> None:
        """Have the session act with its credential as the store has it now (renewed
        before it expires, with the account's groups as they are then)."""
        uid, groups = key
        try:
            credential = await trio.to_thread.run_sync(self._store.get, uid, groups)
        except XfsError as e:
            log.warning("renewing the credential of uid %d failed: %s", uid, e.message)
            return
        if credential.identity.fingerprint != session.identity.fingerprint:
            if credential.identity.principal != session.identity.principal:
                self._forget(uid)
                return
            session.use_credential(credential)

    def _forget(self, uid: int) -> None:
        """Stop using the sessions of ``uid`` (their open files and locks stay theirs until
        closed; new requests of the uid get a new session)."""
        for key in [k for k in self._sessions if k[0] == uid]:
            del self._sessions[key]
            self._checked.pop(key, None)
        self._per_uid.pop(uid, None)
        self._accounts.pop(uid, None)
        self._audit.record(
            audit.ADMIN, f"uid:{uid}", "credential-retired", why="the uid is another account now"
        )

    def _check_mapped(self, uid: int, credential: Credential) -> None:
        if self._idmap is None or self._only_uid is not None:
            return
        principal = credential.identity.principal
        shown = self._idmap.uid(principal)
        if shown != uid:
            self._deny(
                uid,
                f"its credential names {principal}, which this node shows as uid {shown}: "
                "fix the identity map or the credential",
            )

    def _deny(self, uid: int, why: str) -> NoReturn:
        self._audit.record(audit.DENY, f"uid:{uid}", "credential", "EACCES", why=why)
        raise XfsError(errno.EACCES, why)

    def all(self) -> list[Session]:
        return list(self._sessions.values())
