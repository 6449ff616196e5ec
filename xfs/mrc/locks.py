"""Byte-range and whole-file locks: the pure rules, no I/O.

Two families that do not interact, as on Linux: POSIX record locks (``fcntl``
F_SETLK/F_SETLKW/F_GETLK and OFD locks, byte ranges per owner) and ``flock(2)`` locks
(whole file, per open file description). Each lock is held by an *owner* on a *client*:
the client is a mount's lease (its locks end with it), the owner is the kernel's lock
owner on that mount (a process for POSIX locks, an open file description for OFD and
flock locks).

A request never conflicts with its own owner's locks: a POSIX lock replaces the owner's
overlapping ranges (splitting them), an unlock removes them, adjacent ranges of one type
merge. ``end`` is inclusive; ``EOF`` stands for "to the end of the file, however it
grows".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from xfs.proto.methods import EOF, FLOCK, POSIX, READ, UNLOCK, WRITE

__all__ = ["EOF", "FLOCK", "POSIX", "READ", "UNLOCK", "WRITE", "Held", "Request"]


@dataclass(frozen=True)
class Held:
    """One lock held on one file."""

    client: str
    owner: int
    family: str  # POSIX or FLOCK
    mode: str  # READ or WRITE
    start: int
    end: int  # inclusive
    pid: int = 0

    def same_owner(self, other: Held) -> bool:
        return (self.client, self.owner, self.family) == (other.client, other.owner, other.family)

    def overlaps(self, start: int, end: int) -> bool:
        return self.start <= end and start <= self.end


@dataclass(frozen=True)
class Request:
    """Set (READ/WRITE) or remove (UNLOCK) a lock on [start, end] for one owner."""

    client: str
    owner: int
    family: str
    mode: str  # READ, WRITE or UNLOCK
    start: int
    end: int
    pid: int = 0

    def held(self, start: int | None = None, end: int | None = None) -> Held:
        return Held(
            self.client,
            self.owner,
            self.family,
            self.mode,
            self.start if start is None else start,
            self.end if end is None else end,
            self.pid,
        )


def check_range(start: int, end: int) -> bool:
    """Whether [start, end] is a range a lock may cover."""
    return 0 <= start <= end <= EOF


def conflict(held: Iterable[Held], request: Request) -> Held | None:
    """The first lock of another owner that stops ``request`` (None: it may proceed)."""
    if request.mode == UNLOCK:
        return None
    mine = request.held()
    for lock in held:
        if lock.family != request.family or lock.same_owner(mine):
            continue
        if request.family == POSIX and not lock.overlaps(request.start, request.end):
            continue  # (flock locks have no range: they all meet)
        if request.mode == WRITE or lock.mode == WRITE:
            return lock
    return None


def apply(held: Iterable[Held], request: Request) -> list[Held]:
    """The locks of the file after ``request`` (which must not conflict)."""
    mine = request.held()
    others: list[Held] = []
    own: list[Held] = []
    for lock in held:
        (own if lock.same_owner(mine) else others).append(lock)
    if request.family == FLOCK:
        # whole file, whatever range the request names: the owner's one lock is
        # converted or removed
        return others if request.mode == UNLOCK else [*others, request.held(0, EOF)]
    kept: list[Held] = []
    for lock in own:
        if not lock.overlaps(request.start, request.end):
            kept.append(lock)
            continue
        if lock.start < request.start:
            kept.append(replace(lock, end=request.start - 1))
        if lock.end > request.end:
            kept.append(replace(lock, start=request.end + 1))
    if request.mode != UNLOCK:
        kept.append(mine)
    return others + _merged(kept)


def _merged(locks: list[Held]) -> list[Held]:
    """One owner's ranges, with touching ranges of the same mode joined."""
    out: list[Held] = []
    for lock in sorted(locks, key=lambda h: (h.mode, h.start)):
        last = out[-1] if out else None
        if last is not None and last.mode == lock.mode and lock.start <= last.end + 1:
            out[-1] = replace(last, end=max(last.end, lock.end))
        else:
            out.append(lock)
    return sorted(out, key=lambda h: h.start)


def release_owner(held: Iterable[Held], client: str, owner: int, family: str) -> list[Held]:
    """The locks left after one owner lets go of all of its locks of ``family``."""
    return [h for h in held if (h.client, h.owner, h.family) != (client, owner, family)]


def release_client(held: Iterable[Held], client: str) -> list[Held]:
    """The locks left after a client's lease ended."""
    return [h for h in held if h.client != client]
