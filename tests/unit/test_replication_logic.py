"""The pure and in-process pieces of replication (docs/design/replication.md):
XLocSet changes (xfs.mrc.replicas), one healing step (xfs.mrc.healer.plan), the OSD's
lease, keyed locks and gates (xfs.osd.replication), the client's choice of OSDs
(xfs.client.failover) and what counts as an unreachable server (xfs.common.rpc)."""

from __future__ import annotations

import errno
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, cast

import pytest
import trio
import trio.testing

from xfs.client.failover import call_osd, candidates
from xfs.common.health import RECENT, Health
from xfs.common.rpc import unreachable
from xfs.mrc import replicas
from xfs.mrc.healer import plan
from xfs.osd.replication import Gates, KeyedLocks, Lease
from xfs.proto.errors import Unavailable, XfsError
from xfs.proto.records import (
    Attr,
    FileLayout,
    FilePolicy,
    Fill,
    Replica,
    StripingPolicy,
    UpdatePolicy,
    XCap,
    XLocSet,
)

S1 = StripingPolicy(1 << 16, 1)
S2 = StripingPolicy(1 << 16, 2)


# ============================================================================ helpers
def raises(code: int, fn: Callable[..., object], *args: object, **kw: object) -> XfsError:
    with pytest.raises(XfsError) as info:
        fn(*args, **kw)
    assert info.value.code == code, f"{info.value!r}, wanted {errno.errorcode[code]}"
    return info.value


def rep(*osds: str, incomplete: tuple[str, ...] = (), striping: StripingPolicy = S1) -> Replica:
    return Replica(list(osds), striping, list(incomplete))


def xl(
    *reps: Replica,
    policy: UpdatePolicy = UpdatePolicy.RW,
    factor: int | None = None,
    version: int = 5,
    seal_on_close: bool = False,
    fill: Fill = Fill.FULL,
) -> XLocSet:
    return XLocSet(
        version,
        list(reps),
        policy,
        len(reps) if factor is None else factor,
        fill,
        seal_on_close,
    )


def check_invariants(xloc: XLocSet) -> None:
    assert any(r.complete for r in xloc.replicas), xloc
    assert xloc.replicas[0].complete, xloc
    osds = [u for r in xloc.replicas for u in r.osds]
    assert len(osds) == len(set(osds)), xloc
    for r in xloc.replicas:
        assert set(r.incomplete) <= set(r.osds), r
        assert len(r.osds) == r.striping.width, r


