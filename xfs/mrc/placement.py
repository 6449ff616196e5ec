"""Placement of replicas on OSDs (pure): filter -> group -> sort, as in XtreemFS.

- **filter**: alive OSDs with room (`usable`), not excluded, not already holding the
  file, carrying every label the policy requires;
- **group**: an OSD's failure domain is the value of its ``policy.spread`` label (an OSD
  without it is a domain of its own);
- **sort**: ``free`` (most free space first, in coarse 1 GiB buckets, shuffled inside a
  bucket), ``random``, or ``prefer:<label>=<value>`` (those first, then as ``free``).

`place` gives each new replica domains that no other replica of the file uses, as long as
there are enough of them: first it partitions the fresh domains into as many disjoint
groups as it can that each hold a whole replica, then each remaining replica reuses the
least-used domains. Inside a replica, the stripe columns go to distinct domains where
possible: striping is not redundancy, so that comes second.
"""

from __future__ import annotations

import errno
import random
from collections import Counter
from collections.abc import Collection, Sequence

from xfs.proto.errors import XfsError
from xfs.proto.records import OSDInfo, PlacementPolicy

#: An OSD with less free space than this takes no new files.
MIN_FREE = 64 << 20

#: A failure domain: ``("label", value)`` or, for an OSD without the label, ``("osd", uuid)``.
Domain = tuple[str, str]

_PREFER = "prefer:"


def usable(osds: Sequence[OSDInfo]) -> list[OSDInfo]:
    """Filter: alive OSDs with room for new data."""
    return [o for o in osds if o.alive and o.free >= MIN_FREE]


def check_policy(policy: PlacementPolicy) -> None:
    """Refuse (``EINVAL``) a policy that `place` could not apply."""
    if not policy.spread:
        raise XfsError(errno.EINVAL, "placement spread needs a label key")
    if policy.sort in ("free", "random"):
        return
    if policy.sort.startswith(_PREFER):
        key, eq, _ = policy.sort[len(_PREFER) :].partition("=")
        if key and eq:
            return
    raise XfsError(
        errno.EINVAL,
        f"unknown placement sort {policy.sort!r} (free, random or prefer:<label>=<value>)",
    )


def unfit(require: dict[str, str], replicas: int, labels: Sequence[dict[str, str]]) -> str:
    """Why a policy that requires the labels ``require`` and keeps ``replicas`` replicas
    (on as many OSDs) can never be placed on the OSDs whose labels are ``labels`` (every
    OSD of the grid, dead ones too); empty if it can. The message names what there is."""
    if not labels:
        return ""  # (no OSD has registered yet: nothing to judge by)
    fit = [o for o in labels if all(o.get(k) == v for k, v in require.items())]
    if not fit:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(require.items()))
        have = sorted({f"{k}={v}" for o in labels for k, v in o.items()})
        return f"no OSD carries {wanted}; the OSDs carry {', '.join(have) or 'no labels'}"
    if replicas > len(fit):
        which = (
            f" with {', '.join(f'{k}={v}' for k, v in sorted(require.items()))}" if require else ""
        )
        return (
            f"factor {replicas} needs {replicas} OSDs{which}; the grid has {len(fit)}: "
            f"a factor of 1 to {len(fit)}"
        )
    return ""


def domain(osd: OSDInfo, spread: str) -> Domain:
    """Group: the failure domain of ``osd`` under the label key ``spread``."""
    value = osd.labels.get(spread)
    return ("osd", osd.uuid) if value is None else ("label", value)


