"""Network namespaces joined by a bridge, for tests that partition a grid.

``Network(["mrc", "osd1", ...])`` makes one namespace per member (named
``xfs-<member>-<random>``) and a hub namespace holding a bridge; each member has one veth,
``eth0``, into the bridge, with address ``<subnet>.<i>/24`` (i counting from 1) and its
loopback up. ``cut(member)`` sets the member's ``eth0`` down: it reaches nobody and nobody
reaches it, but its processes go on (a partition, not a crash); ``heal(member)`` sets it
up again. Only the ``ip`` command is used, only inside namespaces made here; leaving the
``with`` block deletes every one of them, whatever happened. If namespaces cannot be made
(not root), the test is skipped.

Processes still inside a namespace when it is deleted keep it alive, without a name, until
they exit: stop the grid first (``Grid.cleanup`` inside the ``with`` block).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from pathlib import Path
from types import TracebackType

import pytest

IP_TIMEOUT = 10.0


def ip(*args: str) -> None:
    proc = subprocess.run(
        ["ip", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


class Network:
    def __init__(self, members: list[str], subnet: str = "10.199.0") -> None:
        if not 1 <= len(members) <= 250 or len(set(members)) != len(members):
            raise ValueError(f"members must be 1..250 distinct names: {members!r}")
        tag = secrets.token_hex(3)
        self.hub = f"xfs-hub-{tag}"
        self.members = list(members)
        self._netns = {m: f"xfs-{m}-{tag}" for m in members}
        self._address = {m: f"{subnet}.{i}" for i, m in enumerate(members, 1)}
        self._made: list[str] = []  # namespaces to delete, in the order they were made

    def netns(self, member: str) -> str:
        """The member's namespace name (under /run/netns)."""
        return self._netns[member]

    def path(self, member: str) -> Path:
        return Path("/run/netns") / self._netns[member]

    def address(self, member: str) -> str:
        return self._address[member]

    def cut(self, member: str) -> None:
        ip("-n", self._netns[member], "link", "set", "eth0", "down")

    def heal(self, member: str) -> None:
        ip("-n", self._netns[member], "link", "set", "eth0", "up")

    def __enter__(self) -> Network:
        try:
            ip("netns", "add", self.hub)
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot make network namespaces: {e}")
        self._made.append(self.hub)
        try:
            ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            ip("-n", self.hub, "link", "set", "br0", "up")
            for i, member in enumerate(self.members, 1):
                ns = self._netns[member]
                ip("netns", "add", ns)
                self._made.append(ns)
                port = f"p{i}"
                ip("-n", self.hub, "link", "add", port, "type", "veth",
                   "peer", "name", "eth0", "netns", ns)
                ip("-n", self.hub, "link", "set", port, "master", "br0")
                ip("-n", self.hub, "link", "set", port, "up")
                ip("-n", ns, "addr", "add", f"{self._address[member]}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Delete every namespace made here (their veths go with them). Never raises."""
        while self._made:
            ns = self._made.pop()
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                ip("netns", "delete", ns)
