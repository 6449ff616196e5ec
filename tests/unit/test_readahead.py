"""Reading a directory's attributes ahead for the lookups that follow (pure bookkeeping)."""

from __future__ import annotations

from xfs.client import readahead
from xfs.client.readahead import PAGE, USEFUL, ReadAhead
from xfs.proto.records import Attr, DirEntry

KEY = (1, 7)


def entries(first: int, count: int) -> list[DirEntry]:
    return [
        DirEntry(b"f%d" % i, Attr(100 + i, 0o100644, 1, "a@x", "g@x", i, 0, 0, 0), i + 1)
        for i in range(first, first + count)
    ]


def test_the_second_miss_within_a_second_reads_ahead() -> None:
    ahead = ReadAhead()
    assert ahead.missed(KEY, now=0.0) is None  # one miss: just a lookup
    assert ahead.missed(KEY, now=0.5) == 0  # the second: read from the start
    ahead.fill(KEY, entries(0, PAGE), changes=0, now=0.5, complete=False)
    assert ahead.take(KEY, b"f1", now=0.6, changes=0).ino == 101  # type: ignore[union-attr]
    assert ahead.take(KEY, b"f1", now=0.6, changes=0) is None  # each entry once
    for i in range(2, 2 + USEFUL):
        assert ahead.take(KEY, b"f%d" % i, now=0.7, changes=0) is not None
    # a name beyond the page: the next page, from where this one ended
    assert ahead.take(KEY, b"f%d" % PAGE, now=0.8, changes=0) is None
    assert ahead.missed(KEY, now=0.8) == PAGE
    ahead.fill(KEY, entries(PAGE, 10), changes=0, now=0.8, complete=True)
    assert ahead.take(KEY, b"f%d" % PAGE, now=0.9, changes=0) is not None
    assert ahead.missed(KEY, now=0.9) is None  # the directory ended: nothing more to read


def test_a_change_here_or_age_makes_a_page_unusable() -> None:
    ahead = ReadAhead()
    ahead.fill(KEY, entries(0, 10), changes=4, now=0.0, complete=True)
    assert ahead.take(KEY, b"f1", now=0.1, changes=5) is None  # something changed here
    assert ahead.take(KEY, b"f2", now=0.1, changes=4) is None  # and the page is gone
    ahead.fill(KEY, entries(0, 10), changes=4, now=0.0, complete=True)
    assert ahead.take(KEY, b"f3", now=readahead.FRESH_FOR + 0.01, changes=4) is None


def test_a_page_that_answers_little_is_not_followed_soon() -> None:
    ahead = ReadAhead()
    ahead.missed(KEY, now=0.0)
    assert ahead.missed(KEY, now=0.1) == 0
    ahead.fill(KEY, entries(0, PAGE), changes=0, now=0.1, complete=False)
    # the names looked up are not in it (missing, or another order): no more pages
    assert ahead.missed(KEY, now=0.2) is None
    assert ahead.missed(KEY, now=0.3) is None
    # it ages out having answered nothing: the directory rests
    assert ahead.take(KEY, b"f1", now=2.0, changes=0) is None
    assert ahead.missed(KEY, now=2.1) is None and ahead.missed(KEY, now=2.2) is None
    later = 2.0 + readahead.REFUSED_FOR + 0.1
    ahead.missed(KEY, now=later)
    assert ahead.missed(KEY, now=later + 0.1) == 0


def test_a_refused_readdir_rests_the_directory() -> None:
    ahead = ReadAhead()
    ahead.missed(KEY, now=0.0)
    assert ahead.missed(KEY, now=0.1) == 0
    ahead.refused(KEY, now=0.1)
    assert ahead.missed(KEY, now=0.2) is None and ahead.missed(KEY, now=0.3) is None
    # other directories and other sessions are not affected
    ahead.missed((2, 7), now=0.3)
    assert ahead.missed((2, 7), now=0.4) == 0
