"""Issuing XCaps: the rights the MRC checked, bound to the holder's certificate; checking
the ones clients bring back (``update_size``); and the signing key's rotation schedule.

Every XCap a client or an OSD receives comes from ``XCapIssuer.grant``, which checks the
holder's permission for the rights (unless it was decided in the same request: the
holder made the file, or showed a valid XCap with those rights) and writes the ``xcap``
audit record. The MRC's own XCaps (deleting objects, asking a primary to fill a replica)
come from ``XCapIssuer.own``: their holder is the MRC's certificate, so nobody else can
use them.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from xfs.common import audit as audits
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.xcap import CLOCK_SKEW, KeyRing, sign, verify
from xfs.proto.errors import XfsError
from xfs.proto.records import Identity, Rights, XCap, XLocSet

log = logging.getLogger(__name__)

KEY_LEAD = 300.0  # seconds a new key is published (heartbeats) before it signs


def rights_for_flags(flags: int) -> Rights:
    """The rights an open with ``flags`` was checked for (``O_TRUNC`` needs write)."""
    mode = flags & os.O_ACCMODE
    if mode == os.O_RDONLY:
        rights = Rights.READ
    elif mode == os.O_WRONLY:
        rights = Rights.WRITE | Rights.TRUNCATE
    else:
        rights = Rights.READ | Rights.WRITE | Rights.TRUNCATE
    if flags & os.O_TRUNC:
        rights |= Rights.TRUNCATE  # the caller truncates the OSDs with it
    return rights


class Basis(enum.Enum):
    """Why a caller may hold the rights of an XCap it is granted."""

    CHECKED = "checked"  # its permission for them, as the file is now (checked by grant)
    CREATED = "created"  # it made the file in this request (the directory allowed it)
    SHOWN = "shown"  # it showed a valid XCap with them in this request


def access_mask(rights: Rights) -> int:
    """The access (R_OK|W_OK) that the rights need from the file's mode and ACL."""
    mask = os.R_OK if rights & Rights.READ else 0
    if rights & (Rights.WRITE | Rights.TRUNCATE):
        mask |= os.W_OK
    return mask


# may_hold(who, volume id, ino, access mask): XfsError(EACCES) unless allowed
MayHold = Callable[[Identity, str, int, int], None]


def _nobody_may(who: Identity, volume_id: str, ino: int, mask: int) -> None:
    raise XfsError(errno.EACCES, "this issuer checks no permission (only CREATED, SHOWN)")


class XCapIssuer:
    def __init__(
        self,
        ring: KeyRing,
        clock: Callable[[], float],
        lifetime: float,
        *,
        may_hold: MayHold = _nobody_may,
        audit: Audit = NO_AUDIT,
        own_holder: bytes = b"",
    ) -> None:
        self.ring = ring
        self._clock = clock
        self._lifetime = lifetime
        self._may_hold = may_hold
        self._audit = audit
        self._own_holder = own_holder

    def grant(
        self,
        peer: Identity,
        who: Identity,
        volume_id: str,
        ino: int,
        rights: Rights,
        truncate_epoch: int,
        xloc: XLocSet,
        basis: Basis,
        *,
        checked: bool = False,
        max_size: int = -1,
        **detail: Any,
    ) -> XCap:
        """An XCap for ``peer``'s certificate, after ``who`` (``peer`` as the volume sees
        it) was found to hold ``rights`` (see ``Basis``); audited, with ``detail``.
        ``checked``: a ``CHECKED`` grant whose path and mode the request's handler checked
        already (an open, a truncate), so they are not looked up twice. ``max_size``: the
        quota voucher (-1: none)."""
        if basis is Basis.CHECKED and not checked:
            self._may_hold(who, volume_id, ino, access_mask(rights))
        xcap = self.issue(
            volume_id, ino, rights, truncate_epoch, xloc, peer.fingerprint, max_size=max_size
        )
        if max_size >= 0:
            detail["max_size"] = max_size
        self._audit.record(
            audits.XCAP,
            peer.principal,
            "issue",
            volume_id=volume_id,
            ino=ino,
            rights=int(rights),
            epoch=truncate_epoch,
            xloc=xloc.version,
            expires=xcap.expires,
            holder=peer.fingerprint[:8],
            basis=basis.value,
            **detail,
        )
        return xcap

    def own(
        self, volume_id: str, ino: int, rights: Rights, truncate_epoch: int, xloc: XLocSet
    ) -> XCap:
        """An XCap the MRC itself holds, for its own calls to the OSDs."""
        return self.issue(volume_id, ino, rights, truncate_epoch, xloc, self._own_holder)

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def issue(
        self,
        volume_id: str,
        ino: int,
        rights: Rights,
        truncate_epoch: int,
        xloc: XLocSet,
        holder: bytes,
        *,
        max_size: int = -1,
    ) -> XCap:
        """Sign an XCap (only ``grant``, ``own`` and tests minting tokens call this)."""
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
                max_size=max_size,
            ),
            self.ring,
        )

    def check(self, x: XCap, *, holder: bytes, volume_id: str, ino: int, rights: Rights) -> None:
        """Raise ``XfsError(EACCES)`` unless ``x`` is one of ours, valid now, held by
        ``holder``, for this file and granting ``rights`` (as an OSD would check it)."""
        verify(
            x,
            self.ring.public_keys(),
            now=self._clock(),
            holder=holder,
            file_id=f"{volume_id}:{ino}",
            rights=int(rights),
        )


