"""Replication policies (xfs.mrc.policies): volume defaults, inheritance by directories,
new files' layouts, the virtual xattrs ``xfs.policy``, ``xfs.replicas``,
``xfs.replica.add|remove`` and ``xfs.seal``, seal on close, and the ``xfs policy`` and
``xfs replica`` commands. Every test ends with fsck of the store."""

from __future__ import annotations

import errno
import json
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from click.testing import CliRunner

from tests.unit.mrc_world import ALICE, BOB, ROOT, V, fsck_checked_store, raises
from xfs.cli.main import cli
from xfs.mrc import fsck, policies, replicas
from xfs.mrc.handlers import MRCHandlers
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.policies import Policies
from xfs.mrc.sql import MetaStore
from xfs.mrc.store import Store
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import Close, MkNod, VolumeCreate, XattrGet, XattrSet
from xfs.proto.records import (
    ROOT_INO,
    FilePolicy,
    Fill,
    Identity,
    PlacementPolicy,
    Role,
    StripingPolicy,
    UpdatePolicy,
    XLocSet,
)

GiB = 1 << 30
LEASE = 1000 * 10**9
OSDS = {f"osd-{i}": f"host-{i}" for i in range(1, 7)}  # six OSDs, each on its own host


class World:
    """A namespace, an OSD registry with six live OSDs, and the MRC's handlers."""

    def __init__(self, store: Store) -> None:
        self.ns = Namespace(store)
        self.ns.create_volume(
            ROOT, V, owner="alice@physics", group="users@physics", mode=0o777,
            striping=StripingPolicy(1 << 16, 1),
        )
        self.registry = OSDRegistry(store, lambda: 1000.0, dead_after=30.0)
        for uuid, host in OSDS.items():
            self.registry.heartbeat(uuid, f"{host}:32640", 10 * GiB, 100 * GiB, {"host": host})
        self.policies = Policies(store, self.ns, self.registry, random.Random(7))
        self.changes = 0
        self.h = MRCHandlers(
            self.ns, self.registry, cast(XCapIssuer, None), lambda: None, "mrc",
            random.Random(7), client_lease=LEASE / 1e9, policies=self.policies,
            on_xloc=self._changed,
        )

    def _changed(self) -> None:
        self.changes += 1

    # ------------------------------------------------------------ through the handlers
    def get(self, ino: int, name: bytes = policies.POLICY, who: Identity = ALICE) -> Any:
        return json.loads(run(self.h.getxattr, who, XattrGet(V, ino, name)).value)

    def set(self, ino: int, value: object, name: bytes = policies.POLICY,
            who: Identity = ALICE) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        run(self.h.setxattr, who, XattrSet(V, ino, name, raw))

    def mkdir(self, name: bytes, parent: int = ROOT_INO) -> int:
        return self.ns.mkdir(ALICE, V, parent, name, 0o755, 0).ino

    def mkfile(self, name: bytes, parent: int = ROOT_INO, who: Identity = ALICE) -> int:
        return run(self.h.mknod, who, MkNod(V, parent, name, 0o100644)).ino

    def xloc(self, ino: int) -> XLocSet:
        xloc = self.ns.open(ROOT, V, ino, os.O_RDONLY)[1]
        assert xloc is not None
        return xloc


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    async def main() -> Any:
        return await fn(*args)

    return trio.run(main)


@pytest.fixture
def store(store_spec: str | Path) -> Iterator[MetaStore]:
    yield from fsck_checked_store(store_spec)


@pytest.fixture
def w(store: Store) -> World:
    return World(store)


def osds(xloc: XLocSet) -> list[str]:
    return [u for r in xloc.replicas for u in r.osds]


