"""Issuing XCaps: the rights the MRC checked, bound to the holder's certificate."""

from __future__ import annotations

import os
from collections.abc import Callable

from xfs.common.xcap import KeyRing, sign
from xfs.proto.records import Rights, XCap, XLocSet


def rights_for_flags(flags: int) -> Rights:
    mode = flags & os.O_ACCMODE
    if mode == os.O_RDONLY:
        return Rights.READ
    if mode == os.O_WRONLY:
        return Rights.WRITE | Rights.TRUNCATE
    return Rights.READ | Rights.WRITE | Rights.TRUNCATE


class XCapIssuer:
    def __init__(self, ring: KeyRing, clock: Callable[[], float], lifetime: float) -> None:
        self.ring = ring
        self._clock = clock
        self._lifetime = lifetime

    def issue(
        self,
        volume_id: str,
        ino: int,
        rights: Rights,
        truncate_epoch: int,
        xloc: XLocSet,
        holder: bytes,
    ) -> XCap:
        now = int(self._clock())
        return sign(
            XCap(
                volume=volume_id,
                ino=ino,
                rights=int(rights),
                truncate_epoch=truncate_epoch,
                xloc_version=xloc.version,
                xloc_hash=xloc.digest(),
                not_before=now,
                expires=now + int(self._lifetime),
                holder=holder,
                key_id="",
            ),
            self.ring,
        )
