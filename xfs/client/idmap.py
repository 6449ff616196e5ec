"""The identity map of a node: grid principals and VO groups shown as local uids and gids.

By default a principal ``name@vo`` of the mount's VO maps to the local account ``name``
(or to the number itself for ``1234@vo``), and likewise for groups; a gridmap-style file
adds explicit lines ``principal local-name`` (``group:`` prefix for groups). Anything
unknown shows as the overflow id, as NFS does.

The kernel checks permissions against these ids (``default_permissions``), so the map
must be one-to-one: two principals on one uid would let one of them pass the kernel's
checks as the other. Explicit lines that share a local id are refused; a numeric name
maps to its number only while no local account has that number (``1000@vo`` is not
the account whose uid is 1000: that one's principal is its name).
"""

from __future__ import annotations

import errno
import grp
import pwd
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from xfs.client.credentials import account_name, group_name
from xfs.proto.errors import XfsError

OVERFLOW_ID = 65534
LOOKUP_TTL = 5.0  # seconds a local account or group lookup is remembered
MAX_LOOKUPS = 4096
T = TypeVar("T")


class IdentityMap:
    def __init__(
        self, vo: str, users: dict[str, int] | None = None, groups: dict[str, int] | None = None
    ) -> None:
        self.vo = vo
        self._users = dict(users or {})
        self._groups = dict(groups or {})
        for kind, table in (("user", self._users), ("group", self._groups)):
            if len(set(table.values())) != len(table):
                raise ValueError(f"identity map: two {kind} names map to one local id")
        self._uid_names = {v: k for k, v in self._users.items()}
        self._gid_names = {v: k for k, v in self._groups.items()}
        self._found: dict[tuple[str, str], tuple[float, Any]] = {}

    def bind(self, principal: str, uid: int) -> None:
        """Show ``principal`` as ``uid`` from now on (a worker's mount under a delegation
        shows the grantor as the uid that runs it)."""
        old = self._uid_names.pop(uid, None)
        if old is not None:
            self._users.pop(old, None)
        self._users[principal] = uid
        self._uid_names[uid] = principal

    @classmethod
    def load(cls, vo: str, path: Path | None) -> IdentityMap:
        users: dict[str, int] = {}
        groups: dict[str, int] = {}
        if path is not None:
            for line in path.read_text().splitlines():
                words = shlex.split(line, comments=True)
                if len(words) != 2:
                    continue
                grid, local = words
                if grid.startswith("group:"):
                    groups[grid[6:]] = int(local) if local.isdigit() else _local_gid(local)
                else:
                    users[grid] = int(local) if local.isdigit() else _local_uid(local)
        try:
            return cls(vo, users, groups)
        except ValueError as e:
            raise XfsError(errno.EINVAL, f"{path}: {e}") from None

    def uid(self, principal: str) -> int:
        if principal in self._users:
            return self._users[principal]
        name, _, vo = principal.partition("@")
        if vo != self.vo:
            return OVERFLOW_ID
        uid = self._looked_up(("u", name), _local_uid)
        return OVERFLOW_ID if uid in self._uid_names else uid  # an explicit line's uid

    def gid(self, group: str) -> int:
        if group in self._groups:
            return self._groups[group]
        name, _, vo = group.partition("@")
        if vo != self.vo:
            return OVERFLOW_ID
        gid = self._looked_up(("g", name), _local_gid)
        return OVERFLOW_ID if gid in self._gid_names else gid  # an explicit line's gid

    def _looked_up(self, key: tuple[str, str], find: Callable[[str], T]) -> T:
        """``find(name)`` (a passwd or group database lookup, on every attribute the
        mount shows), remembered for ``LOOKUP_TTL`` seconds."""
        now = time.monotonic()
        hit = self._found.get(key)
        if hit is not None and now - hit[0] < LOOKUP_TTL:
            found: T = hit[1]
            return found
        if len(self._found) >= MAX_LOOKUPS:
            self._found.clear()
        found = find(key[1])
        self._found[key] = (now, found)
        return found

    def principal(self, uid: int) -> str:
        name = self._uid_names.get(uid)
        if name is None:
            name = f"{self._looked_up(('uid', str(uid)), _account_of)}@{self.vo}"
        return name

    def group(self, gid: int) -> str:
        name = self._gid_names.get(gid)
        if name is None:
            name = f"{self._looked_up(('gid', str(gid)), _group_of)}@{self.vo}"
        return name


def _account_of(uid: str) -> str:
    return account_name(int(uid))


def _group_of(gid: str) -> str:
    return group_name(int(gid))


def _local_uid(name: str) -> int:
    if name.isdigit():
        try:
            pwd.getpwuid(int(name))
        except (KeyError, OverflowError):
            return int(name)
        return OVERFLOW_ID  # that number is an account's, whose principal is its name
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return OVERFLOW_ID


def _local_gid(name: str) -> int:
    if name.isdigit():
        try:
            grp.getgrgid(int(name))
        except (KeyError, OverflowError):
            return int(name)
        return OVERFLOW_ID  # that number is a group's, whose grid name is its name
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return OVERFLOW_ID
