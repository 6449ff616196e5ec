"""Replica placement (xfs.mrc.placement): filter -> group -> sort over failure domains."""

from __future__ import annotations

import errno
import random
from collections import Counter
from functools import cache
from itertools import combinations

import pytest

from xfs.mrc import placement
from xfs.mrc.placement import MIN_FREE, check_policy, place
from xfs.proto.errors import XfsError
from xfs.proto.records import OSDInfo, PlacementPolicy

GiB = 1 << 30
HOST = PlacementPolicy()
RACK = PlacementPolicy(spread="rack")


def _osd(
    uuid: str,
    host: str | None = None,
    *,
    free: int = 10 * GiB,
    alive: bool = True,
    **labels: str,
) -> OSDInfo:
    if host is not None:
        labels["host"] = host
    return OSDInfo(uuid, "h:1", free, 1 << 40, 0.0, alive, labels)


def _hosts(spec: dict[str, int], **labels: str) -> list[OSDInfo]:
    """``{"a": 2}``: OSDs a0 and a1 on host a."""
    return [
        OSDInfo(f"{h}{i}", "h:1", 10 * GiB, 1 << 40, 0.0, True, {"host": h, **labels})
        for h, n in spec.items()
        for i in range(n)
    ]


def _host(uuid: str) -> str:
    return uuid.rstrip("0123456789")


def _flat(placed: list[list[str]]) -> list[str]:
    return [u for r in placed for u in r]


# ----------------------------------------------------------------------------- spreading
def test_replicas_go_to_distinct_hosts() -> None:
    osds = _hosts({"a": 3, "b": 3, "c": 3})
    for seed in range(50):
        placed = place(osds, HOST, 3, 1, random.Random(seed))
        assert len(placed) == 3
        assert sorted(_host(u) for u in _flat(placed)) == ["a", "b", "c"]


def test_spreads_over_racks_not_just_hosts() -> None:
    osds = [
        _osd("a0", "a", rack="r1"),
        _osd("a1", "a", rack="r1"),
        _osd("b0", "b", rack="r1"),
        _osd("c0", "c", rack="r2", free=2 * GiB),
    ]
    for seed in range(50):
        placed = place(osds, RACK, 2, 1, random.Random(seed))
        assert "c0" in _flat(placed), placed  # the only OSD of rack r2, however full


def test_never_two_replicas_on_one_host_while_hosts_suffice() -> None:
    # host a is much emptier, so "free" alone would put every replica there
    osds = [_osd(f"a{i}", "a", free=500 * GiB) for i in range(5)]
    osds += [_osd("b0", "b"), _osd("c0", "c")]
    for seed in range(50):
        placed = place(osds, HOST, 3, 1, random.Random(seed))
        assert sorted(_host(u) for u in _flat(placed)) == ["a", "b", "c"]
        assert _host(placed[0][0]) == "a"  # the first (primary) replica gets the best OSD


def test_falls_back_to_the_least_used_domains() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        two = place(_hosts({"a": 3, "b": 3}), HOST, 4, 1, rng)
        assert sorted(Counter(_host(u) for u in _flat(two)).values()) == [2, 2]
        three = place(_hosts({"a": 3, "b": 3, "c": 3}), HOST, 5, 1, rng)
        assert sorted(Counter(_host(u) for u in _flat(three)).values()) == [1, 2, 2]
        one = place(_hosts({"a": 4}), HOST, 3, 1, rng)
        assert len(one) == 3  # one host: still three replicas, on distinct OSDs


def test_osds_without_the_spread_label_are_domains_of_their_own() -> None:
    osds = [_osd("x"), _osd("y"), _osd("a0", "a"), _osd("a1", "a")]
    for seed in range(50):
        placed = place(osds, HOST, 3, 1, random.Random(seed))
        assert sorted(_host(u) for u in _flat(placed)) == ["a", "x", "y"]


# ------------------------------------------------------------------------- width > 1
def test_striped_replicas_keep_whole_replicas_apart() -> None:
    # a fills one replica alone; b and c together fill the other: losing any host leaves
    # a whole replica, which spreading each replica's columns first would not
    osds = _hosts({"a": 2, "b": 1, "c": 1})
    for seed in range(50):
        placed = place(osds, HOST, 2, 2, random.Random(seed))
        assert sorted(sorted(_host(u) for u in r) for r in placed) == [["a", "a"], ["b", "c"]]


