"""The pure lock rules (xfs.mrc.locks): examples, then a state machine that compares
``conflict`` and ``apply`` against a brute-force per-byte model of a small file."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xfs.mrc import locks
from xfs.mrc.locks import EOF, FLOCK, POSIX, READ, UNLOCK, WRITE, Held, Request

A, B = "client-a", "client-b"


def req(mode: str, start: int = 0, end: int = EOF, *, client: str = A, owner: int = 1,
        family: str = POSIX, pid: int = 0) -> Request:
    return Request(client, owner, family, mode, start, end, pid)


def held(mode: str, start: int = 0, end: int = EOF, *, client: str = A, owner: int = 1,
         family: str = POSIX, pid: int = 0) -> Held:
    return Held(client, owner, family, mode, start, end, pid)


def run(*requests: Request, start: Iterable[Held] = ()) -> list[Held]:
    """Apply ``requests`` in turn; each must be free of conflicts."""
    state = list(start)
    for r in requests:
        assert locks.conflict(state, r) is None, r
        state = locks.apply(state, r)
    return state


def spans(state: Iterable[Held]) -> set[tuple[str, int, int]]:
    return {(h.mode, h.start, h.end) for h in state}


# ============================================================================ ranges
def test_check_range() -> None:
    assert locks.check_range(0, 0)
    assert locks.check_range(0, EOF)
    assert locks.check_range(EOF, EOF)
    assert not locks.check_range(-1, 5)
    assert not locks.check_range(5, 4)
    assert not locks.check_range(0, EOF + 1)


def test_overlaps_is_inclusive() -> None:
    h = held(READ, 10, 19)
    assert h.overlaps(19, 30) and h.overlaps(0, 10) and h.overlaps(12, 13)
    assert not h.overlaps(20, 30) and not h.overlaps(0, 9)


# ============================================================================ conflicts
def test_readers_share_writers_exclude() -> None:
    state = [held(READ, 0, 99, client=A)]
    assert locks.conflict(state, req(READ, 50, 150, client=B)) is None
    assert locks.conflict(state, req(WRITE, 50, 150, client=B)) == state[0]
    state = [held(WRITE, 0, 99, client=A)]
    assert locks.conflict(state, req(READ, 99, 99, client=B)) == state[0]
    assert locks.conflict(state, req(READ, 100, EOF, client=B)) is None


def test_same_owner_never_conflicts() -> None:
    state = [held(WRITE, 0, 99)]
    assert locks.conflict(state, req(WRITE, 0, 99)) is None
    assert locks.conflict(state, req(READ, 50, 60)) is None


def test_other_owner_on_same_client_conflicts() -> None:
    state = [held(WRITE, 0, 9, owner=1)]
    assert locks.conflict(state, req(READ, 5, 5, owner=2)) == state[0]


def test_same_owner_number_on_other_client_conflicts() -> None:
    state = [held(WRITE, 0, 9, client=A, owner=7)]
    assert locks.conflict(state, req(WRITE, 0, 0, client=B, owner=7)) == state[0]


def test_unlock_never_conflicts() -> None:
    state = [held(WRITE, client=B)]
    assert locks.conflict(state, req(UNLOCK)) is None
    assert run(req(UNLOCK), start=state) == state  # and leaves others' locks alone


def test_conflict_returns_a_blocking_lock() -> None:
    state = [held(READ, 0, 9, client=B), held(WRITE, 20, 29, client=B, owner=2)]
    assert locks.conflict(state, req(READ, 0, 25)) == state[1]
    assert locks.conflict(state, req(WRITE, 0, 25)) in state


def test_eof_ranges() -> None:
    state = [held(WRITE, 100, EOF, client=B)]
    assert locks.conflict(state, req(READ, EOF, EOF)) == state[0]
    assert locks.conflict(state, req(READ, 2**40, 2**40 + 1)) == state[0]
    assert locks.conflict(state, req(READ, 0, 99)) is None


# ============================================================================ apply
def test_split_by_unlock_in_the_middle() -> None:
    state = run(req(WRITE, 0, 99), req(UNLOCK, 40, 59))
    assert spans(state) == {(WRITE, 0, 39), (WRITE, 60, 99)}


def test_unlock_middle_of_eof_range() -> None:
    state = run(req(READ, 10, EOF), req(UNLOCK, 20, 29))
    assert spans(state) == {(READ, 10, 19), (READ, 30, EOF)}
    state = run(req(UNLOCK, 5, EOF), start=state)
    assert state == []


def test_unlock_whole_and_unlock_of_nothing() -> None:
    assert run(req(WRITE, 0, 9), req(UNLOCK)) == []
    assert run(req(UNLOCK, 5, 9)) == []
    assert spans(run(req(WRITE, 0, 9), req(UNLOCK, 10, 20))) == {(WRITE, 0, 9)}


def test_merge_touching_and_overlapping_same_mode() -> None:
    assert spans(run(req(READ, 0, 9), req(READ, 10, 19))) == {(READ, 0, 19)}
    assert spans(run(req(READ, 10, 19), req(READ, 0, 9))) == {(READ, 0, 19)}
    assert spans(run(req(READ, 0, 9), req(READ, 5, 14))) == {(READ, 0, 14)}
    assert spans(run(req(READ, 0, 9), req(READ, 20, 29), req(READ, 10, 19))) == {
        (READ, 0, 29)
    }
    assert spans(run(req(WRITE, 0, 9), req(WRITE, 10, EOF))) == {(WRITE, 0, EOF)}


def test_no_merge_across_gap_or_mode() -> None:
    assert spans(run(req(READ, 0, 9), req(READ, 11, 19))) == {(READ, 0, 9), (READ, 11, 19)}
    assert spans(run(req(READ, 0, 9), req(WRITE, 10, 19))) == {(READ, 0, 9), (WRITE, 10, 19)}


def test_upgrade_middle_of_read_range() -> None:
    state = run(req(READ, 0, 99), req(WRITE, 40, 59))
    assert spans(state) == {(READ, 0, 39), (WRITE, 40, 59), (READ, 60, 99)}


def test_downgrade_and_remerge() -> None:
    state = run(req(READ, 0, 99), req(WRITE, 40, 59), req(READ, 40, 59))
    assert spans(state) == {(READ, 0, 99)}
    state = run(req(WRITE, 0, EOF), req(READ, 0, 9))
    assert spans(state) == {(READ, 0, 9), (WRITE, 10, EOF)}


def test_upgrade_refused_while_another_reads() -> None:
    state = run(req(READ, 0, 99, client=A), req(READ, 50, 59, client=B))
    assert locks.conflict(state, req(WRITE, 0, 99, client=A)) == held(READ, 50, 59, client=B)
    # but the part the other reader does not cover can be upgraded
    state = run(req(WRITE, 0, 49, client=A), start=state)
    assert spans(h for h in state if h.client == A) == {(WRITE, 0, 49), (READ, 50, 99)}


def test_apply_keeps_other_owners_locks() -> None:
    others = [held(READ, 0, 99, client=B), held(WRITE, 0, 9, family=FLOCK)]
    state = run(req(READ, 0, 99), req(UNLOCK, 0, 99), start=others)
    assert sorted(state, key=repr) == sorted(others, key=repr)


def test_big_owner_numbers() -> None:
    top = 2**64 - 1
    state = run(req(WRITE, 0, 9, owner=top), req(WRITE, 10, 19, owner=top))
    assert state == [held(WRITE, 0, 19, owner=top)]
    assert locks.conflict(state, req(READ, 0, 0, owner=top - 1)) == state[0]


# ============================================================================ flock
def test_flock_and_posix_are_independent() -> None:
    state = run(req(WRITE, client=B), req(WRITE, family=FLOCK, client=A))
    assert locks.conflict(state, req(WRITE, family=FLOCK, client=B)) is not None
    assert locks.conflict(state, req(WRITE, 0, 0, client=A, owner=2)) is not None
    # same owner number in both families: two different locks, both kept
    state = run(req(WRITE), req(READ, family=FLOCK))
    assert {(h.family, h.mode) for h in state} == {(POSIX, WRITE), (FLOCK, READ)}
    state = run(req(UNLOCK, family=FLOCK), start=state)
    assert [(h.family, h.mode) for h in state] == [(POSIX, WRITE)]


def test_flock_convert_and_unlock() -> None:
    state = run(req(READ, family=FLOCK), req(READ, family=FLOCK, client=B))
    assert locks.conflict(state, req(WRITE, family=FLOCK)) == held(READ, family=FLOCK, client=B)
    state = run(req(UNLOCK, family=FLOCK, client=B), req(WRITE, family=FLOCK), start=state)
    assert state == [held(WRITE, family=FLOCK)]
    assert run(req(READ, family=FLOCK), start=state) == [held(READ, family=FLOCK)]


def test_flock_is_whole_file_whatever_the_range() -> None:
    """flock(2) has no range: a request naming one still locks (and meets) the file."""
    state = run(req(WRITE, 0, 0, family=FLOCK, client=A))
    assert locks.conflict(state, req(WRITE, 5, 5, family=FLOCK, client=B)) is not None
    assert spans(state) == {(WRITE, 0, EOF)}


# ============================================================================ release
def test_release_owner_and_client() -> None:
    state = [
        held(READ, 0, 9, client=A, owner=1),
        held(READ, 20, 29, client=A, owner=1),
        held(WRITE, family=FLOCK, client=A, owner=1),
        held(READ, 0, 9, client=A, owner=2),
        held(READ, 0, 9, client=B, owner=1),
    ]
    left = locks.release_owner(state, A, 1, POSIX)
    assert left == state[2:]
    assert locks.release_owner(state, A, 1, FLOCK) == [*state[:2], *state[3:]]
    assert locks.release_owner(state, A, 9, POSIX) == state
    assert locks.release_client(state, A) == [state[4]]
    assert locks.release_client(state, "nobody") == state


# ============================================================================ model
SIZE = 64  # bytes of the model file; the last one stands for 63..EOF
CLIENTS = (A, B)
OWNERS = (1, 2, 2**64 - 1)
Owner = tuple[str, int]


def real_end(end: int) -> int:
    return EOF if end == SIZE - 1 else end


def model_end(end: int) -> int:
    return SIZE - 1 if end == EOF else end


class Model:
    """Per byte: which owners hold read or write (POSIX); per owner: its flock mode."""

    def __init__(self) -> None:
        self.bytes: list[dict[Owner, str]] = [{} for _ in range(SIZE)]
        self.flock: dict[Owner, str] = {}

    def grantable(self, r: Request) -> bool:
        me = (r.client, r.owner)
        if r.mode == UNLOCK:
            return True
        if r.family == FLOCK:
            holders = self.flock.items()
            return all(o == me or (r.mode == READ and m == READ) for o, m in holders)
        for b in range(r.start, model_end(r.end) + 1):
            for o, m in self.bytes[b].items():
                if o != me and (r.mode == WRITE or m == WRITE):
                    return False
        return True

    def apply(self, r: Request) -> None:
        me = (r.client, r.owner)
        if r.family == FLOCK:
            self.flock.pop(me, None)
            if r.mode != UNLOCK:
                self.flock[me] = r.mode
            return
        for b in range(r.start, model_end(r.end) + 1):
            self.bytes[b].pop(me, None)
            if r.mode != UNLOCK:
                self.bytes[b][me] = r.mode

    @staticmethod
    def of(state: Iterable[Held]) -> Model:
        m = Model()
        for h in state:
            me = (h.client, h.owner)
            if h.family == FLOCK:
                assert me not in m.flock, f"two flock locks of {me}"
                m.flock[me] = h.mode
                continue
            for b in range(h.start, model_end(h.end) + 1):
                assert me not in m.bytes[b], f"ranges of {me} overlap at {b}"
                m.bytes[b][me] = h.mode
        return m


requests = st.builds(
    lambda client, owner, family, mode, a, b, pid: Request(
        client, owner, family, mode, min(a, b), real_end(max(a, b)), pid
    ),
    st.sampled_from(CLIENTS),
    st.sampled_from(OWNERS),
    st.sampled_from((POSIX, POSIX, POSIX, FLOCK)),
    st.sampled_from((READ, WRITE, UNLOCK)),
    st.integers(0, SIZE - 1) | st.just(SIZE - 1),
    st.integers(0, SIZE - 1) | st.just(SIZE - 1),
    st.integers(0, 5),
)


class LockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state: list[Held] = []
        self.model = Model()

    @rule(r=requests)
    def request(self, r: Request) -> None:
        found = locks.conflict(self.state, r)
        assert (found is None) == self.model.grantable(r), (r, self.state)
        if found is not None:
            assert found in self.state
            assert found.family == r.family and (found.client, found.owner) != (
                r.client,
                r.owner,
            )
            assert r.family == FLOCK or found.overlaps(r.start, r.end)
            assert WRITE in (found.mode, r.mode)
            return
        self.state = locks.apply(self.state, r)
        self.model.apply(r)

    @rule(client=st.sampled_from(CLIENTS), owner=st.sampled_from(OWNERS),
          family=st.sampled_from((POSIX, FLOCK)))
    def release_owner(self, client: str, owner: int, family: str) -> None:
        self.state = locks.release_owner(self.state, client, owner, family)
        if family == FLOCK:
            self.model.flock.pop((client, owner), None)
        else:
            for byte in self.model.bytes:
                byte.pop((client, owner), None)

    @rule(client=st.sampled_from(CLIENTS))
    def release_client(self, client: str) -> None:
        self.state = locks.release_client(self.state, client)
        self.model.flock = {o: m for o, m in self.model.flock.items() if o[0] != client}
        for byte in self.model.bytes:
            for o in [o for o in byte if o[0] == client]:
                del byte[o]

    @invariant()
    def matches_model(self) -> None:
        got = Model.of(self.state)  # (also: one owner's ranges never overlap)
        assert got.bytes == self.model.bytes
        assert got.flock == self.model.flock

    @invariant()
    def ranges_valid_and_merged(self) -> None:
        for h in self.state:
            assert locks.check_range(h.start, h.end), h
            assert h.end == EOF or h.end < SIZE - 1, h
            assert h.family in (POSIX, FLOCK) and h.mode in (READ, WRITE), h
        mine: dict[tuple[str, int, str], list[Held]] = {}
        for h in self.state:
            if h.family == POSIX:
                mine.setdefault((h.client, h.owner, h.mode), []).append(h)
        for same in mine.values():
            same.sort(key=lambda h: h.start)
            for a, b in pairwise(same):
                assert a.end + 1 < b.start, f"touching {a} and {b} not merged"


TestLockMachine = LockMachine.TestCase
TestLockMachine.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("mode", [READ, WRITE])
def test_model_agrees_on_an_example(mode: str) -> None:
    """A sanity check of the model itself against a hand-worked case."""
    m = Model()
    m.apply(req(READ, 10, 19, client=B))
    assert m.grantable(req(mode, 0, 9))
    assert m.grantable(req(mode, 20, EOF))
    assert m.grantable(req(mode, 15, 15)) == (mode == READ)
