"""The kernel's lookup counts, kept exactly: +1 for every entry reply, -n on forget."""

from __future__ import annotations

from xfs.proto.records import ROOT_INO


class InodeTable:
    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def looked_up(self, ino: int) -> None:
        self._counts[ino] = self._counts.get(ino, 0) + 1

    def forget(self, ino: int, n: int) -> None:
        left = self._counts.get(ino, 0) - n
        if left > 0 or ino == ROOT_INO:
            self._counts[ino] = max(left, 0)
        else:
            self._counts.pop(ino, None)

    def count(self, ino: int) -> int:
        return self._counts.get(ino, 0)

    def __len__(self) -> int:
        return len(self._counts)