def test_striped_replicas_spread_columns_when_hosts_abound() -> None:
    osds = _hosts({h: 2 for h in "abcdef"})
    for seed in range(50):
        placed = place(osds, HOST, 2, 3, random.Random(seed))
        assert [len(r) for r in placed] == [3, 3]
        assert len({_host(u) for u in _flat(placed)}) == 6


def test_one_striped_replica_prefers_distinct_hosts_for_its_columns() -> None:
    osds = [_osd(f"a{i}", "a", free=500 * GiB) for i in range(3)] + [_osd("b0", "b")]
    for seed in range(20):
        (columns,) = place(osds, HOST, 1, 2, random.Random(seed))
        assert sorted(_host(u) for u in columns) == ["a", "b"]


def test_fewer_replicas_only_when_osds_run_out() -> None:
    rng = random.Random(1)
    osds = _hosts({"a": 2, "b": 2, "c": 1})
    placed = place(osds, HOST, 3, 2, rng)
    assert [len(r) for r in placed] == [2, 2]
    assert len(set(_flat(placed))) == 4
    assert len(place(osds, HOST, 5, 1, rng)) == 5
    assert len(place(osds, HOST, 9, 1, rng)) == 5
    assert place(osds, HOST, 0, 1, rng) == []


def test_a_new_unreplicated_file_gets_a_narrower_stripe() -> None:
    rng = random.Random(1)
    osds = _hosts({"a": 1, "b": 1})
    assert sorted(place(osds, HOST, 1, 4, rng)[0]) == ["a0", "b0"]
    assert place(osds, HOST, 2, 4, rng) == []  # replicas are always full width
    assert place(osds, HOST, 1, 4, rng, existing=["z0"]) == []  # and match existing ones
    assert place([], HOST, 1, 4, rng) == []


# -------------------------------------------------------------------------------- filter
def test_dead_and_full_osds_are_never_chosen() -> None:
    osds = [
        _osd("a0", "a"),
        _osd("dead", "b", free=900 * GiB, alive=False),
        _osd("full", "c", free=MIN_FREE - 1),
        _osd("edge", "d", free=MIN_FREE),
    ]
    for seed in range(20):
        placed = place(osds, HOST, 4, 1, random.Random(seed))
        assert sorted(_flat(placed)) == ["a0", "edge"]


def test_excluded_osds_are_never_chosen() -> None:
    osds = _hosts({"a": 2, "b": 2, "c": 2})
    for seed in range(20):
        placed = place(osds, HOST, 5, 1, random.Random(seed), exclude={"a0", "b1"})
        assert sorted(_flat(placed)) == ["a1", "b0", "c0", "c1"]


def test_existing_replicas_use_up_their_domains() -> None:
    osds = _hosts({"a": 2, "b": 2, "c": 2})
    for seed in range(20):
        rng = random.Random(seed)
        (new,) = place(osds, HOST, 1, 1, rng, existing=["a0"])
        assert _host(new[0]) in "bc"
        placed = place(osds, HOST, 2, 1, rng, existing=["a0", "b0"])
        assert _host(placed[0][0]) == "c"  # the unused host first, then the least used
        assert not {"a0", "b0"} & set(_flat(placed))
        # an existing OSD that left the registry is a domain of its own, and harmless
        assert place(osds, HOST, 1, 1, rng, existing=["gone"])


def test_required_labels_filter() -> None:
    osds = _hosts({"a": 2}, media="ssd") + _hosts({"b": 2, "c": 2}, media="hdd")
    policy = PlacementPolicy(require={"media": "ssd"})
    for seed in range(20):
        placed = place(osds, policy, 3, 1, random.Random(seed))
        assert sorted(_flat(placed)) == ["a0", "a1"]
    both = PlacementPolicy(require={"media": "hdd", "host": "c"})
    assert sorted(_flat(place(osds, both, 3, 1, random.Random(0)))) == ["c0", "c1"]
    assert place(osds, PlacementPolicy(require={"zone": "x"}), 1, 1, random.Random(0)) == []


# ---------------------------------------------------------------------------------- sort
def test_free_sort_prefers_emptier_osds_and_shares_ties() -> None:
    osds = [_osd("big", free=100 * GiB), _osd("t1"), _osd("t2"), _osd("small", free=GiB)]
    seen = Counter(tuple(place(osds, HOST, 1, 2, random.Random(seed))[0]) for seed in range(200))
    assert set(seen) == {("big", "t1"), ("big", "t2")}