# ----------------------------------------------------------------------------- rotation
@dataclass(frozen=True)
class RotationPlan:
    stage: bool = False  # make a new key and publish it
    promote: str | None = None  # the staged key that signs from now on
    retire: tuple[str, ...] = ()  # old keys whose every token has expired


def plan_rotation(
    since: Mapping[str, float],
    current: str,
    now: float,
    *,
    period: float,
    lead: float,
    keep: float,
) -> RotationPlan:
    """What to do with the keys at ``now`` (pure).

    ``since``: key id -> when it became current (staged keys: when staged, later than the
    current key's). The current key signs for ``period`` seconds; a successor is staged
    ``lead`` seconds before that and promoted once both the period and its lead are over.
    An old key stopped signing at the latest when the current one started, so it retires
    ``keep`` seconds (the XCap lifetime plus the clock skew allowed) after that.
    """
    start = since[current]
    staged = sorted((t, k) for k, t in since.items() if k != current and t > start)
    old = tuple(sorted(k for k, t in since.items() if k != current and t <= start))
    retire = old if now >= start + keep else ()
    if staged:
        t, kid = staged[-1]
        ready = now >= start + period and now >= t + lead
        return RotationPlan(promote=kid if ready else None, retire=retire)
    return RotationPlan(stage=now >= start + period - lead, retire=retire)


class KeyRotator:
    """Long-lived: rotates the MRC's XCap signing key on schedule until ``stop()``.

    A new key is staged ``lead`` seconds before it signs, so that every OSD has it from a
    heartbeat by then; an old key is retired once every XCap it signed has expired.
    """

    def __init__(
        self,
        ring: KeyRing,
        clock: Callable[[], float],
        *,
        period: float,
        lifetime: float,
        lead: float | None = None,
        interval: float | None = None,
        audit: Audit = NO_AUDIT,
    ) -> None:
        self._ring = ring
        self._clock = clock
        self._period = period
        self._lead = min(KEY_LEAD, period / 2) if lead is None else lead
        self._keep = lifetime + CLOCK_SKEW
        self._interval = min(60.0, period / 10) if interval is None else interval
        self._audit = audit
        self._scope = trio.CancelScope()

    def step(self) -> RotationPlan:
        now = self._clock()
        ring = self._ring
        plan = plan_rotation(
            ring.since(), ring.current, now, period=self._period, lead=self._lead, keep=self._keep
        )
        for kid in plan.retire:
            ring.retire(kid)
            log.info("retired XCap key %s", kid)
            self._audit.record(audits.ADMIN, "mrc", "xcap_key_retire", key=kid)
        if plan.promote is not None:
            ring.promote(plan.promote, now)
            log.info("XCap key %s signs from now on", plan.promote)
            self._audit.record(audits.ADMIN, "mrc", "xcap_key_promote", key=plan.promote)
        if plan.stage:
            kid = ring.stage(now)
            log.info("staged XCap key %s (signs in %.0f s)", kid, self._lead)
            self._audit.record(audits.ADMIN, "mrc", "xcap_key_stage", key=kid)
        return plan

    async def run(self) -> None:
        with self._scope:
            while True:
                try:
                    self.step()
                except XfsError as e:
                    log.error("XCap key rotation failed (will try again): %s", e)
                await trio.sleep(self._interval)

    def stop(self) -> None:
        self._scope.cancel()
