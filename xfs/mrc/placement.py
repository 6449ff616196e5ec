"""Placement of new files on OSDs (pure): filter -> group -> sort, as in XtreemFS."""

from __future__ import annotations

import random
from collections.abc import Sequence

from xfs.proto.records import OSDInfo

#: An OSD with less free space than this takes no new files.
MIN_FREE = 64 << 20


def usable(osds: Sequence[OSDInfo]) -> list[OSDInfo]:
    """Filter: alive OSDs with room for new data."""
    return [o for o in osds if o.alive and o.free >= MIN_FREE]


def select(osds: Sequence[OSDInfo], width: int, rng: random.Random) -> list[str]:
    """Choose up to ``width`` distinct OSDs for the stripe columns of a new file.

    Sort: shuffled, then by free space in coarse (1 GiB) buckets, so that load spreads
    over OSDs of similar fill while much emptier ones are preferred. Fewer than
    ``width`` usable OSDs give a narrower stripe rather than a failed create.
    """
    candidates = usable(osds)
    rng.shuffle(candidates)
    candidates.sort(key=lambda o: o.free >> 30, reverse=True)
    return [o.uuid for o in candidates[:width]]