def trio_run(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` on trio's autojump clock, with an absolute (virtual) deadline."""

    async def main() -> None:
        with trio.fail_after(600):
            await fn()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ============================================================================ replicas
def test_check_policy() -> None:
    replicas.check_policy(FilePolicy(UpdatePolicy.NONE, 1))
    replicas.check_policy(FilePolicy(UpdatePolicy.RW, replicas.MAX_FACTOR))
    replicas.check_policy(FilePolicy(UpdatePolicy.RONLY, 1))
    raises(errno.EINVAL, replicas.check_policy, FilePolicy(UpdatePolicy.RW, 0))
    too_many = FilePolicy(UpdatePolicy.RW, replicas.MAX_FACTOR + 1)
    raises(errno.EINVAL, replicas.check_policy, too_many)
    raises(errno.EINVAL, replicas.check_policy, FilePolicy(UpdatePolicy.NONE, 2))


def test_new_xloc_rw_has_every_replica_complete() -> None:
    x = replicas.new_xloc(
        FilePolicy(UpdatePolicy.RW, 3, Fill.PARTIAL), [["a", "b"], ["c", "d"], ["e", "f"]], S2
    )
    assert x.version == 1
    assert x.update_policy is UpdatePolicy.RW and x.factor == 3 and x.fill is Fill.PARTIAL
    assert [r.osds for r in x.replicas] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert all(r.complete and r.striping == S2 for r in x.replicas)
    assert not x.seal_on_close


def test_new_xloc_ronly_is_written_unreplicated_and_sealed_on_close() -> None:
    x = replicas.new_xloc(FilePolicy(UpdatePolicy.RONLY, 3), [["a"], ["b"], ["c"]], S1)
    assert x.update_policy is UpdatePolicy.NONE
    assert x.seal_on_close and x.factor == 3
    assert [r.osds for r in x.replicas] == [["a"]] and x.replicas[0].complete


def test_new_xloc_none() -> None:
    x = replicas.new_xloc(FilePolicy(UpdatePolicy.NONE, 1), [["a"], ["b"]], S1)
    assert (x.update_policy, x.factor, x.seal_on_close) == (UpdatePolicy.NONE, 1, False)
    assert [r.osds for r in x.replicas] == [["a"]]
    raises(errno.ENOSPC, replicas.new_xloc, FilePolicy(), [], S1)


def test_drop_keeps_a_complete_replica_first() -> None:
    x = xl(rep("a"), rep("b", incomplete=("b",)), rep("c"))
    y = replicas.drop(x, "a")
    assert [r.osds for r in y.replicas] == [["c"], ["b"]]
    assert y.version == x.version + 1
    check_invariants(y)
    # dropping a backup keeps the order
    z = replicas.drop(x, "c")
    assert [r.osds for r in z.replicas] == [["a"], ["b"]]


def test_drop_refuses_the_last_complete_replica() -> None:
    x = xl(rep("a"), rep("b", incomplete=("b",)))
    raises(errno.EBUSY, replicas.drop, x, "a")
    raises(errno.EBUSY, replicas.drop, xl(rep("a")), "a")
    # of a wide replica, any of its OSDs names it
    raises(errno.EBUSY, replicas.drop, xl(rep("a", "b", striping=S2)), "b")


def test_drop_absent_osd_is_a_no_op() -> None:
    x = xl(rep("a"), rep("b"))
    assert replicas.drop(x, "zz") is x


def test_drop_wide_replica_by_any_of_its_osds() -> None:
    x = xl(rep("a", "b", striping=S2), rep("c", "d", striping=S2))
    y = replicas.drop(x, "b")
    assert [r.osds for r in y.replicas] == [["c", "d"]]
    assert y.version == x.version + 1


def test_add_appends_an_incomplete_replica() -> None:
    x = xl(rep("a", "b", striping=S2), factor=2)
    y = replicas.add(x, ["c", "d"])
    assert y.version == x.version + 1
    assert y.replicas[0] == x.replicas[0]
    new = y.replicas[1]
    assert new.osds == ["c", "d"] and new.incomplete == ["c", "d"] and not new.complete
    assert new.striping == S2
    assert x.replicas == [rep("a", "b", striping=S2)]  # the input is unchanged


def test_add_checks_width_and_duplicates() -> None:
    x = xl(rep("a", "b", striping=S2))
    raises(errno.EINVAL, replicas.add, x, ["c"])
    raises(errno.EINVAL, replicas.add, x, ["c", "d", "e"])
    raises(errno.EEXIST, replicas.add, x, ["c", "a"])
    raises(errno.EEXIST, replicas.add, replicas.add(x, ["c", "d"]), ["d", "e"])


def test_add_refuses_one_osd_twice_in_the_new_replica() -> None:
    x = xl(rep("a", "b", striping=S2))
    with pytest.raises(XfsError) as info:
        replicas.add(x, ["c", "c"])
    assert info.value.code in (errno.EINVAL, errno.EEXIST)


def test_filled_marks_only_that_osd() -> None:
    x = xl(rep("a", "b", striping=S2), rep("c", "d", incomplete=("c", "d"), striping=S2))
    y = replicas.filled(x, "c")
    assert y.version == x.version + 1
    assert y.replicas[1].incomplete == ["d"] and not y.replicas[1].complete
    assert y.replicas[0] == x.replicas[0]
    z = replicas.filled(y, "d")
    assert z.version == y.version + 1 and z.replicas[1].complete


def test_filled_no_op_returns_the_same_xloc() -> None:
    x = xl(rep("a"), rep("b", incomplete=("b",)))
    assert replicas.filled(x, "a") is x  # complete already
    assert replicas.filled(x, "zz") is x  # not in the file
    y = replicas.filled(x, "b")
    assert replicas.filled(y, "b") is y


def test_seal_is_idempotent() -> None:
    x = xl(rep("a"), policy=UpdatePolicy.NONE, factor=3, seal_on_close=True)
    y = replicas.seal(x)
    assert y.update_policy is UpdatePolicy.RONLY and not y.seal_on_close
    assert y.version == x.version + 1 and y.replicas == x.replicas and y.factor == 3
    assert replicas.seal(y) is y


def test_set_policy_none_keeps_the_first_replica() -> None:
    x = xl(rep("a"), rep("b"), rep("c", incomplete=("c",)))
    y = replicas.set_policy(x, FilePolicy(UpdatePolicy.NONE, 1))
    assert [r.osds for r in y.replicas] == [["a"]]
    assert y.update_policy is UpdatePolicy.NONE and y.factor == 1
    assert y.version == x.version + 1


def test_set_policy_shrinking_drops_incomplete_replicas_first() -> None:
    x = xl(rep("a"), rep("b", incomplete=("b",)), rep("c"), rep("d", incomplete=("d",)))
    y = replicas.set_policy(x, FilePolicy(UpdatePolicy.RW, 2))
    assert [r.osds for r in y.replicas] == [["a"], ["c"]]
    assert y.factor == 2 and y.version == x.version + 1
    z = replicas.set_policy(x, FilePolicy(UpdatePolicy.RW, 1))
    assert [r.osds for r in z.replicas] == [["a"]]
    check_invariants(y)
    check_invariants(z)


def test_set_policy_growing_keeps_replicas() -> None:
    x = xl(rep("a"), policy=UpdatePolicy.NONE, factor=1)
    y = replicas.set_policy(x, FilePolicy(UpdatePolicy.RW, 3, Fill.PARTIAL))
    assert y.replicas == x.replicas
    assert (y.update_policy, y.factor, y.fill) == (UpdatePolicy.RW, 3, Fill.PARTIAL)
    assert replicas.missing(y) == 2


def test_set_policy_sealed_stays_sealed() -> None:
    x = xl(rep("a"), rep("b"), policy=UpdatePolicy.RONLY)
    raises(errno.EPERM, replicas.set_policy, x, FilePolicy(UpdatePolicy.RW, 2))
    raises(errno.EPERM, replicas.set_policy, x, FilePolicy(UpdatePolicy.NONE, 1))
    y = replicas.set_policy(x, FilePolicy(UpdatePolicy.RONLY, 3))
    assert y.update_policy is UpdatePolicy.RONLY and y.factor == 3
    raises(errno.EINVAL, replicas.set_policy, x, FilePolicy(UpdatePolicy.RONLY, 0))


def test_missing() -> None:
    assert replicas.missing(xl(rep("a"), policy=UpdatePolicy.NONE, factor=3)) == 0
    assert replicas.missing(xl(rep("a"), factor=3)) == 2
    assert replicas.missing(xl(rep("a"), rep("b", incomplete=("b",)), factor=2)) == 0
    assert replicas.missing(xl(rep("a"), rep("b"), rep("c"), factor=2)) == 0
    assert replicas.missing(xl(rep("a"), policy=UpdatePolicy.RONLY, factor=2)) == 1


def _random_xloc(rng: random.Random, pool: list[str]) -> XLocSet:
    width = rng.randint(1, 3)
    striping = StripingPolicy(1 << 16, width)
    n = rng.randint(1, 4)
    osds = rng.sample(pool, n * width)
    reps = []
    for i in range(n):
        mine = osds[i * width : (i + 1) * width]
        incomplete = [] if i == 0 else [u for u in mine if rng.random() < 0.4]
        reps.append(Replica(mine, striping, incomplete))
    policy = rng.choice([UpdatePolicy.RW, UpdatePolicy.RONLY])
    return XLocSet(rng.randint(1, 50), reps, policy, rng.randint(1, 4), Fill.FULL)


def test_random_changes_keep_the_invariants() -> None:
    rng = random.Random(20240611)
    pool = [f"osd{i}" for i in range(16)]
    steps = changed = refused = 0
    for _ in range(200):
        x = _random_xloc(rng, pool)
        check_invariants(x)
        for _ in range(30):
            present = sorted(replicas.osds_of(x))
            kind = rng.choice(["drop", "add", "filled"])
            try:
                if kind == "drop":
                    osd = rng.choice([*present, "absent"])
                    y = replicas.drop(x, osd)
                elif kind == "add":
                    width = x.replicas[0].striping.width
                    if rng.random() < 0.1:
                        width += rng.choice([-1, 1])
                    # distinct OSDs, sometimes overlapping the file's own
                    osds = rng.sample(pool, max(width, 0))
                    y = replicas.add(x, osds)
                else:
                    osd = rng.choice([*present, "absent"])
                    y = replicas.filled(x, osd)
            except XfsError as e:
                refused += 1
                assert e.code in (errno.EBUSY, errno.EINVAL, errno.EEXIST), e
                if e.code == errno.EBUSY:  # it was the only complete replica
                    gone = replicas.replica_on(x, osd)
                    assert gone is not None and gone.complete
                    assert [r for r in x.replicas if r.complete] == [gone]
                continue
            steps += 1
            check_invariants(y)
            if y is x:
                continue
            changed += 1
            assert y.version == x.version + 1
            assert (y.update_policy, y.factor, y.fill) == (x.update_policy, x.factor, x.fill)
            # completeness only grows for the replicas that remain
            before = {tuple(r.osds): r for r in x.replicas}
            for r in y.replicas:
                old = before.get(tuple(r.osds))
                if old is not None:
                    assert set(r.incomplete) <= set(old.incomplete)
            x = y
    assert changed > 500 and refused > 50 and steps > changed


# ============================================================================ healer
class FakePlace:
    """Hands out fresh OSDs, one list per wanted replica, of the file's width."""

    def __init__(self, available: int = 100) -> None:
        self.calls: list[int] = []
        self._next = 0
        self._available = available

    def __call__(self, xloc: XLocSet, wanted: int) -> list[list[str]]:
        self.calls.append(wanted)
        width = xloc.replicas[0].striping.width
        out = []
        for _ in range(min(wanted, self._available)):
            out.append([f"new{self._next + i}" for i in range(width)])
            self._next += width
        self._available -= len(out)
        return out


def test_plan_replaces_a_dead_osds_replica() -> None:
    x = xl(rep("a"), rep("b"), factor=2)
    place = FakePlace()
    y = plan(x, dead={"b"}, draining=set(), place=place)
    assert [r.osds for r in y.replicas] == [["a"], ["new0"]]
    assert y.replicas[1].incomplete == ["new0"]
    assert place.calls == [1]
    assert y.version == x.version + 2  # drop, then add
    check_invariants(y)


def test_plan_dead_primary_gives_way_to_the_next_complete_replica() -> None:
    x = xl(rep("a", "b", striping=S2), rep("c", "d", striping=S2), factor=2)
    y = plan(x, dead={"a"}, draining=set(), place=FakePlace())
    assert [r.osds for r in y.replicas] == [["c", "d"], ["new0", "new1"]]
    check_invariants(y)


def test_plan_keeps_the_last_complete_replica_on_a_dead_osd() -> None:
    x = xl(rep("a"), rep("b", incomplete=("b",)), factor=2)
    place = FakePlace()
    y = plan(x, dead={"a"}, draining=set(), place=place)
    assert y is x or y == x
    assert place.calls == []
    # both dead: the incomplete one goes and is replaced, the complete one stays
    z = plan(x, dead={"a", "b"}, draining=set(), place=place)
    assert [r.osds for r in z.replicas] == [["a"], ["new0"]]
    check_invariants(z)


def test_plan_adds_below_the_factor() -> None:
    x = xl(rep("a"), factor=3, policy=UpdatePolicy.RONLY)
    place = FakePlace()
    y = plan(x, dead=set(), draining=set(), place=place)
    assert place.calls == [2]
    assert [r.osds for r in y.replicas] == [["a"], ["new0"], ["new1"]]
    assert not y.replicas[1].complete and not y.replicas[2].complete
    check_invariants(y)


def test_plan_without_available_osds_changes_nothing() -> None:
    x = xl(rep("a"), factor=3)
    y = plan(x, dead=set(), draining=set(), place=FakePlace(available=0))
    assert y is x or y == x


def test_plan_drain_adds_first_and_drops_once_enough_are_complete() -> None:
    x = xl(rep("a"), rep("b"), factor=2)
    place = FakePlace()
    # 1: only one complete replica off "b": a replacement is added, "b" stays
    y = plan(x, dead=set(), draining={"b"}, place=place)
    assert [r.osds for r in y.replicas] == [["a"], ["b"], ["new0"]]
    assert y.replicas[1].complete and not y.replicas[2].complete
    # 2: the replacement is filling: nothing to do
    again = plan(y, dead=set(), draining={"b"}, place=place)
    assert again is y or again == y
    assert place.calls == [1]
    # 3: filled: now "b" goes
    z = plan(replicas.filled(y, "new0"), dead=set(), draining={"b"}, place=place)
    assert [r.osds for r in z.replicas] == [["a"], ["new0"]]
    assert all(r.complete for r in z.replicas)
    check_invariants(z)


def test_plan_drain_of_the_primary() -> None:
    x = xl(rep("a"), factor=1)
    place = FakePlace()
    y = plan(x, dead=set(), draining={"a"}, place=place)
    assert [r.osds for r in y.replicas] == [["a"], ["new0"]]
    z = plan(replicas.filled(y, "new0"), dead=set(), draining={"a"}, place=place)
    assert [r.osds for r in z.replicas] == [["new0"]]
    check_invariants(z)


def test_plan_drain_moves_an_unreplicated_file() -> None:
    x = xl(rep("a"), policy=UpdatePolicy.NONE, factor=1)
    place = FakePlace()
    y = plan(x, dead=set(), draining={"a"}, place=place)
    assert y.update_policy is UpdatePolicy.RW
    assert [r.osds for r in y.replicas] == [["a"], ["new0"]]
    assert y.replicas[0].complete and not y.replicas[1].complete
    assert y.version > x.version
    z = plan(replicas.filled(y, "new0"), dead=set(), draining={"a"}, place=place)
    assert [r.osds for r in z.replicas] == [["new0"]]


@pytest.mark.parametrize(
    "x",
    [
        xl(rep("a"), rep("b"), factor=2),
        xl(rep("a"), rep("b", incomplete=("b",)), factor=2),
        xl(rep("a"), rep("b"), rep("c"), factor=2),
        xl(rep("a"), policy=UpdatePolicy.NONE, factor=1),
        xl(rep("a"), policy=UpdatePolicy.NONE, factor=3, seal_on_close=True),
        xl(rep("a", "b", striping=S2), rep("c", "d", striping=S2), policy=UpdatePolicy.RONLY),
    ],
)
def test_plan_leaves_healthy_files_alone(x: XLocSet) -> None:
    place = FakePlace()
    y = plan(x, dead={"zz"}, draining={"yy"}, place=place)
    assert y is x or y == x
    assert place.calls == []


# ============================================================================ OSD side
def test_lease_counts_from_when_the_heartbeat_was_sent() -> None:
    clock = FakeClock(100.0)
    lease = Lease(clock)
    assert not lease.valid()
    lease.granted(sent_at=99.0, seconds=10.0)
    end = 99.0 + 10.0 * 0.9  # the OSD uses 90 % of the lease
    clock.now = end - 0.01
    assert lease.valid()
    clock.now = end + 0.01
    assert not lease.valid()
    assert lease.now() == clock.now


def test_lease_is_never_shortened_by_an_older_grant() -> None:
    clock = FakeClock(100.0)
    lease = Lease(clock)
    lease.granted(sent_at=100.0, seconds=10.0)
    lease.granted(sent_at=95.0, seconds=10.0)  # answered late, sent earlier
    lease.granted(sent_at=100.0, seconds=1.0)  # a shorter lease
    clock.now = 108.9
    assert lease.valid()
    clock.now = 109.01
    assert not lease.valid()
    lease.granted(sent_at=109.0, seconds=10.0)  # renewed
    assert lease.valid()


def test_keyed_locks_exclude_per_key_and_clean_up() -> None:
    locks = KeyedLocks()
    log: list[tuple[str, str, float]] = []

    async def user(name: str, key: str, delay: float) -> None:
        await trio.sleep(delay)
        async with locks.hold(key):
            log.append(("in", name, trio.current_time()))
            await trio.sleep(1)
            log.append(("out", name, trio.current_time()))

    async def main() -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(user, "a1", "a", 0)
            nursery.start_soon(user, "a2", "a", 0.1)
            nursery.start_soon(user, "b1", "b", 0.2)
            await trio.sleep(0.5)
            assert set(locks._locks) == {"a", "b"}
            assert locks._locks["a"][1] == 2  # one holds, one waits
        at = {(kind, name): t - start for kind, name, t in log}
        assert at[("in", "a1")] == pytest.approx(0)
        assert at[("in", "a2")] == pytest.approx(1)  # after a1 left
        assert at[("in", "b1")] == pytest.approx(0.2)  # concurrently with a1
        assert locks._locks == {}

    trio_run(main)


def test_keyed_locks_clean_up_after_a_cancelled_waiter() -> None:
    locks = KeyedLocks()

    async def main() -> None:
        async with locks.hold("k"):
            with trio.move_on_after(1):
                async with trio.open_nursery() as nursery:
                    async def wait() -> None:
                        async with locks.hold("k"):
                            raise AssertionError("got a held lock")

                    nursery.start_soon(wait)
            assert locks._locks["k"][1] == 1
        assert locks._locks == {}

    trio_run(main)


def test_gates_exclusive_waits_for_shared_and_blocks_new_shared() -> None:
    gates = Gates()
    log: list[tuple[str, float]] = []

    async def shared(name: str, delay: float, hold: float) -> None:
        await trio.sleep(delay)
        async with gates.shared("f"):
            log.append((f"{name} in", trio.current_time()))
            await trio.sleep(hold)
        log.append((f"{name} out", trio.current_time()))

    async def exclusive(delay: float) -> None:
        await trio.sleep(delay)
        async with gates.exclusive("f"):
            log.append(("x in", trio.current_time()))
            await trio.sleep(1)
        log.append(("x out", trio.current_time()))

    async def other_file() -> None:
        await trio.sleep(0.5)  # while the exclusive gate of "f" is wanted
        async with gates.shared("g"):
            log.append(("g in", trio.current_time()))

    async def main() -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shared, "s1", 0, 2)
            nursery.start_soon(shared, "s2", 0, 1)
            nursery.start_soon(exclusive, 0.1)
            nursery.start_soon(shared, "s3", 0.2, 1)
            nursery.start_soon(other_file)
        at = {name: t - start for name, t in log}
        assert at["s1 in"] == pytest.approx(0) and at["s2 in"] == pytest.approx(0)
        assert at["x in"] == pytest.approx(2)  # after the last shared holder (s1)
        assert at["s3 in"] == pytest.approx(3)  # after the exclusive holder
        assert at["g in"] == pytest.approx(0.5)  # other files are not held up
        assert gates._shared == {}
        assert gates._locks._locks == {}

    trio_run(main)


def test_gates_exclusive_without_shared_holders_enters_at_once() -> None:
    gates = Gates()

    async def main() -> None:
        start = trio.current_time()
        async with gates.exclusive("f"):
            assert trio.current_time() == start
        async with gates.shared("f"), gates.shared("f"):
            assert gates._shared == {"f": 2}
        assert gates._shared == {}
        assert gates._locks._locks == {}

    trio_run(main)


# ============================================================================ client
def layout(xloc: XLocSet) -> FileLayout:
    attr = Attr(7, 0o100644, 1, "alice@physics", "users@physics", 0, 0, 0, 0)
    xcap = XCap("vol", 7, 3, 0, xloc.version, xloc.digest(), 0, 1 << 40, b"h", "k1")
    return FileLayout(attr, xloc, xcap, {})


def test_candidates_writable_files_use_the_primary_only() -> None:
    health = Health(FakeClock())
    x = xl(rep("a", "b", striping=S2), rep("c", "d", striping=S2), factor=2)
    for read in (False, True):
        assert candidates(layout(x), 0, read, health) == ["a"]
        assert candidates(layout(x), 5, read, health) == ["b"]
    n = xl(rep("a", "b", striping=S2), policy=UpdatePolicy.NONE, factor=1)
    assert candidates(layout(n), 2, True, health) == ["a"]
    health.failed("a")
    assert candidates(layout(n), 2, True, health) == ["a"]  # nobody else to ask


def test_candidates_sealed_reads_rotate_over_every_replica_healthy_first() -> None:
    clock = FakeClock()
    health = Health(clock)
    x = xl(
        rep("a", "b", striping=S2),
        rep("c", "d", incomplete=("c",), striping=S2),
        rep("e", "f", striping=S2),
        rep("g", "h", striping=S2),
        policy=UpdatePolicy.RONLY,
    )
    lay = layout(x)
    # stripe row k (objects 2k, 2k+1) starts at replica k mod 4: partial ones included
    assert candidates(lay, 0, True, health) == ["a", "c", "e", "g"]
    assert candidates(lay, 1, True, health) == ["b", "d", "f", "h"]
    assert candidates(lay, 2, True, health) == ["c", "e", "g", "a"]
    assert candidates(lay, 7, True, health) == ["h", "b", "d", "f"]
    assert candidates(lay, 8, True, health) == ["a", "c", "e", "g"]
    health.failed("a")
    health.failed("e")
    assert candidates(lay, 0, True, health) == ["c", "g", "a", "e"]
    assert candidates(lay, 4, True, health) == ["g", "c", "e", "a"]
    # the failed OSDs hold column 0 only: column 1 keeps its order
    assert candidates(lay, 1, True, health) == ["b", "d", "f", "h"]
    health.failed("c")
    health.failed("g")
    assert candidates(lay, 0, True, health) == ["a", "c", "e", "g"]  # all failed: in order
    health.ok("e")
    assert candidates(lay, 0, True, health) == ["e", "a", "c", "g"]
    # writes of a sealed file still name the primary only
    assert candidates(lay, 0, False, health) == ["a"]


def test_xlocset_counts_partial_replicas_toward_the_factor() -> None:
    partial = xl(rep("a"), rep("b", incomplete=("b",)), rep("c", incomplete=("c",)),
                 policy=UpdatePolicy.RONLY, factor=3, fill=Fill.PARTIAL)
    assert not partial.background_fill and partial.filling == []
    assert not partial.below_factor  # partial replicas serve reads: they count
    full = replace(partial, fill=Fill.FULL)
    assert full.background_fill and full.filling == ["b", "c"] and full.below_factor
    rw = replace(partial, update_policy=UpdatePolicy.RW)  # rw replicas always fill
    assert rw.background_fill and rw.filling == ["b", "c"] and rw.below_factor
    assert replace(partial, factor=4).below_factor
    assert not replace(partial, update_policy=UpdatePolicy.NONE, factor=1).below_factor
    assert xl(rep("a"), policy=UpdatePolicy.NONE, factor=1).filling == []


def test_health_forgets_failures_after_recent() -> None:
    clock = FakeClock(1000.0)
    health = Health(clock)
    assert not health.recently_failed("a")
    health.failed("a")
    assert health.recently_failed("a")
    clock.now += RECENT - 0.01
    assert health.recently_failed("a")
    clock.now += 0.02
    assert not health.recently_failed("a")
    health.failed("a")
    assert health.recently_failed("a")
    health.ok("a")
    assert not health.recently_failed("a")
    health.ok("never-failed")  # no error


# ============================================================================ rpc
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (trio.TooSlowError(), True),
        (Unavailable("connection refused"), True),
        (XfsError(errno.EAGAIN, "not the primary"), True),
        (XfsError(errno.EHOSTDOWN), True),
        (XfsError(errno.EACCES), False),
        (XfsError(errno.ESTALE), False),
        (XfsError(errno.EIO), False),
        (ValueError("not an rpc failure"), False),
    ],
)
def test_unreachable(error: BaseException, expected: bool) -> None:
    assert unreachable(error) is expected


# ============================================================================ call_osd
class FakeSession:
    """What ``call_osd`` uses of a session: timeouts, health, and MRC reports."""

    def __init__(self, io_timeout: float = 20.0, osd_timeout: float = 3.0) -> None:
        self.io_timeout = io_timeout
        self.osd_timeout = osd_timeout
        self.health = Health(trio.current_time)
        self.reported: list[str] = []
        self.unhealthy: set[str] = set()  # when the call ended

    async def mrc(self, method: object, request: Any) -> object:
        self.reported.append(request.osd)
        return None


class FakeSource:
    def __init__(self, lay: FileLayout) -> None:
        self.lay = lay
        self.renewals = 0

    async def layout(self) -> FileLayout:
        return self.lay

    async def renew(self, refused: FileLayout) -> FileLayout:
        self.renewals += 1
        return self.lay


def run_call_osd(
    lay: FileLayout,
    answer: Callable[[str], Awaitable[str]],
    *,
    read: bool = False,
    session: FakeSession | None = None,
) -> tuple[str | XfsError, float, FakeSession, list[str]]:
    """``call_osd`` on virtual time: its result (or error), the seconds it took, the
    session and the OSDs asked, in order."""
    asked: list[str] = []
    box: dict[str, Any] = {}

    async def main() -> None:
        s = session or FakeSession()
        box["session"] = s

        async def call(_: FileLayout, osd: str) -> str:
            asked.append(osd)
            return await answer(osd)

        start = trio.current_time()
        try:
            box["result"] = await call_osd(cast(Any, s), FakeSource(lay), 0, call, read=read)
        except XfsError as e:
            box["result"] = e
        box["took"] = trio.current_time() - start
        s.unhealthy = {osd for osd in asked if s.health.recently_failed(osd)}

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return box["result"], box["took"], box["session"], asked


async def never(osd: str) -> str:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def test_no_reachable_replica_is_eio_within_io_timeout() -> None:
    lay = layout(xl(rep("a"), rep("b"), rep("c")))
    result, took, session, asked = run_call_osd(lay, never)
    assert isinstance(result, XfsError) and result.code == errno.EIO, result
    assert "20 s" in str(result)
    # bounded: io_timeout, plus at most one attempt's last slice and a pause
    assert 20.0 <= took <= 20.0 + 0.5, took
    assert set(asked) == {"a"}  # writes and rw reads name the primary only ...
    assert session.reported and set(session.reported) == {"a"}  # ... reported to the MRC


def test_sealed_read_tries_every_replica_then_eio() -> None:
    lay = layout(xl(rep("a"), rep("b"), rep("c"), policy=UpdatePolicy.RONLY))
    result, took, session, asked = run_call_osd(
        lay, never, read=True, session=FakeSession(io_timeout=10.0, osd_timeout=2.0)
    )
    assert isinstance(result, XfsError) and result.code == errno.EIO
    assert 10.0 <= took <= 10.5, took
    assert asked[:3] == ["a", "b", "c"] and set(asked) == {"a", "b", "c"}
    assert session.reported == []  # sealed files: nothing for the MRC to replace


def test_sealed_read_moves_on_after_an_eio_or_silence() -> None:
    lay = layout(xl(rep("a"), rep("b"), rep("c"), policy=UpdatePolicy.RONLY))

    async def answer(osd: str) -> str:
        if osd == "a":
            raise XfsError(errno.EIO, "no complete replica reachable")
        if osd == "b":
            await trio.sleep_forever()
        return f"data from {osd}"

    result, took, session, asked = run_call_osd(lay, answer, read=True)
    assert result == "data from c" and asked == ["a", "b", "c"]
    assert took == pytest.approx(3.0)  # b's attempt: osd_timeout
    assert session.unhealthy == {"a", "b"}


def test_a_refusal_is_not_retried_on_other_replicas() -> None:
    lay = layout(xl(rep("a"), rep("b"), policy=UpdatePolicy.RONLY))

    async def answer(osd: str) -> str:
        raise XfsError(errno.EINVAL, "bad range")

    result, _, _, asked = run_call_osd(lay, answer, read=True)
    assert isinstance(result, XfsError) and result.code == errno.EINVAL and asked == ["a"]
