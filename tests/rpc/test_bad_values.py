"""Attack: numbers out of range in every field of every method.

An inode number of 2^64-1 used to reach SQLite (``OverflowError``) and a lock wait of
NaN the lock table, each ending in EIO and a traceback. Every numeric field is now
range-checked when the request is decoded: each method, called by a super user with
every int field at 2^64-1 and every float at NaN, is refused with EINVAL (or, for
methods a user may not call, EPERM first), audited, with no error in any service's log,
and the grid goes on serving.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import logging
import math
import types
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest

from tests.conftest import PKI
from tests.rpc.ingrid import assert_denied_and_audited, open_grid, run_within
from xfs.proto.codec import Record
from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC, Ino, LockArgs, Method, VolumeCreate, all_methods
from xfs.proto.records import Kind

HUGE = 2**64 - 1


def hostile(tp: Any) -> Any:
    """A value of type ``tp`` whose every int is 2^64-1 and every float NaN."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return hostile(get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return hostile(next(a for a in get_args(tp) if a is not type(None)))
    if origin is list:
        return [hostile(get_args(tp)[0])]
    if origin is dict:
        k, v = get_args(tp)
        return {hostile(k): hostile(v)}
    if origin is tuple:
        return tuple(hostile(a) for a in get_args(tp) if a is not Ellipsis)
    if tp is int:
        return HUGE
    if tp is float:
        return math.nan
    if tp is bool:
        return False
    if tp is str:
        return "home"
    if tp is bytes:
        return b"x"
    if tp is Any or tp is type(None):
        return None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp))
    if isinstance(tp, type) and issubclass(tp, Record):
        hints = typing.get_type_hints(tp, include_extras=True)
        return tp(**{f.name: hostile(hints[f.name]) for f in dataclasses.fields(tp)})
    raise TypeError(tp)


def numeric(tp: Any) -> bool:
    """Does a record of type ``tp`` carry an int or a float anywhere?"""
    hints = typing.get_type_hints(tp, include_extras=True)
    text = " ".join(str(h) for h in hints.values())
    if "int" in text or "float" in text:
        return True
    return any(isinstance(h, type) and issubclass(h, Record) and numeric(h)
               for h in hints.values())


CALLS = [m for m in all_methods() if numeric(m.request)]


def test_every_numeric_field_is_range_checked(
    pki: PKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with open_grid(pki, tmp_path, osds=1) as grid:
            (osd,) = grid.osd_addresses.values()
            async with grid.client(grid.root_user) as admin:
                await admin.call(grid.mrc_address, MRC.volume_create,
                                 VolumeCreate("home", mode=0o777), expect=Kind.MRC)

                async def serves() -> None:
                    attr = await admin.call(grid.mrc_address, MRC.getattr, Ino("home", 1),
                                            expect=Kind.MRC)
                    assert attr.ino == 1

                for method in CALLS:
                    address = grid.mrc_address if method.service == "mrc" else osd
                    if authorized(method):
                        refused = await assert_denied_and_audited(
                            grid, call(admin, address, method), actor="root@physics",
                            action=method.wire_name, code=errno.EINVAL, still_serves=serves)
                        assert "out of range" in refused.message \
                            or "not a finite number" in refused.message, refused
                    else:  # the authority check comes first: refused as before
                        with pytest.raises(XfsError) as e:
                            await call(admin, address, method)
                        assert e.value.code in (errno.EPERM, errno.EACCES), (method, e.value)
                # the two that ended in tracebacks, as the attack sent them
                with pytest.raises(XfsError) as e:
                    await admin.call(grid.mrc_address, MRC.getattr, Ino("home", HUGE),
                                     expect=Kind.MRC)
                assert e.value.code == errno.EINVAL
                lock = LockArgs("home", 1, "c", 1, "posix", "write", 0, 1, wait=math.nan)
                with pytest.raises(XfsError) as e:
                    await admin.call(grid.mrc_address, MRC.lock, lock, expect=Kind.MRC)
                assert e.value.code == errno.EINVAL
                await serves()

    run_within(120, main)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


def call(pool: Any, address: str, method: Method[Any, Any]) -> Any:
    expect: Any = Kind.MRC if method.service == "mrc" else None
    return pool.call(address, method, hostile(method.request), expect=expect)


def authorized(method: Method[Any, Any]) -> bool:
    """May a super user call it (so that its request gets decoded)?"""
    return method.authority.value in ("user", "advanced", "admin", "holder", "user_or_mrc",
                                      "any")