def test_prefer_sort_puts_the_labelled_osds_first() -> None:
    osds = [_osd("h0", "h", media="hdd", free=900 * GiB), _osd("h1", "h", media="hdd")]
    osds += [_osd("s0", "s", media="ssd"), _osd("t0", "t", media="ssd", free=GiB)]
    policy = PlacementPolicy(sort="prefer:media=ssd")
    for seed in range(20):
        rng = random.Random(seed)
        assert place(osds, policy, 1, 1, rng) == [["s0"]]  # then by free space
        placed = place(osds, policy, 3, 1, rng)
        assert placed[:2] == [["s0"], ["t0"]] and placed[2] == ["h0"]
    assert place(osds, HOST, 1, 1, random.Random(0)) == [["h0"]]


def test_random_sort_covers_every_osd() -> None:
    osds = [_osd("big", free=900 * GiB)] + [_osd(f"o{i}", free=GiB) for i in range(5)]
    policy = PlacementPolicy(sort="random")
    firsts = {place(osds, policy, 1, 1, random.Random(seed))[0][0] for seed in range(300)}
    assert firsts == {o.uuid for o in osds}


def test_placement_is_deterministic_for_a_seed() -> None:
    osds = _hosts({"a": 3, "b": 3, "c": 2})
    for sort in ("free", "random", "prefer:host=b"):
        policy = PlacementPolicy(sort=sort)
        runs = {str(place(osds, policy, 3, 2, random.Random(7))) for _ in range(5)}
        assert len(runs) == 1


def test_select_is_place_for_one_replica() -> None:
    osds = [_osd(f"o{i}", free=(i % 3) * GiB + MIN_FREE) for i in range(6)]
    for seed in range(50):
        (expected,) = place(osds, HOST, 1, 3, random.Random(seed))
        assert placement.select(osds, 3, random.Random(seed)) == expected
    assert placement.select(osds, 0, random.Random(0)) == []


# ------------------------------------------------------------------------------ policies
@pytest.mark.parametrize(
    "policy",
    [
        PlacementPolicy(sort="size"),
        PlacementPolicy(sort=""),
        PlacementPolicy(sort="prefer:"),
        PlacementPolicy(sort="prefer:media"),
        PlacementPolicy(sort="prefer:=ssd"),
        PlacementPolicy(sort="Free"),
        PlacementPolicy(spread=""),
    ],
)
def test_bad_policies_are_refused(policy: PlacementPolicy) -> None:
    with pytest.raises(XfsError) as bad:
        check_policy(policy)
    assert bad.value.code == errno.EINVAL
    with pytest.raises(XfsError) as also:
        place([_osd("a")], policy, 1, 1, random.Random(0))
    assert also.value.code == errno.EINVAL


@pytest.mark.parametrize("sort", ["free", "random", "prefer:media=ssd", "prefer:rack="])
def test_good_policies_pass(sort: str) -> None:
    check_policy(PlacementPolicy(require={"media": "ssd"}, spread="rack", sort=sort))


def test_width_below_one_is_refused() -> None:
    with pytest.raises(XfsError) as bad:
        place([_osd("a")], HOST, 1, 0, random.Random(0))
    assert bad.value.code == errno.EINVAL


# ----------------------------------------------------------------------- random clusters
def _domain(osd: OSDInfo, spread: str) -> str:
    return "=" + osd.labels[spread] if spread in osd.labels else "#" + osd.uuid


@cache
def _max_cover(caps: tuple[int, ...], width: int) -> int:
    """Most disjoint groups of domains with ``width`` OSDs each (exhaustive; caps sorted)."""
    if sum(caps) < width:
        return 0
    first, rest = caps[0], caps[1:]
    best = _max_cover(rest, width)  # the first domain in no group
    for mask in range(1 << len(rest)):
        inside = [c for i, c in enumerate(rest) if mask >> i & 1]
        if first + sum(inside) >= width:
            outside = tuple(c for i, c in enumerate(rest) if not mask >> i & 1)
            best = max(best, 1 + _max_cover(outside, width))
    return best


