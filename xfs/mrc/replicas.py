"""Changes of a file's replica set (pure): every function returns the next XLocSet.

The MRC applies them inside one store transaction (``Namespace.update_xloc``), so the
version rises by one per change and no two changes interleave. The invariants of
docs/design/replication.md that live here:

- a complete replica comes first (for ``rw`` files it is the primary);
- the last complete replica is never removed (``EBUSY``);
- every replica has the file's striping; a replica is added incomplete and becomes
  complete only when the OSDs that filled it say so (``filled``).
"""

from __future__ import annotations

import errno
from dataclasses import replace

from xfs.proto.errors import XfsError
from xfs.proto.records import FilePolicy, Replica, StripingPolicy, UpdatePolicy, XLocSet

MAX_FACTOR = 16


def check_policy(policy: FilePolicy) -> None:
    if not 1 <= policy.factor <= MAX_FACTOR:
        raise XfsError(errno.EINVAL, f"factor {policy.factor} is outside 1..{MAX_FACTOR}")
    if policy.replication is UpdatePolicy.NONE and policy.factor != 1:
        raise XfsError(errno.EINVAL, "replication none keeps exactly one replica (factor 1)")


def new_xloc(policy: FilePolicy, columns: list[list[str]], striping: StripingPolicy) -> XLocSet:
    """The XLocSet of a new, empty file: ``columns`` are the OSDs of each replica.

    A new file's replicas are all complete (there is nothing to fill). A ``ronly`` policy
    creates a writable file that is sealed when its last writer closes it.
    """
    if not columns:
        raise XfsError(errno.ENOSPC, "no OSD is available to store new files")
    replicas = [Replica(list(osds), striping) for osds in columns]
    if policy.replication is UpdatePolicy.RW:
        return XLocSet(1, replicas, UpdatePolicy.RW, policy.factor, policy.fill)
    # none, or ronly before sealing: one writable replica
    return XLocSet(
        1,
        replicas[:1],
        UpdatePolicy.NONE,
        policy.factor if policy.replication is UpdatePolicy.RONLY else 1,
        policy.fill,
        seal_on_close=policy.replication is UpdatePolicy.RONLY,
    )


def _next(xloc: XLocSet, replicas: list[Replica], **changes: object) -> XLocSet:
    complete = [r for r in replicas if r.complete]
    if not complete:
        raise XfsError(errno.EBUSY, "that would remove the last complete replica")
    # a complete replica first: for rw files it is the primary
    if not replicas[0].complete:
        first = complete[0]
        replicas = [first, *(r for r in replicas if r is not first)]
    return replace(xloc, version=xloc.version + 1, replicas=replicas, **changes)  # type: ignore[arg-type]


def osds_of(xloc: XLocSet) -> set[str]:
    return {u for r in xloc.replicas for u in r.osds}


def replica_on(xloc: XLocSet, osd: str) -> Replica | None:
    return next((r for r in xloc.replicas if osd in r.osds), None)


def drop(xloc: XLocSet, osd: str) -> XLocSet:
    """Without the replica that has a column on ``osd`` (unchanged if there is none)."""
    gone = replica_on(xloc, osd)
    if gone is None:
        return xloc
    return _next(xloc, [r for r in xloc.replicas if r is not gone])


def add(xloc: XLocSet, osds: list[str]) -> XLocSet:
    """With a new, incomplete replica on ``osds`` (one per stripe column)."""
    striping = xloc.replicas[0].striping
    if len(osds) != striping.width:
        raise XfsError(errno.EINVAL, f"a replica needs {striping.width} OSDs, not {len(osds)}")
    if len(set(osds)) != len(osds):
        raise XfsError(errno.EINVAL, f"a replica needs distinct OSDs, not {osds}")
    if osds_of(xloc) & set(osds):
        raise XfsError(errno.EEXIST, "the file has a replica on that OSD already")
    return _next(xloc, [*xloc.replicas, Replica(list(osds), striping, list(osds))])


def filled(xloc: XLocSet, osd: str) -> XLocSet:
    """``osd`` now holds every object of its column (unchanged if it was not filling)."""
    replicas = [
        replace(r, incomplete=[u for u in r.incomplete if u != osd]) if osd in r.incomplete else r
        for r in xloc.replicas
    ]
    if replicas == xloc.replicas:
        return xloc
    return _next(xloc, replicas)


def seal(xloc: XLocSet) -> XLocSet:
    """Read-only from now on: ``ronly``, replicated up to the factor by the healer."""
    if xloc.update_policy is UpdatePolicy.RONLY:
        return xloc
    return _next(xloc, list(xloc.replicas), update_policy=UpdatePolicy.RONLY, seal_on_close=False)


def set_policy(xloc: XLocSet, policy: FilePolicy) -> XLocSet:
    """The file under ``policy`` from now on (replicas are added or removed to match).

    Sealed files stay sealed (``EPERM``): copy one to make it writable again. Going to
    ``none`` keeps the first complete replica only; going to ``ronly`` seals.
    """
    check_policy(policy)
    if xloc.update_policy is UpdatePolicy.RONLY and policy.replication is not UpdatePolicy.RONLY:
        raise XfsError(errno.EPERM, "a sealed (ronly) file stays read-only; copy it instead")
    if policy.replication is UpdatePolicy.NONE:
        return _next(xloc, [xloc.replicas[0]], update_policy=UpdatePolicy.NONE, factor=1)
    replicas = list(xloc.replicas)
    while len(replicas) > policy.factor:  # fewer: incomplete ones go first, the primary last
        victim = next((r for r in reversed(replicas) if not r.complete), replicas[-1])
        replicas.remove(victim)
    return _next(
        xloc,
        replicas,
        update_policy=policy.replication,
        factor=policy.factor,
        fill=policy.fill,
        seal_on_close=False,
    )


def missing(xloc: XLocSet) -> int:
    """Replicas to add to reach the factor (0 for files that are not replicated yet)."""
    if xloc.update_policy is UpdatePolicy.NONE:
        return 0
    return max(0, xloc.factor - len(xloc.replicas))
