"""Delegations of the MRC (xfs.mrc.delegations) over a real store: tokens, expiry,
revocation, confinement to a directory, persistence, the format upgrade and fsck."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from xfs.client.credentials import CredentialStore
from xfs.client.delegation import read_token, write_token
from xfs.client.sessions import Sessions
from xfs.mrc import fsck
from xfs.mrc.delegations import Delegated, Delegations, parse_token
from xfs.mrc.namespace import Namespace
from xfs.mrc.store import FORMAT_VERSION, Store
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO, Identity, Kind, Replica, Role, StripingPolicy, XLocSet

V = "vol"
HOUR = 3600.0


def ident(principal: str, role: Role = Role.STANDARD, *groups: str) -> Identity:
    return Identity(principal, principal.split("@")[1], Kind.USER, role, groups,
                    principal.encode().ljust(32, b"\0"))


ALICE = ident("alice@physics", Role.STANDARD, "users@physics", "alice@physics")
BOB = ident("bob@physics", Role.STANDARD, "users@physics")
ROOT = ident("root@physics", Role.SUPER)
CHEM_ROOT = ident("root@chem", Role.SUPER)
W1 = ident("w1@physics", Role.WORKER)
W2 = ident("w2@physics", Role.WORKER)
XLOC = XLocSet(1, [Replica(["osd-1"], StripingPolicy())])


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class World:
    """alice's volume: /jobs/run1 (delegated), /jobs/run1/sub, /jobs/run1/f, /jobs/other,
    /secret (a file), and /secret linked as /jobs/run1/link."""

    def __init__(self, path: Path) -> None:
        self.clock = Clock()
        self.store = Store.open(path)
        self.ns = ns = Namespace(self.store)
        self.vid = ns.create_volume(ROOT, V, owner="alice@physics", mode=0o755).id
        self.jobs = ns.mkdir(ALICE, V, ROOT_INO, b"jobs", 0o755, 0).ino
        self.run1 = ns.mkdir(ALICE, V, self.jobs, b"run1", 0o755, 0).ino
        self.sub = ns.mkdir(ALICE, V, self.run1, b"sub", 0o755, 0).ino
        self.file = ns.create(ALICE, V, self.run1, b"f", 0o644, os.O_CREAT, 0, XLOC)[0].ino
        self.other = ns.mkdir(ALICE, V, self.jobs, b"other", 0o755, 0).ino
        self.secret = ns.create(ALICE, V, ROOT_INO, b"secret", 0o600, os.O_CREAT, 0, XLOC)[0].ino
        self.d = Delegations(self.store, self.clock, max_lifetime=7 * 24 * HOUR)
        self.d.load()

    def delegate(self, grantee: str = "w1@physics", lifetime: float = HOUR,
                 grantor: Identity = ALICE) -> tuple[str, str]:
        d, token = self.d.create(grantor, self.vid, self.run1, grantee, lifetime, "/jobs/run1")
        return d.id, token

    def acting(self, token: str, worker: Identity = W1) -> Callable[[], Identity]:
        d = self.d.assume(worker, token)
        return self.d.acting(worker, d.id)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "mrc.db")
    yield w
    problems = fsck.check(w.store)
    w.store.close()
    assert problems == []


def raises(code: int, fn: Callable[..., object], *args: object, **kw: object) -> XfsError:
    with pytest.raises(XfsError) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value
    return info.value


# ------------------------------------------------------------------ tokens
def test_the_grantee_acts_as_the_grantor_with_its_own_fingerprint(world: World) -> None:
    id, token = world.delegate()
    who = world.acting(token)()
    assert isinstance(who, Delegated)
    assert (who.principal, who.vo, who.groups, who.role) == (
        "alice@physics", "physics", ALICE.groups, Role.STANDARD)
    assert who.fingerprint == W1.fingerprint  # the XCaps it gets are bound to the worker
    assert (who.delegation, who.worker, who.volume, who.root) == (
        id, "w1@physics", world.vid, world.run1)
    assert not who.is_super


def test_a_token_is_good_only_for_its_worker(world: World) -> None:
    id, token = world.delegate()
    e = raises(errno.EACCES, world.d.assume, W2, token)
    assert f"delegation {id} is for w1@physics, not w2@physics" in e.message
    raises(errno.EACCES, world.d.assume, W1, token[:-1] + ("0" if token[-1] != "0" else "1"))
    for bad in ("", "xfsd1", "xfsd1..", f"xfsd2.{id}.abc", "x" * 300, f"xfsd1.nope.{'0' * 64}"):
        raises(errno.EACCES, world.d.assume, W1, bad)
    assert parse_token(f" {token}\n") == tuple(token.split(".")[1:])
    world.d.assume(W1, token)  # the real one still works


def test_super_is_not_delegated(world: World) -> None:
    _, token = world.delegate(grantor=ROOT)
    who = world.acting(token)()
    assert who.principal == "root@physics" and who.role is Role.STANDARD and not who.is_super


def test_bad_delegations_are_refused(world: World) -> None:
    for grantee, lifetime, reason in [
        ("w1", HOUR, "not a user principal"),
        ("alice@physics", HOUR, "to itself"),
        ("w1@physics", 0, "lifetime"),
        ("w1@physics", 7 * 24 * HOUR + 1, "lifetime"),
    ]:
        e = raises(errno.EINVAL, world.delegate, grantee, lifetime)
        assert reason in e.message


def test_expiry_takes_effect_on_the_next_request(world: World) -> None:
    id, token = world.delegate(lifetime=HOUR)
    acting = world.acting(token)
    world.clock.t += HOUR - 1
    acting()
    world.clock.t += 1
    e = raises(errno.EACCES, acting)
    assert e.message == f"delegation {id} of alice@physics has expired"
    raises(errno.EACCES, world.d.assume, W1, token)


def test_revocation(world: World) -> None:
    id, token = world.delegate()
    acting = world.acting(token)
    for who in (BOB, CHEM_ROOT, W1):  # not the grantor, nor a super user of its VO
        e = raises(errno.EPERM, world.d.revoke, who, id)
        assert "only the grantor or a super user of VO 'physics'" in e.message
    acting()
    world.d.revoke(ALICE, id)
    world.d.revoke(ALICE, id)  # idempotent
    assert raises(errno.EACCES, acting).message == f"delegation {id} of alice@physics was revoked"
    raises(errno.EACCES, world.d.assume, W1, token)
    raises(errno.ENOENT, world.d.revoke, ALICE, "nope")
    # the super user of the grantor's VO may revoke too
    id2, token2 = world.delegate()
    world.d.revoke(ROOT, id2)
    raises(errno.EACCES, world.d.assume, W1, token2)
    # and it all survives a restart of the MRC
    again = Delegations(world.store, world.clock)
    again.load()
    assert again.get(id).revoked_ns is not None
    raises(errno.EACCES, again.assume, W1, token)


def test_list_shows_what_the_caller_may_manage(world: World) -> None:
    a, _ = world.delegate()
    b, _ = world.delegate(grantor=BOB, grantee="w2@physics")
    assert [d.id for d, _ in world.d.visible(ALICE)] == [a]
    assert [d.id for d, _ in world.d.visible(BOB)] == [b]
    assert sorted(d.id for d, _ in world.d.visible(ROOT)) == sorted([a, b])
    assert world.d.visible(CHEM_ROOT) == []
    assert {v for _, v in world.d.visible(ROOT)} == {V}


def test_ended_delegations_are_forgotten_after_a_week(world: World) -> None:
    old, _ = world.delegate(lifetime=HOUR)
    world.clock.t += 8 * 24 * HOUR
    new, _ = world.delegate()
    raises(errno.ENOENT, world.d.get, old)
    assert [d.id for d, _ in world.d.visible(ALICE)] == [new]


def test_deleting_the_volume_removes_its_delegations(world: World) -> None:
    id, token = world.delegate()
    world.ns.delete_volume(ROOT, V)
    world.d.load()
    raises(errno.ENOENT, world.d.get, id)
    raises(errno.EACCES, world.d.assume, W1, token)


# ------------------------------------------------------------------ confinement
def test_confined_to_the_delegated_directory(world: World) -> None:
    _, token = world.delegate()
    who = world.acting(token)()
    assert isinstance(who, Delegated)
    confine = world.d.confine
    confine(who, world.vid, [world.run1, world.sub, world.file])
    for ino in (ROOT_INO, world.jobs, world.other, world.secret):
        e = raises(errno.EACCES, confine, who, world.vid, [ino])
        assert f"inode {ino} is outside directory {world.run1} delegated to w1@physics" in (
            e.message)
    # the path down to the directory may be seen (getattr), not used
    confine(who, world.vid, [ROOT_INO, world.jobs], see=True)
    raises(errno.EACCES, confine, who, world.vid, [world.other], see=True)
    raises(errno.EACCES, confine, who, world.vid, [world.run1, world.other])
    raises(errno.EACCES, confine, who, "another-volume-id", [])


def test_a_file_is_inside_if_any_of_its_links_is(world: World) -> None:
    _, token = world.delegate()
    who = world.acting(token)()
    assert isinstance(who, Delegated)
    raises(errno.EACCES, world.d.confine, who, world.vid, [world.secret])
    world.ns.link(ALICE, V, world.secret, world.run1, b"link")
    world.d.confine(who, world.vid, [world.secret])
    world.ns.unlink(ALICE, V, world.run1, b"link")
    raises(errno.EACCES, world.d.confine, who, world.vid, [world.secret])


def test_moving_a_directory_out_takes_it_out_of_the_delegation(world: World) -> None:
    _, token = world.delegate()
    who = world.acting(token)()
    assert isinstance(who, Delegated)
    world.d.confine(who, world.vid, [world.sub])
    world.ns.rename(ALICE, V, world.run1, b"sub", world.other, b"sub")
    raises(errno.EACCES, world.d.confine, who, world.vid, [world.sub])
    # and a directory moved in comes under it
    world.ns.rename(ALICE, V, world.other, b"sub", world.run1, b"back")
    world.d.confine(who, world.vid, [world.sub])


def test_lookups_walk_the_path_down_only(world: World) -> None:
    _, token = world.delegate()
    who = world.acting(token)()
    assert isinstance(who, Delegated)
    look = world.d.confine_lookup
    for parent, name in [(ROOT_INO, b"jobs"), (world.jobs, b"run1"), (world.jobs, b".."),
                         (ROOT_INO, b"."), (world.run1, b"f"), (world.run1, b"nothing"),
                         (world.run1, b".."), (world.sub, b"x")]:
        look(who, world.vid, parent, name)
    for parent, name in [(ROOT_INO, b"secret"), (ROOT_INO, b"nothing"),
                         (world.jobs, b"other"), (world.other, b"x")]:
        raises(errno.EACCES, look, who, world.vid, parent, name)


# ------------------------------------------------------------------ store
def test_format_2_store_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "mrc.db"
    Store.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("DROP TABLE delegations; DROP TABLE dir_leases; DROP TABLE ino_ranges; "
                       "DROP TABLE usage; DROP TABLE quotas; "
                       "DROP TABLE xcap_keys; DROP TABLE draining; "
                       "UPDATE meta SET value = 2 WHERE key = 'format_version';")
    conn.close()
    with Store.open(path) as s:
        with s.read() as cur:
            version = cur.execute(
                "SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
            tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master")}
        assert version == FORMAT_VERSION == 7 and "delegations" in tables
        assert fsck.check(s) == []


def test_fsck_reports_a_bad_delegation(world: World) -> None:
    id, _ = world.delegate()
    raw = sqlite3.connect(world.store.path, isolation_level=None)
    cols = "expires_ns, secret, groups, revoked_ns, root"
    try:
        good = raw.execute(f"SELECT {cols} FROM delegations WHERE id = ?", (id,)).fetchone()
        for change in ("expires_ns = created_ns", "secret = x'00'", "groups = 'nope'",
                       "groups = '{}'", "revoked_ns = created_ns - 1", "root = 0"):
            raw.execute(f"UPDATE delegations SET {change} WHERE id = ?", (id,))
            assert fsck.check(world.store) == [f"delegation {id} is not valid"], change
            raw.execute(f"UPDATE delegations SET ({cols}) = (?, ?, ?, ?, ?) WHERE id = ?",
                        (*good, id))
            assert fsck.check(world.store) == []
    finally:
        raw.close()


# ------------------------------------------------------------------ token files
def test_token_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "job.token"
    write_token(path, "xfsd1.a.b")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_token(path) == "xfsd1.a.b"
    with pytest.raises(FileExistsError):
        write_token(path, "again")
    os.chmod(path, 0o644)
    assert raises(errno.EACCES, read_token, path)
    empty = tmp_path / "empty"
    write_token(empty, "")
    raises(errno.EINVAL, read_token, empty)
    raises(errno.ENOENT, read_token, tmp_path / "missing")


def test_a_delegation_mount_serves_its_own_uid_only() -> None:
    made: list[Any] = []

    class Store:
        def get(self, uid: int, groups: Any = None) -> Any:
            return f"credential of {uid}"

    async def factory(credential: Any) -> Any:
        made.append(credential)
        return credential

    async def main() -> None:
        with trio.fail_after(10):
            sessions = Sessions(cast(CredentialStore, Store()), factory, only_uid=1000)
            assert await sessions.get(1000) == "credential of 1000"
            with pytest.raises(XfsError) as e:
                await sessions.get(0)
            assert e.value.code == errno.EACCES and "serves uid 1000 only" in e.value.message
            assert made == ["credential of 1000"]

    trio.run(main)
