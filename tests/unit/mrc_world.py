"""What the MRC's unit tests share: the volume name, callers of VO physics, an errno
assertion, and a store that must pass fsck (the oracle of its invariants) when a test
ends."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xfs.mrc import fsck
from xfs.mrc.sql import MetaStore, open_store
from xfs.proto.errors import XfsError
from xfs.proto.records import Identity, Kind, Role

V = "vol"


def ident(principal: str, *groups: str, role: Role = Role.STANDARD) -> Identity:
    return Identity(principal, "physics", Kind.USER, role, tuple(groups), b"\0" * 32)


ALICE = ident("alice@physics", "users@physics", "alice@physics")
BOB = ident("bob@physics", "users@physics")
CAROL = ident("carol@physics", "others@physics")
DAVE = ident("dave@physics", "team@physics")
ROOT = ident("root@physics", "admins@physics", role=Role.SUPER)


def raises(code: int, fn: Callable[..., object], *args: object, **kw: object) -> XfsError:
    with pytest.raises(XfsError) as info:
        fn(*args, **kw)
    assert info.value.code == code, f"{info.value!r}, wanted {errno.errorcode[code]}"
    return info.value


def fsck_checked_store(
    spec: str | Path, clock: Callable[[], int] = time.time_ns
) -> Iterator[MetaStore]:
    """For a fixture: the store ``spec`` names (an SQLite file or a PostgreSQL address,
    see the ``store_spec`` fixture), which must pass fsck when the test is done."""
    s = open_store(spec, clock)
    yield s
    problems = fsck.check(s)
    s.close()
    assert problems == []