# ---------------------------------------------------------------------- volumes
def test_a_volume_without_policy_keeps_todays_behaviour(w: World) -> None:
    assert w.get(ROOT_INO) == {
        "replication": "none", "factor": 1, "fill": "full", "seal_on_close": False,
        "stripe_size": 1 << 16, "width": 1,
        "placement": {"require": {}, "spread": "host", "sort": "free"},
    }
    xloc = w.xloc(w.mkfile(b"f"))
    assert xloc.update_policy is UpdatePolicy.NONE and xloc.factor == 1
    assert len(xloc.replicas) == 1 and xloc.replicas[0].striping == StripingPolicy(1 << 16, 1)
    assert w.get(w.mkfile(b"g"))["replication"] == "none"


def test_volume_create_stores_its_policy_on_the_root(w: World) -> None:
    policy = FilePolicy(UpdatePolicy.RW, 3, placement=PlacementPolicy(spread="rack"))
    run(w.h.volume_create, ROOT, VolumeCreate(
        "v2", "alice@physics", striping=StripingPolicy(1 << 20, 2), policy=policy))
    got = json.loads(run(w.h.getxattr, ALICE, XattrGet("v2", ROOT_INO, policies.POLICY)).value)
    assert (got["replication"], got["factor"], got["width"]) == ("rw", 3, 2)  # its striping
    vid = w.ns.get_volume("v2").id
    assert w.policies.placement_of(vid) == PlacementPolicy(spread="rack")
    assert w.policies.placement_of(w.ns.get_volume(V).id) == PlacementPolicy()


def test_volume_create_refuses_a_bad_policy(w: World) -> None:
    bad = FilePolicy(UpdatePolicy.NONE, 3)
    with pytest.raises(XfsError) as e:
        run(w.h.volume_create, ROOT, VolumeCreate("v3", "alice@physics", policy=bad))
    assert e.value.code == errno.EINVAL
    assert [v.name for v in w.ns.list_volumes()] == [V]  # nothing was created


# ---------------------------------------------------------------------- inheritance
def test_directories_inherit_a_copy_and_files_follow_their_directory(w: World) -> None:
    a = w.mkdir(b"a")
    w.set(a, {"replication": "rw", "factor": 2, "width": 2, "stripe_size": 1 << 20})
    b = w.mkdir(b"b", a)
    assert w.get(b) == w.get(a)
    w.set(a, {"factor": 3})  # a copy: b keeps what it inherited
    assert (w.get(a)["factor"], w.get(b)["factor"]) == (3, 2)
    assert w.get(ROOT_INO)["replication"] == "none"  # the volume is unchanged

    xloc = w.xloc(w.mkfile(b"f", b))
    assert (xloc.update_policy, xloc.factor) == (UpdatePolicy.RW, 2)
    assert [r.striping for r in xloc.replicas] == [StripingPolicy(1 << 20, 2)] * 2
    assert len(set(osds(xloc))) == 4  # two replicas of two columns, on four OSDs
    assert all(r.complete for r in xloc.replicas)
    assert replicas.missing(xloc) == 0
    f = w.get(w.mkfile(b"g", b))
    assert (f["replication"], f["factor"], f["width"]) == ("rw", 2, 2)


def test_a_directory_without_its_own_policy_follows_the_volume(w: World) -> None:
    d = w.mkdir(b"d")  # made before the volume had a policy: no copy
    w.set(ROOT_INO, {"replication": "rw", "factor": 3})
    assert w.get(d)["factor"] == 3
    xloc = w.xloc(w.mkfile(b"f", d))
    assert len(xloc.replicas) == 3 and len(set(osds(xloc))) == 3


def test_new_files_follow_a_policy_changed_after_files_were_made(w: World) -> None:
    """The policy of a directory's new files is kept between creates; a change of any
    policy (the directory's or the volume's) is seen by the next create."""
    d = w.mkdir(b"d")
    assert w.xloc(w.mkfile(b"f1", d)).update_policy is UpdatePolicy.NONE
    w.set(ROOT_INO, {"replication": "rw", "factor": 2})
    assert w.xloc(w.mkfile(b"f2", d)).factor == 2
    w.set(d, {"factor": 3})
    assert w.xloc(w.mkfile(b"f3", d)).factor == 3


