"""Directory change numbers on the MRC and the listings a mount keeps with them."""

from __future__ import annotations

from xfs.client.listings import Listings
from xfs.mrc.dirseq import DirSeq


def test_each_change_gets_a_fresh_number() -> None:
    seq = DirSeq(1000)
    assert seq.get("v", 5) == 1000  # never changed: the floor
    seq.changed("v", 5)
    seq.changed("v", 6)
    assert seq.get("v", 5) == 1001 and seq.get("v", 6) == 1002 and seq.get("w", 5) == 1000
    seq.changed("v", 5)
    assert seq.get("v", 5) == 1003


def test_a_forgotten_directory_never_reports_a_number_it_had_before_a_change() -> None:
    seq = DirSeq(0, capacity=2)
    seq.changed("v", 1)  # 1
    seen = seq.get("v", 1)
    seq.changed("v", 2)  # 2
    seq.changed("v", 3)  # 3: directory 1 is forgotten, the floor rises to 1
    assert seq.get("v", 1) == seen  # unchanged since: the same number, honestly
    seq.changed("v", 1)  # 4
    seq.changed("v", 4)  # 5
    seq.changed("v", 5)  # 6: 1 forgotten again, floor 4
    assert seq.get("v", 1) != seen
    # numbers after a restart are above every number from before
    assert DirSeq(10_000).get("v", 1) > 6


def test_a_listing_answers_for_absent_names_while_confirmed() -> None:
    listings = Listings(fresh_for=10.0)
    listings.made(7, seq=100, now=0.0)
    assert listings.absent(7, b"a", now=1.0) == 9.0
    listings.changed(7, was=100, seq=105, now=2.0, added=b"a")
    assert listings.absent(7, b"a", now=2.0) == 0.0  # present: ask the MRC
    assert listings.absent(7, b"b", now=3.0) == 9.0  # confirmed at 2.0
    listings.changed(7, was=105, seq=106, now=3.0, removed=b"a")
    assert listings.absent(7, b"a", now=3.0) == 10.0
    assert listings.absent(7, b"a", now=13.5) == 0.0  # not confirmed for too long
    assert listings.absent(7, b"a", now=3.0) == 0.0  # and forgotten


def test_a_change_by_someone_else_forgets_the_listing() -> None:
    listings = Listings(fresh_for=10.0)
    listings.made(7, seq=100, now=0.0)
    listings.changed(7, was=101, seq=102, now=1.0, added=b"a")  # 100 -> 101 was not ours
    assert listings.absent(7, b"zzz", now=1.0) == 0.0
    listings.made(8, seq=100, now=0.0)
    listings.forget(8)
    assert listings.absent(8, b"zzz", now=0.0) == 0.0
    listings.made(9, seq=100, now=0.0)
    listings.changed(9, was=0, seq=0, now=0.0, added=b"a")  # an MRC that sends no numbers
    assert listings.absent(9, b"zzz", now=0.0) == 0.0


def test_unknown_numbers_and_a_zero_window_keep_nothing() -> None:
    assert Listings(fresh_for=0.0).absent(1, b"a", now=0.0) == 0.0
    listings = Listings(fresh_for=0.0)
    listings.made(1, seq=5, now=0.0)
    assert listings.absent(1, b"a", now=0.0) == 0.0
    listings = Listings(fresh_for=5.0)
    listings.made(1, seq=0, now=0.0)
    assert listings.absent(1, b"a", now=0.0) == 0.0
    listings = Listings(fresh_for=5.0, capacity=2)
    for ino in (1, 2, 3):
        listings.made(ino, seq=5, now=0.0)
    assert listings.absent(1, b"a", now=0.0) == 0.0  # the least recently made went
    assert listings.absent(3, b"a", now=0.0) == 5.0