def place(
    osds: Sequence[OSDInfo],
    policy: PlacementPolicy,
    replicas: int,
    width: int,
    rng: random.Random,
    *,
    exclude: Collection[str] = (),
    existing: Sequence[str] = (),
) -> list[list[str]]:
    """Choose OSDs for up to ``replicas`` new replicas, each ``width`` stripe columns wide.

    Returns one list of distinct uuids per replica, no uuid twice; fewer replicas only
    when the eligible OSDs run out. ``existing`` are the OSDs already holding the file:
    they are not chosen and their domains count as used. A single new replica of a new
    file (``replicas == 1``, nothing ``existing``) is narrower than ``width`` when fewer
    OSDs are eligible, rather than failing. Deterministic for a given ``rng`` state.
    """
    check_policy(policy)
    if width < 1:
        raise XfsError(errno.EINVAL, f"stripe width must be at least 1, not {width}")
    if replicas < 1:
        return []
    spread = policy.spread
    known = {o.uuid: o for o in osds}
    used: Counter[Domain] = Counter(
        domain(known[u], spread) if u in known else ("osd", u) for u in existing
    )
    ranked = _sort(_filter(osds, policy, {*exclude, *existing}), policy.sort, rng)
    if len(ranked) < width:
        if replicas == 1 and not existing and ranked:
            return [[o.uuid for o in _columns(ranked, len(ranked), used, spread)]]
        return []
    count = min(replicas, len(ranked) // width)
    fresh = _fresh_groups(ranked, spread, width, count, used)
    left = list(ranked)
    placed: list[list[str]] = []
    for i in range(count):
        pool = left if i >= len(fresh) else [o for o in left if domain(o, spread) in fresh[i]]
        chosen = _columns(pool, width, used, spread)
        used.update(domain(o, spread) for o in chosen)
        taken = {o.uuid for o in chosen}
        left = [o for o in left if o.uuid not in taken]
        placed.append([o.uuid for o in chosen])
    return placed


def select(osds: Sequence[OSDInfo], width: int, rng: random.Random) -> list[str]:
    """Choose up to ``width`` distinct OSDs for the stripe columns of an unreplicated file.

    `place` with the default policy: fewer than ``width`` usable OSDs give a narrower
    stripe rather than a failed create; no usable OSD gives ``[]``.
    """
    if width < 1:
        return []
    placed = place(osds, PlacementPolicy(), 1, width, rng)
    return placed[0] if placed else []


# --------------------------------------------------------------------------- filter, sort
def _filter(
    osds: Sequence[OSDInfo], policy: PlacementPolicy, skip: Collection[str]
) -> list[OSDInfo]:
    require = policy.require.items()
    return [
        o
        for o in usable(osds)
        if o.uuid not in skip and all(o.labels.get(k) == v for k, v in require)
    ]


def _sort(osds: list[OSDInfo], sort: str, rng: random.Random) -> list[OSDInfo]:
    """Best first. Shuffles first so that equal OSDs share the load."""
    ranked = list(osds)
    rng.shuffle(ranked)
    if sort == "random":
        return ranked
    if sort.startswith(_PREFER):
        key, _, value = sort[len(_PREFER) :].partition("=")
        ranked.sort(key=lambda o: (o.labels.get(key) != value, -(o.free >> 30)))
    else:
        ranked.sort(key=lambda o: -(o.free >> 30))
    return ranked


# ---------------------------------------------------------------------------------- group
def _fresh_groups(
    ranked: list[OSDInfo], spread: str, width: int, count: int, used: Counter[Domain]
) -> list[set[Domain]]:
    """Disjoint sets of unused domains, each with room for one replica, best first.

    As many as possible (up to ``count``), so that as many replicas as possible share no
    domain with any other. When there are more than enough, the left-over domains widen
    the chosen sets (up to ``width`` domains each) so that columns can spread too.
    """
    caps: dict[Domain, int] = {}  # in order of each domain's best OSD
    for o in ranked:
        d = domain(o, spread)
        if not used[d]:
            caps[d] = caps.get(d, 0) + 1
    groups, spare = _cover(caps, width)
    order = {d: i for i, d in enumerate(caps)}
    groups.sort(key=lambda g: min(order[d] for d in g))
    chosen, rest = groups[:count], groups[count:]
    if len(chosen) == count:  # no replica falls back to used domains: spare ones widen
        for d in sorted([d for g in rest for d in g] + spare, key=order.__getitem__):
            narrowest = min(chosen, key=len)
            if len(narrowest) >= width:
                break
            narrowest.append(d)
    return [set(g) for g in chosen]


def _cover(caps: dict[Domain, int], width: int) -> tuple[list[list[Domain]], list[Domain]]:
    """Partition domains into many groups of at least ``width`` OSDs (bin covering).

    A domain big enough is a group of its own; smaller ones are combined, largest first,
    each group completed by the smallest domain that completes it (least waste). Ties go
    to the better-ranked domain (``caps`` is in rank order). Returns (groups, left over).
    """
    groups = [[d] for d, c in caps.items() if c >= width]
    small = [(d, c) for d, c in caps.items() if c < width]
    while small:
        first = max(small, key=lambda x: x[1])
        small.remove(first)
        group, total = [first[0]], first[1]
        while total < width and small:
            need = width - total
            exact = [x for x in small if x[1] == need]
            under = [x for x in small if x[1] < need]
            if exact or not under:  # complete it, wasting least
                pick = min(exact or small, key=lambda x: x[1])
            else:  # no exact fit yet: add the largest that still leaves room
                pick = max(under, key=lambda x: x[1])
            small.remove(pick)
            group.append(pick[0])
            total += pick[1]
        if total < width:
            return groups, group
        groups.append(group)
    return groups, []


def _columns(pool: list[OSDInfo], width: int, used: Counter[Domain], spread: str) -> list[OSDInfo]:
    """Pick ``width`` OSDs of ``pool`` (best first): least-used domains first, then domains
    this replica does not use yet, then rank."""
    local: Counter[Domain] = Counter()
    left = list(pool)
    chosen: list[OSDInfo] = []
    for _ in range(width):
        i = min(
            range(len(left)),
            key=lambda i: (used[domain(left[i], spread)], local[domain(left[i], spread)], i),
        )
        osd = left.pop(i)
        local[domain(osd, spread)] += 1
        chosen.append(osd)
    return chosen