def test_rw_with_fewer_osds_than_the_factor_gets_what_there_is(w: World) -> None:
    w.set(ROOT_INO, {"replication": "rw", "factor": 4, "width": 2})
    xloc = w.xloc(w.mkfile(b"f"))  # six OSDs: three replicas of two columns
    assert len(xloc.replicas) == 3 and replicas.missing(xloc) == 1


def test_unreplicated_files_narrow_when_fewer_osds_than_the_width(w: World) -> None:
    w.set(ROOT_INO, {"width": 8})
    xloc = w.xloc(w.mkfile(b"f"))
    assert xloc.replicas[0].striping.width == 6 and len(set(osds(xloc))) == 6


def test_placement_that_no_osd_fits_is_enospc(w: World) -> None:
    # the one OSD with the label is full: the policy can be held, just not now
    w.registry.heartbeat("ssd-osd", "h9:32640", 0, 100 * GiB, {"host": "h9", "ssd": "yes"})
    w.set(ROOT_INO, {"factor": 1, "placement": {"require": {"ssd": "yes"}}})
    with pytest.raises(XfsError) as e:
        w.mkfile(b"f")
    assert e.value.code == errno.ENOSPC


def test_the_stored_policy_is_not_listed_nor_an_ordinary_xattr(w: World) -> None:
    w.set(ROOT_INO, {"factor": 1})
    assert w.ns.listxattr(ALICE, V, ROOT_INO) == []
    raises(errno.EOPNOTSUPP, w.ns.removexattr, ALICE, V, ROOT_INO, policies.POLICY)


# ---------------------------------------------------------------------- file policies
def test_a_file_goes_from_none_to_rw_and_back(w: World) -> None:
    ino = w.mkfile(b"f")
    before = w.xloc(ino)
    w.set(ino, {"replication": "rw", "factor": 3})
    xloc = w.xloc(ino)
    assert (xloc.update_policy, xloc.factor, xloc.version) == (UpdatePolicy.RW, 3, 2)
    assert xloc.replicas == before.replicas and replicas.missing(xloc) == 2  # the healer
    assert w.changes == 1
    got = w.get(ino)
    assert (got["replication"], got["factor"]) == ("rw", 3)

    w.set(ino, {"replication": "none"})  # factor 1 goes with it
    xloc = w.xloc(ino)
    assert (xloc.update_policy, xloc.factor, len(xloc.replicas)) == (UpdatePolicy.NONE, 1, 1)


def test_rw_to_none_keeps_the_primary(w: World) -> None:
    w.set(ROOT_INO, {"replication": "rw", "factor": 3})
    ino = w.mkfile(b"f")
    primary = w.xloc(ino).replicas[0]
    w.set(ino, {"replication": "none"})
    assert w.xloc(ino).replicas == [primary]


def test_setting_the_same_policy_again_changes_nothing_but_the_version(w: World) -> None:
    w.set(ROOT_INO, {"replication": "rw", "factor": 2})
    ino = w.mkfile(b"f")
    before = w.xloc(ino)
    w.set(ino, w.get(ino))
    after = w.xloc(ino)
    assert after.replicas == before.replicas and after.version == before.version + 1


def test_striping_changes_only_while_the_file_is_empty_and_not_written(w: World) -> None:
    ino = w.mkfile(b"f")
    w.set(ino, {"width": 2, "stripe_size": 1 << 20})
    xloc = w.xloc(ino)
    assert xloc.replicas[0].striping == StripingPolicy(1 << 20, 2) and xloc.version == 2
    client, _ = w.ns.client_open(ALICE, LEASE)
    w.ns.open(ALICE, V, ino, os.O_WRONLY, client)
    with pytest.raises(XfsError) as e:
        w.set(ino, {"width": 3})
    assert e.value.code == errno.EBUSY
    w.ns.update_size(ALICE, V, ino, 10)
    w.ns.close(ALICE, V, ino, client)
    with pytest.raises(XfsError) as e:
        w.set(ino, {"width": 3})
    assert e.value.code == errno.EINVAL


