"""Delegations, client side: make, list and revoke them; present one as a worker.

A grantor (a user of any role but worker) names a directory of a volume by its path; the
library resolves it by lookups, as the grantor, and asks the MRC for a delegation to a
worker's principal. The reply carries the token, which travels to the worker node as a
file readable by its owner only. The worker connects with its own certificate and
presents the token on every new connection to the MRC before anything else is sent on
it (``assume_on_connect``, a ``Pool`` hook), so a connection the pool opens again acts
for the grantor too. See docs/design/delegation.md.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from xfs.common.rpc import ClientConnection, OnConnect, Pool
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    Delegate,
    DelegationId,
    DelegationInfo,
    DelegationToken,
    Empty,
    Lookup,
)
from xfs.proto.records import ROOT_INO, Kind

MAX_TOKEN_FILE = 4096


async def resolve(pool: Pool, mrc: str, volume: str, path: str) -> int:
    """The inode of ``path`` (from the volume's root) in ``volume``, by lookups."""
    ino = ROOT_INO
    for part in path.split("/"):
        if part in ("", "."):
            continue
        attr = await pool.call(mrc, MRC.lookup, Lookup(volume, ino, part.encode()), expect=Kind.MRC)
        ino = attr.ino
    return ino


async def delegate(
    pool: Pool, mrc: str, volume: str, path: str, grantee: str, lifetime: float
) -> DelegationInfo:
    """Delegate directory ``path`` of ``volume`` to worker ``grantee`` for ``lifetime``
    seconds; the reply's ``token`` is what the worker presents."""
    ino = await resolve(pool, mrc, volume, path)
    request = Delegate(volume, ino, grantee, lifetime, "/" + path.strip("/"))
    return await pool.call(mrc, MRC.delegate, request, expect=Kind.MRC)


async def revoke(pool: Pool, mrc: str, id: str) -> None:
    await pool.call(mrc, MRC.delegation_revoke, DelegationId(id), expect=Kind.MRC)


async def delegations(pool: Pool, mrc: str) -> list[DelegationInfo]:
    """The delegations the caller may manage: its own, or its VO's for a super user."""
    reply = await pool.call(mrc, MRC.delegation_list, Empty(), expect=Kind.MRC)
    return reply.delegations


def assume_on_connect(
    token: str, assumed: Callable[[DelegationInfo], None] | None = None
) -> OnConnect:
    """A ``Pool`` hook: present ``token`` on every new connection to an MRC, then tell
    ``assumed`` what the MRC answered. (OSDs know nothing of delegations: the XCaps the
    MRC gives the worker are its authority there.)"""

    async def greet(conn: ClientConnection) -> None:
        if conn.peer.kind is not Kind.MRC:
            return
        reply = await conn.call(MRC.assume.wire_name, DelegationToken(token).to_wire())
        info = MRC.assume.response.from_wire(reply)
        if assumed is not None:
            assumed(info)

    return greet


def write_token(path: Path, token: str) -> None:
    """Write a token to a new file that only its owner may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def read_token(path: Path) -> str:
    """The token of a token file, which must be a regular file only its owner may read."""
    try:
        st = path.lstat()
        if not path.is_file() or st.st_mode & 0o077 or st.st_uid != os.getuid():
            raise XfsError(
                errno.EACCES, f"delegation token {path} must be a file of yours with mode 0600"
            )
        with open(path) as f:
            token = f.read(MAX_TOKEN_FILE).strip()
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot read {path}: {e.strerror}") from None
    if not token:
        raise XfsError(errno.EINVAL, f"{path} holds no delegation token")
    return token
