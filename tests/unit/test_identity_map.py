"""The identity map is one-to-one, so that the kernel's checks over mapped ids
(default_permissions) agree with the MRC's over grid names; and the sessions of a mount
follow the calling process's groups."""

from __future__ import annotations

import errno
import os
import pwd
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from xfs.client.callers import caller, supplementary_groups
from xfs.client.credentials import CredentialStore
from xfs.client.idmap import OVERFLOW_ID, IdentityMap
from xfs.client.sessions import Sessions
from xfs.proto.errors import XfsError


def unused_uid() -> int:
    uid = 61000
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def test_names_and_numbers_map_both_ways() -> None:
    m = IdentityMap("local")
    assert m.uid("root@local") == 0 and m.principal(0) == "root@local"
    n = unused_uid()
    assert m.uid(f"{n}@local") == n and m.principal(n) == f"{n}@local"
    assert m.uid("alice@physics") == OVERFLOW_ID  # another VO


def test_a_number_that_is_an_account_is_not_that_account() -> None:
    """``0@local`` is not root: root's principal is ``root@local``."""
    m = IdentityMap("local")
    assert m.uid("0@local") == OVERFLOW_ID
    assert m.gid("0@local") == OVERFLOW_ID


def test_explicit_lines_may_not_share_a_local_id(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text("alice@physics 1234\nbob@physics 1234\n")
    with pytest.raises(XfsError, match="two user names"):
        IdentityMap.load("physics", path)
    path.write_text("group:a@physics 1234\ngroup:b@physics 1234\n")
    with pytest.raises(XfsError, match="two group names"):
        IdentityMap.load("physics", path)


def test_a_default_name_never_takes_an_explicit_lines_id(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text("alice@physics root\n")
    m = IdentityMap.load("physics", path)
    assert m.uid("alice@physics") == 0 and m.principal(0) == "alice@physics"
    assert m.uid("root@physics") == OVERFLOW_ID


def test_bind_moves_a_uid_to_another_principal() -> None:
    m = IdentityMap("physics", users={"wn1@physics": 5000})
    m.bind("alice@physics", 5000)
    assert m.uid("alice@physics") == 5000 and m.principal(5000) == "alice@physics"
    assert m.uid("wn1@physics") != 5000


def test_a_caller_is_its_fsgid_then_its_other_groups_sorted() -> None:
    assert caller(7, 30, [40, 10, 30, 10]).gids == (30, 10, 40)
    assert set(supplementary_groups(os.getpid()) or ()) == set(os.getgroups())
    assert supplementary_groups(2**22 + 12345) is None  # no such process


class FakeStore:
    enrolls = True

    def __init__(self, principal: str | None = None) -> None:
        self.asked: list[tuple[int, Any]] = []
        self.principal = principal

    def get(self, uid: int, groups: Any = None) -> Any:
        self.asked.append((uid, groups))
        principal = self.principal or f"{uid}@local"
        return SimpleNamespace(identity=SimpleNamespace(principal=principal))


def sessions_for(store: FakeStore) -> tuple[Sessions, list[Any]]:
    made: list[Any] = []

    async def factory(credential: Any) -> Any:
        made.append(credential)
        return object()

    return Sessions(cast(CredentialStore, store), factory, idmap=IdentityMap("local")), made


def test_one_session_per_uid_and_group_set() -> None:
    uid, g1, g2 = unused_uid(), 61500, 61501
    store = FakeStore()
    sessions, made = sessions_for(store)

    async def main() -> None:
        with trio.fail_after(10):
            a = await sessions.get(caller(uid, g1, [g2]))
            assert await sessions.get(caller(uid, g1, [g2, g1])) is a
            b = await sessions.get(caller(uid, g2, [g1]))
            assert b is not a
            # the overflow gid is never claimed
            assert await sessions.get(caller(uid, g1, [g2, OVERFLOW_ID])) is a

    trio.run(main)
    assert store.asked == [
        (uid, (f"{g1}@local", f"{g2}@local")),
        (uid, (f"{g2}@local", f"{g1}@local")),
    ]
    assert len(made) == 2


def test_the_overflow_uid_and_unmapped_credentials_are_refused() -> None:
    async def main() -> None:
        with trio.fail_after(10):
            sessions, _ = sessions_for(FakeStore())
            with pytest.raises(XfsError) as e:
                await sessions.get(caller(OVERFLOW_ID, 100, []))
            assert e.value.code == errno.EACCES and "overflow" in e.value.message
            uid = unused_uid()
            sessions, made = sessions_for(FakeStore(principal="root@local"))
            with pytest.raises(XfsError) as e:
                await sessions.get(caller(uid, 100, []))
            assert e.value.code == errno.EACCES and "shows as uid 0" in e.value.message
            assert made == []

    trio.run(main)