def test_placement_of_a_file_is_its_volumes(w: World) -> None:
    ino = w.mkfile(b"f")
    with pytest.raises(XfsError) as e:
        w.set(ino, {"placement": {"spread": "rack"}})
    assert e.value.code == errno.EINVAL


def test_sealed_files_refuse_writes(w: World) -> None:
    ino = w.mkfile(b"f")
    w.set(ino, b"", name=policies.SEAL)
    assert w.xloc(ino).update_policy is UpdatePolicy.RONLY
    assert w.get(ino)["replication"] == "ronly"
    raises(errno.EPERM, w.ns.open, ALICE, V, ino, os.O_WRONLY)
    raises(errno.EPERM, w.ns.setattr, ALICE, V, ino, size=0)
    w.ns.open(ALICE, V, ino, os.O_RDONLY)  # reads go on
    for change in ({"replication": "rw"}, {"width": 2}):  # and it stays sealed
        with pytest.raises(XfsError) as e:
            w.set(ino, change)
        assert e.value.code == errno.EPERM
    assert w.xloc(ino).update_policy is UpdatePolicy.RONLY


def test_ronly_on_a_file_seals_it_now_and_grows_it_to_the_factor(w: World) -> None:
    ino = w.mkfile(b"f")
    w.set(ino, {"replication": "ronly", "factor": 3, "fill": "partial"})
    xloc = w.xloc(ino)
    assert (xloc.update_policy, xloc.fill, replicas.missing(xloc)) == (
        UpdatePolicy.RONLY, Fill.PARTIAL, 2)


# ---------------------------------------------------------------------- seal on close
def test_a_ronly_directory_seals_files_when_the_last_writer_closes(w: World) -> None:
    d = w.mkdir(b"d")
    w.set(d, {"replication": "ronly", "factor": 2, "seal_on_close": False})
    assert w.get(d)["seal_on_close"] is True  # what ronly does to new files
    a, _ = w.ns.client_open(ALICE, LEASE)
    b, _ = w.ns.client_open(ALICE, LEASE)
    ino = w.ns.create(ALICE, V, d, b"f", 0o644, os.O_WRONLY | os.O_CREAT, 0,
                      w.policies.place(V, d), a)[0].ino
    xloc = w.xloc(ino)
    assert (xloc.update_policy, xloc.factor, xloc.seal_on_close) == (UpdatePolicy.NONE, 2, True)
    assert (w.get(ino)["replication"], w.get(ino)["seal_on_close"]) == ("ronly", True)
    w.ns.open(ALICE, V, ino, os.O_WRONLY, b)
    run(w.h.close, ALICE, Close(V, ino, a))
    assert w.xloc(ino).update_policy is UpdatePolicy.NONE  # b still writes
    run(w.h.close, ALICE, Close(V, ino, b))
    xloc = w.xloc(ino)
    assert xloc.update_policy is UpdatePolicy.RONLY and not xloc.seal_on_close
    assert replicas.missing(xloc) == 1 and w.changes >= 1
    raises(errno.EPERM, w.ns.open, ALICE, V, ino, os.O_WRONLY)


def test_seal_on_close_can_be_called_off_and_set_on_a_file(w: World) -> None:
    w.set(ROOT_INO, {"replication": "ronly", "factor": 2})
    ino = w.mkfile(b"f")
    w.set(ino, {"seal_on_close": False})
    xloc = w.xloc(ino)
    assert (xloc.update_policy, xloc.factor, xloc.seal_on_close) == (UpdatePolicy.NONE, 1, False)
    w.set(ino, {"seal_on_close": True})
    assert w.xloc(ino).seal_on_close
    assert w.policies.seal_on_close(V, ino)
    assert w.xloc(ino).update_policy is UpdatePolicy.RONLY


