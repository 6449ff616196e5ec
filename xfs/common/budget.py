"""A server's budget of frame memory: a frame from a user is admitted before its body is
read, against a limit for the whole process and a smaller share for each principal.

A frame's length is known from its 4-byte header. ``FrameBudget.admit`` waits until
that many bytes fit both in the process's budget and in the sender's share, and gives
up after ``wait`` seconds (``EAGAIN``: the server closes the connection). The bytes
stay counted until the request the frame carried has been answered (``release``).
Services (OSDs, the MRC) are not counted: what they send is bounded by the user frames
that caused it, and counting them could make two OSDs wait on each other.
"""

from __future__ import annotations

import errno

import trio

from xfs.proto.errors import XfsError


def for_server(frame_memory: int, frame_limit: int) -> FrameBudget:
    """The budget of a server whose users may hold ``frame_memory`` bytes of frames in
    all, each principal a quarter of that (at least one largest frame)."""
    share = max(frame_memory // 4, frame_limit)
    return FrameBudget(max(frame_memory, share), share)


class FrameBudget:
    def __init__(self, capacity: int, per_peer: int, wait: float = 10.0) -> None:
        if per_peer > capacity:
            raise ValueError(f"a share of {per_peer} bytes in a budget of {capacity}")
        self.capacity = capacity
        self.per_peer = per_peer
        self._wait = wait
        self.used = 0
        self._by_peer: dict[str, int] = {}
        self._changed = trio.Event()

    def fits(self, peer: str, n: int) -> bool:
        return self.used + n <= self.capacity and self._by_peer.get(peer, 0) + n <= self.per_peer

    async def admit(self, peer: str, n: int) -> None:
        """Count ``n`` bytes for ``peer`` once they fit; EAGAIN after ``wait`` seconds."""
        if n > self.per_peer:
            raise XfsError(errno.EMSGSIZE, f"a frame of {n} bytes: more than a peer's share")
        with trio.move_on_after(self._wait):
            while not self.fits(peer, n):
                await self._changed.wait()
            self.used += n
            self._by_peer[peer] = self._by_peer.get(peer, 0) + n
            return
        raise XfsError(
            errno.EAGAIN,
            f"no room for a frame of {n} bytes from {peer} within {self._wait:g} s "
            f"({self._by_peer.get(peer, 0)} of its {self.per_peer} bytes, "
            f"{self.used} of the server's {self.capacity} in use)",
        )

    def release(self, peer: str, n: int) -> None:
        if not n:
            return
        self.used -= n
        left = self._by_peer.get(peer, 0) - n
        if left > 0:
            self._by_peer[peer] = left
        else:
            self._by_peer.pop(peer, None)
        self._changed.set()
        self._changed = trio.Event()
