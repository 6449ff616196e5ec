"""Content digests of a file that any replica can be checked against.

A file's **tree digest** is the SHA-256 of the concatenated SHA-256s of its objects, each
object taken as its share of the file (``object_size`` bytes, the last one short, holes
as zeros). An OSD can give the SHA-256 of the objects it holds (``osd.digest``), so the
tree digest of every replica can be computed without moving the data, and compared with
the one computed from the file's bytes when it was written (``xfs checkpoint``'s
manifest). :class:`TreeDigest` computes it from a stream in one pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def tree(object_sha256s: Iterable[bytes]) -> str:
    """The tree digest (hex) from the objects' SHA-256s in object order."""
    h = hashlib.sha256()
    for digest in object_sha256s:
        h.update(digest)
    return h.hexdigest()


class TreeDigest:
    """The tree digest of a byte stream fed in order, and its size."""

    def __init__(self, object_size: int) -> None:
        if object_size <= 0:
            raise ValueError(f"object size must be positive, not {object_size}")
        self.object_size = object_size
        self.size = 0
        self._object = hashlib.sha256()
        self._in_object = 0
        self._objects: list[bytes] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        while len(view):
            take = min(len(view), self.object_size - self._in_object)
            self._object.update(view[:take])
            self._in_object += take
            view = view[take:]
            if self._in_object == self.object_size:
                self._objects.append(self._object.digest())
                self._object = hashlib.sha256()
                self._in_object = 0

    def hexdigest(self) -> str:
        last = [self._object.digest()] if self._in_object else []
        return tree([*self._objects, *last])