# ---------------------------------------------------------------------- replicas
def test_replicas_are_listed_added_and_removed(w: World) -> None:
    w.set(ROOT_INO, {"replication": "rw", "factor": 2})
    ino = w.mkfile(b"f")
    info = w.get(ino, policies.REPLICAS)
    assert (info["policy"], info["factor"], info["version"]) == ("rw", 2, 1)
    assert [r["primary"] for r in info["replicas"]] == [True, False]
    assert all(r["complete"] and not r["incomplete"] for r in info["replicas"])
    used = osds(w.xloc(ino))
    assert info["addresses"] == {u: f"{OSDS[u]}:32640" for u in used}

    w.set(ino, b"", name=policies.REPLICA_ADD)  # placement chooses
    xloc = w.xloc(ino)
    (new,) = xloc.replicas[2].osds
    assert new not in used and xloc.replicas[2].incomplete == [new]
    assert w.changes == 1
    spare = next(u for u in OSDS if u not in {*used, new})
    w.set(ino, spare.encode(), name=policies.REPLICA_ADD)
    assert len(w.xloc(ino).replicas) == 4

    for value, code in [(used[0], errno.EEXIST), ("osd-99", errno.EINVAL),
                        (f"{spare},osd-1", errno.EINVAL)]:
        with pytest.raises(XfsError) as e:
            w.set(ino, value.encode(), name=policies.REPLICA_ADD)
        assert e.value.code == code, value

    w.set(ino, new.encode(), name=policies.REPLICA_REMOVE)
    assert new not in osds(w.xloc(ino))
    with pytest.raises(XfsError) as e:
        w.set(ino, new.encode(), name=policies.REPLICA_REMOVE)
    assert e.value.code == errno.ENOENT


def test_the_last_complete_replica_stays(w: World) -> None:
    w.set(ROOT_INO, {"replication": "rw", "factor": 1})
    ino = w.mkfile(b"f")
    (only,) = osds(w.xloc(ino))
    w.set(ino, b"", name=policies.REPLICA_ADD)  # incomplete: it does not count
    with pytest.raises(XfsError) as e:
        w.set(ino, only.encode(), name=policies.REPLICA_REMOVE)
    assert e.value.code == errno.EBUSY


def test_unreplicated_files_take_no_extra_replica(w: World) -> None:
    ino = w.mkfile(b"f")
    with pytest.raises(XfsError) as e:
        w.set(ino, b"", name=policies.REPLICA_ADD)
    assert e.value.code == errno.EINVAL


def test_directories_have_no_replicas(w: World) -> None:
    for name, value in [(policies.REPLICA_ADD, b""), (policies.SEAL, b"")]:
        with pytest.raises(XfsError) as e:
            w.set(ROOT_INO, value, name=name)
        assert e.value.code == errno.ENODATA
    with pytest.raises(XfsError) as e:
        w.get(ROOT_INO, policies.REPLICAS)
    assert e.value.code == errno.ENODATA
    with pytest.raises(XfsError) as e:  # write-only names read as absent
        w.get(ROOT_INO, policies.SEAL)
    assert e.value.code == errno.ENODATA


# ---------------------------------------------------------------------- who may
OUTSIDER = Identity("eve@chemistry", "chemistry", ROOT.kind, Role.SUPER, (), b"\0" * 32)


@pytest.mark.parametrize("name", [policies.POLICY, policies.REPLICA_ADD, policies.SEAL])
def test_only_the_owner_or_a_super_user_of_the_vo_may_set(w: World, name: bytes) -> None:
    w.set(ROOT_INO, {"replication": "rw", "factor": 2})
    ino = w.mkfile(b"f")
    value = b'{"factor": 3}' if name == policies.POLICY else b""
    for who in (BOB, OUTSIDER):  # a super user of another VO is standard here
        with pytest.raises(XfsError) as e:
            w.set(ino, value, name=name, who=who)
        assert e.value.code == errno.EPERM, who.principal
    w.set(ino, value, name=name, who=ROOT)
    w.set(ino, value, name=name, who=ALICE)


def test_reading_a_policy_needs_read_access(w: World) -> None:
    ino = w.mkfile(b"f")
    w.ns.setattr(ALICE, V, ino, mode=0o600)
    for name in (policies.POLICY, policies.REPLICAS):
        with pytest.raises(XfsError) as e:
            w.get(ino, name, who=BOB)
        assert e.value.code == errno.EACCES
        w.get(ino, name, who=ROOT)