def _cluster(rng: random.Random) -> list[OSDInfo]:
    osds = []
    for i in range(rng.randint(0, 10)):
        labels = {"media": rng.choice(["ssd", "hdd"])}
        if rng.random() < 0.85:
            host = rng.randint(0, 4)
            labels |= {"host": f"h{host}", "rack": f"r{host % 2}"}
        free = rng.choice([0, MIN_FREE, GiB, 10 * GiB, 10 * GiB, 100 * GiB])
        osds.append(OSDInfo(f"o{i}", "h:1", free, 1 << 40, 0.0, rng.random() < 0.9, labels))
    return osds


def test_invariants_over_random_clusters() -> None:
    """For random clusters, policies, exclude/existing sets, replicas 1-4 and widths 1-3:

    1. every chosen OSD passes the filter (alive, free >= MIN_FREE, required labels, not
       excluded, not existing) and no uuid is chosen twice;
    2. with n eligible OSDs: n >= width gives min(replicas, n // width) lists of exactly
       width; n < width gives one list of all n for a lone new replica (replicas == 1,
       nothing existing, n > 0), else none;
    3. (n >= width) the largest set of *independent* new replicas (their domains pairwise
       disjoint and disjoint from the existing replicas' domains) has min(returned, C)
       replicas, where C is the most disjoint groups of width OSDs that the fresh domains
       (those no existing replica uses) can form (found exhaustively): no placement does
       better. (C is exact here; for widths above 3 place() uses a bin-covering heuristic);
    4. when there are at least returned * width fresh domains, every chosen OSD is in a
       distinct fresh domain (replicas apart and columns apart);
    5. width 1 (the domain use is even): with use[d] = existing OSDs + chosen OSDs in d,
       no chosen OSD in d could move to an unchosen eligible OSD in a domain e with
       use[e] < use[d] - 1;
    6. the same seed gives the same placement.
    """
    rng = random.Random(20240521)
    for _ in range(3000):
        osds = _cluster(rng)
        uuids = [o.uuid for o in osds]
        policy = PlacementPolicy(
            require={"media": "ssd"} if rng.random() < 0.2 else {},
            spread=rng.choice(["host", "rack"]),
            sort=rng.choice(["free", "random", "prefer:media=ssd"]),
        )
        exclude = set(rng.sample(uuids, rng.randint(0, min(2, len(uuids)))))
        existing = rng.sample(uuids, rng.randint(0, min(3, len(uuids))))
        if rng.random() < 0.1:
            existing.append("gone")
        replicas, width, seed = rng.randint(1, 4), rng.randint(1, 3), rng.random()
        placed = place(
            osds, policy, replicas, width, random.Random(seed), exclude=exclude, existing=existing
        )
        case = (osds, policy, replicas, width, exclude, existing, placed)

        # 1
        eligible = {
            o.uuid: o
            for o in osds
            if o.alive
            and o.free >= MIN_FREE
            and o.uuid not in exclude
            and o.uuid not in existing
            and all(o.labels.get(k) == v for k, v in policy.require.items())
        }
        chosen = _flat(placed)
        assert set(chosen) <= set(eligible), case
        assert len(chosen) == len(set(chosen)), case
        # 2
        n = len(eligible)
        if n < width:
            alone = replicas == 1 and not existing and n > 0
            assert [sorted(r) for r in placed] == ([sorted(eligible)] if alone else []), case
            continue
        assert [len(r) for r in placed] == [width] * min(replicas, n // width), case
        # 3
        dom = {u: "#" + u for u in existing} | {o.uuid: _domain(o, policy.spread) for o in osds}
        old = {dom[u] for u in existing}
        fresh = Counter(dom[u] for u in eligible if dom[u] not in old)
        domains = [{dom[u] for u in r} for r in placed]
        independent = max(
            len(subset)
            for size in range(len(domains) + 1)
            for subset in combinations([d for d in domains if not d & old], size)
            if sum(map(len, subset)) == len(set().union(*subset))
        )
        best = _max_cover(tuple(sorted(fresh.values())), width)
        assert independent == min(len(placed), best), case
        # 4
        if len(fresh) >= len(placed) * width:
            assert len({dom[u] for u in chosen}) == len(chosen), case
            assert not {dom[u] for u in chosen} & old, case
        # 5
        if width == 1:
            use = Counter(dom[u] for u in [*existing, *chosen])
            spare = {dom[u] for u in eligible if u not in chosen}
            assert all(use[e] >= use[dom[u]] - 1 for u in chosen for e in spare), case
        # 6
        again = place(
            osds, policy, replicas, width, random.Random(seed), exclude=exclude, existing=existing
        )
        assert again == placed, case
