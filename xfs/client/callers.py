"""Who a FUSE request comes from: the calling process's fsuid, fsgid and groups.

The kernel sends the fsuid, fsgid and pid of the caller with every request; its
supplementary groups are read from ``/proc/<pid>/status`` (as the kernel's own
permission checks, made with ``default_permissions``, use them). See
docs/design/permissions.md for how they meet the certificate's groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """A local caller: ``gids`` is its fsgid first, then its other groups, sorted."""

    uid: int
    gids: tuple[int, ...]


def caller(uid: int, fsgid: int, supplementary: Iterable[int]) -> Caller:
    return Caller(uid, (fsgid, *sorted(set(supplementary) - {fsgid})))


def supplementary_groups(pid: int) -> list[int] | None:
    """The supplementary groups of process (or thread) ``pid``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return [int(g) for g in line.split()[1:]]
    except (OSError, ValueError):
        return None
    return None