# ---------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "value",
    [
        b"not json", b"\xff", b"[]", b'{"color": "red"}', b'{"factor": "3"}',
        b'{"factor": 0}', b'{"factor": 17}', b'{"factor": true}', b'{"replication": "rx"}',
        b'{"replication": "none", "factor": 3}', b'{"fill": "some"}',
        b'{"stripe_size": 1000}', b'{"width": 0}', b'{"seal_on_close": 1}',
        b'{"placement": []}', b'{"placement": {"near": "x"}}',
        b'{"placement": {"sort": "fast"}}', b'{"placement": {"spread": ""}}',
        b'{"placement": {"require": {"a": 1}}}',
    ],
)
def test_bad_policies_are_einval(w: World, value: bytes) -> None:
    d = w.mkdir(b"d")
    before = w.get(d)
    with pytest.raises(XfsError) as e:
        w.set(d, value)
    assert e.value.code == errno.EINVAL
    assert w.get(d) == before


def test_pure_round_trip() -> None:
    p = FilePolicy(UpdatePolicy.RW, 2, Fill.PARTIAL, True, StripingPolicy(1 << 20, 3),
                   PlacementPolicy({"dc": "a"}, "rack", "prefer:ssd=yes"))
    assert policies.merge(FilePolicy(), policies.parse(policies.to_json(p))) == p


def test_fsck_finds_a_policy_on_a_file(w: World, store: Store) -> None:
    ino = w.mkfile(b"f")
    vid = w.ns.get_volume(V).id
    with store.transaction() as cur:
        policies.write(cur, vid, ino, FilePolicy())
    assert any("policy: on a" in p for p in fsck.check(store))
    with store.transaction() as cur:
        cur.execute("DELETE FROM xattrs WHERE ino = ?", (ino,))


# ---------------------------------------------------------------------- the CLI
class FakeMount:
    """os.getxattr / os.setxattr of a mounted volume, for the commands."""

    def __init__(self, values: dict[str, bytes], fail: int = 0) -> None:
        self.values = values
        self.fail = fail
        self.sets: list[tuple[str, str, bytes]] = []

    def getxattr(self, path: str, name: str) -> bytes:
        if self.fail:
            raise OSError(self.fail, os.strerror(self.fail))
        return self.values[name]

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        if self.fail:
            raise OSError(self.fail, os.strerror(self.fail))
        self.sets.append((path, name, value))


@pytest.fixture
def mount(monkeypatch: pytest.MonkeyPatch) -> FakeMount:
    m = FakeMount({
        "xfs.policy": policies.to_json(FilePolicy(UpdatePolicy.RW, 3)),
        "xfs.replicas": policies.replicas_json(
            replicas.add(replicas.new_xloc(FilePolicy(UpdatePolicy.RW, 2), [["a"], ["b"]],
                                           StripingPolicy()), ["c"]),
            {"a": "h1:1", "b": "h2:1"},
        ),
        "xfs.osd_labels": json.dumps(
            [{"host": "h1", "dc": "a"}, {"host": "h2", "dc": "a"}, {"host": "h3", "dc": "b"}]
        ).encode(),
    })
    monkeypatch.setattr(os, "getxattr", m.getxattr)
    monkeypatch.setattr(os, "setxattr", m.setxattr)
    return m


def xfs(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_cli_policy_get_and_set(mount: FakeMount) -> None:
    r = xfs("policy", "get", "/m/d")
    assert r.exit_code == 0, r.output
    assert "rw, factor 3, fill full" in r.output and "1M stripes over 1 OSDs" in r.output
    assert json.loads(xfs("policy", "get", "/m/d", "--json").output)["factor"] == 3
    r = xfs("policy", "set", "/m/d", "--replication", "rw", "--factor", "2", "--stripe-size",
            "64K", "--no-seal-on-close", "--require", "dc=a", "--spread", "rack",
            "--sort", "prefer:ssd=yes")
    assert r.exit_code == 0, r.output
    ((path, name, value),) = mount.sets
    assert (path, name) == ("/m/d", "xfs.policy")
    assert json.loads(value) == {
        "replication": "rw", "factor": 2, "stripe_size": 1 << 16, "seal_on_close": False,
        "placement": {"require": {"dc": "a"}, "spread": "rack", "sort": "prefer:ssd=yes"},
    }
    assert xfs("policy", "set", "/m/d").exit_code != 0  # nothing to set
    assert xfs("policy", "set", "/m/d", "--stripe-size", "lots").exit_code != 0
    assert xfs("policy", "set", "/m/d", "--sort", "fast").exit_code != 0


@pytest.mark.parametrize(("args", "said"), [
    (("--require", "host=nowhere"),
     "no OSD carries host=nowhere; the OSDs carry dc=a, dc=b, host=h1, host=h2, host=h3"),
    (("--factor", "5"), "factor 5 needs 5 OSDs; the grid has 3: a factor of 1 to 3"),
    (("--require", "dc=a"), "factor 3 needs 3 OSDs with dc=a; the grid has 2: a factor of 1 to 2"),
    (("--stripe-size", "3K"), "stripe size 3072: a multiple of 4K from 4K to 64M"),
])
def test_cli_refuses_a_policy_the_grid_cannot_hold(
    mount: FakeMount, args: tuple[str, ...], said: str
) -> None:
    r = xfs("policy", "set", "/m/d", *args)
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert said in line, line
    assert mount.sets == []  # nothing sent


def test_cli_clears_required_labels(mount: FakeMount) -> None:
    assert xfs("policy", "set", "/m/d", "--no-require").exit_code == 0
    ((_, _, value),) = mount.sets
    assert json.loads(value) == {"placement": {"require": {}}}
    r = xfs("policy", "set", "/m/d", "--no-require", "--require", "dc=a")
    assert r.exit_code != 0


def test_the_mrc_refuses_a_policy_no_osd_can_hold(w: World) -> None:
    d = w.mkdir(b"placed")
    labels = w.get(d, policies.OSD_LABELS)
    assert len(labels) == 6 and all("host" in o for o in labels)
    for value in (
        {"replication": "rw", "factor": 7},
        {"placement": {"require": {"host": "nowhere"}}},
    ):
        with pytest.raises(XfsError) as e:
            w.set(d, value)
        assert e.value.code == errno.EINVAL
    with pytest.raises(XfsError, match="no OSD carries host=nowhere"):
        w.set(d, {"placement": {"require": {"host": "nowhere"}}})
    w.set(d, {"replication": "rw", "factor": 6})
    w.set(d, {"placement": {"require": {}}})


def test_cli_replica_commands(mount: FakeMount) -> None:
    r = xfs("replica", "list", "/m/f")
    assert r.exit_code == 0, r.output
    assert "primary" in r.output and "backup" in r.output and "filling" in r.output
    assert "h1:1" in r.output
    assert json.loads(xfs("replica", "list", "/m/f", "--json").output)["factor"] == 2
    assert xfs("replica", "add", "/m/f", "--osd", "x", "--osd", "y").exit_code == 0
    assert xfs("replica", "add", "/m/f").exit_code == 0
    assert xfs("replica", "remove", "/m/f", "--osd", "x").exit_code == 0
    assert xfs("replica", "seal", "/m/f").exit_code == 0
    assert [(n, v) for _, n, v in mount.sets] == [
        ("xfs.replica.add", b"x,y"), ("xfs.replica.add", b""),
        ("xfs.replica.remove", b"x"), ("xfs.seal", b"1"),
    ]


@pytest.mark.parametrize(("code", "shown"), [
    (errno.EBUSY, "EBUSY: Device or resource busy"),
    (errno.EOPNOTSUPP, "not in a mounted xfs volume"),
])
def test_cli_errors_are_one_line(mount: FakeMount, code: int, shown: str) -> None:
    mount.fail = code
    r = xfs("replica", "remove", "/m/f", "--osd", "a")
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert line.startswith("Error: /m/f: ") and shown in line
