"""Roles scoped to VOs (xfs.mrc.roles) and the dispatcher's authority and assume rules."""

from __future__ import annotations

import dataclasses
import errno
from typing import Any

import pytest
import trio

from xfs.common.rpc import ConnState, Dispatcher, authorized
from xfs.mrc import perms, roles
from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC, OSD, Authority, Empty, Ino
from xfs.proto.records import Attr, Identity, Kind, Role

DEADLINE = 10


def user(principal: str, role: Role = Role.STANDARD, *groups: str) -> Identity:
    vo = principal.split("@")[1]
    return Identity(principal, vo, Kind.USER, role, groups, b"\1" * 32)


def service(kind: Kind) -> Identity:
    return Identity(f"{kind}:x", "services", kind, Role.STANDARD, (), b"\2" * 32)


ALICE = user("alice@alpha", Role.STANDARD, "users@alpha")
ADV = user("dave@alpha", Role.ADVANCED)
ALPHA_ROOT = user("root@alpha", Role.SUPER, "admins@alpha")
BETA_ROOT = user("root@beta", Role.SUPER, "admins@beta")
WORKER = user("w1@alpha", Role.WORKER)


def attr(owner: str, mode: int = 0o100600) -> Attr:
    return Attr(5, mode, 1, owner, "users@alpha", 0, 0, 0, 0)


# ------------------------------------------------------------------ effective roles
@pytest.mark.parametrize(
    ("principal", "vo"),
    [("alice@alpha", "alpha"), ("users@beta", "beta"), ("alice", ""), ("@alpha", ""),
     ("a@Bad_VO", ""), ("osd:123", "")],
)
def test_vo_of(principal: str, vo: str) -> None:
    assert roles.vo_of(principal) == vo


def test_super_is_super_only_on_volumes_of_its_vo() -> None:
    assert roles.effective(ALPHA_ROOT, "alice@alpha") is ALPHA_ROOT
    demoted = roles.effective(BETA_ROOT, "alice@alpha")
    assert demoted.role is Role.STANDARD and not demoted.is_super
    assert dataclasses.replace(demoted, role=Role.SUPER) == BETA_ROOT  # nothing else changed
    # perms never learns about VOs: the demoted identity simply has no privilege
    assert perms.may(ALPHA_ROOT, attr("alice@alpha"), perms.R_OK)
    assert not perms.may(demoted, attr("alice@alpha"), perms.R_OK)
    assert not perms.may_chown(demoted, attr("alice@alpha"), "root@beta", None)
    # an owner with no VO at all: nobody is super on that volume
    assert not roles.effective(ALPHA_ROOT, "nobody").is_super
    for who in (ALICE, ADV, WORKER):
        assert roles.effective(who, "bob@beta") is who


def test_volume_create_rules() -> None:
    assert roles.volume_create_denial(ALPHA_ROOT, "alice@alpha", "users@alpha") is None
    assert roles.volume_create_denial(ALPHA_ROOT, "", "") is None  # for itself
    assert "super of VO 'alpha' only" in str(
        roles.volume_create_denial(ALPHA_ROOT, "bob@beta", ""))
    assert "group 'users@beta'" in str(
        roles.volume_create_denial(ALPHA_ROOT, "alice@alpha", "users@beta"))
    for who in (ALICE, ADV, WORKER):
        assert "needs super" in str(roles.volume_create_denial(who, "", ""))


def test_volume_delete_rules() -> None:
    assert roles.volume_delete_denial(ALPHA_ROOT, "v", "alice@alpha") is None
    denial = roles.volume_delete_denial(BETA_ROOT, "v", "alice@alpha")
    assert denial is not None and "needs role super of VO 'alpha'" in denial
    for who in (ALICE, ADV):
        assert roles.volume_delete_denial(who, "v", who.principal) is not None


def test_delegation_rules() -> None:
    ok = roles.delegation_denial
    assert ok(ALICE, "w1@alpha", 3600, 7200) is None
    assert ok(ALICE, "w1@beta", 3600, 7200) is None  # a worker of another trusted VO
    assert "not a user principal" in str(ok(ALICE, "w1", 3600, 7200))
    assert "not a user principal" in str(ok(ALICE, "osd:1234", 3600, 7200))
    assert "to itself" in str(ok(ALICE, "alice@alpha", 3600, 7200))
    assert "lifetime" in str(ok(ALICE, "w1@alpha", 0, 7200))
    assert "lifetime" in str(ok(ALICE, "w1@alpha", 7201, 7200))
    assert roles.may_manage_delegation(ALICE, "alice@alpha", "alpha")
    assert roles.may_manage_delegation(ALPHA_ROOT, "alice@alpha", "alpha")
    assert not roles.may_manage_delegation(BETA_ROOT, "alice@alpha", "alpha")
    assert not roles.may_manage_delegation(ADV, "alice@alpha", "alpha")


# ------------------------------------------------------------------ authority
ALLOWED = {
    Authority.USER: {"standard", "advanced", "super"},
    Authority.ADVANCED: {"advanced", "super", "operator"},
    Authority.ADMIN: {"super"},
    Authority.OPERATOR: {"operator"},
    Authority.WORKER: {"worker"},
    Authority.HOLDER: {"standard", "advanced", "super", "worker"},
    Authority.USER_OR_MRC: {"standard", "advanced", "super", "worker", "mrc"},
    Authority.OSD: {"osd"},
    Authority.MRC: {"mrc"},
    Authority.ANY: {"standard", "advanced", "super", "worker", "mrc", "osd", "operator"},
}


@pytest.mark.parametrize("authority", list(Authority))
def test_authority_matrix(authority: Authority) -> None:
    peers = {r.value: user("x@alpha", r) for r in Role}
    peers |= {"mrc": service(Kind.MRC), "osd": service(Kind.OSD), "operator": service(Kind.ADMIN)}
    allowed = {name for name, peer in peers.items() if authorized(authority, peer)}
    assert allowed == ALLOWED[authority]


def test_methods_declare_the_role_they_need() -> None:
    assert MRC.volume_create.authority is Authority.ADMIN
    assert MRC.volume_delete.authority is Authority.ADMIN
    assert MRC.status.authority is MRC.osd_list.authority is Authority.ADVANCED
    assert MRC.assume.authority is Authority.WORKER
    assert MRC.osd_drain.authority is MRC.osd_undrain.authority is Authority.OPERATOR
    for m in (OSD.read, OSD.write, OSD.truncate, OSD.fsync, OSD.size):
        assert m.authority is Authority.HOLDER  # a worker's XCap works at the OSDs


# ------------------------------------------------------------------ the dispatcher
class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, str, dict[str, Any]]] = []

    def record(self, event: str, actor: str, action: str, outcome: str = "ok",
               **detail: Any) -> None:
        self.records.append((event, actor, action, outcome, detail))


def dispatcher() -> tuple[Dispatcher, Recorder, dict[str, Any]]:
    """A dispatcher with getattr (echoes who called) and an assume whose acting identity
    the test controls through ``state``."""
    rec = Recorder()
    d = Dispatcher(rec)
    state: dict[str, Any] = {"as": ALICE, "ended": False, "seen": []}

    async def getattr_(peer: Identity, req: Ino) -> Attr:
        state["seen"].append(peer)
        return attr(peer.principal)

    async def assume(peer: Identity, req: Any) -> tuple[Empty, Any]:
        await trio.sleep(0)

        def acting() -> Identity:
            if state["ended"]:
                raise XfsError(errno.EACCES, "delegation d1 of alice@alpha was revoked")
            return dataclasses.replace(state["as"], fingerprint=peer.fingerprint)

        return Empty(), acting

    d.register(MRC.getattr, getattr_)
    d.register_assume(MRC.assume, assume)  # type: ignore[arg-type]
    return d, rec, state


def run(fn: Any) -> None:
    async def bounded() -> None:
        with trio.fail_after(DEADLINE):
            await fn()

    trio.run(bounded)


def test_worker_acts_only_under_a_delegation() -> None:
    d, rec, state = dispatcher()

    async def main() -> None:
        conn = ConnState(WORKER)
        with pytest.raises(XfsError) as e:
            await d.dispatch(conn, MRC.getattr.wire_name, Ino("v", 1).to_wire())
        assert e.value.code == errno.EPERM
        assert "a worker acts only under a delegation (call mrc.assume/1 first)" in e.value.message
        assert rec.records[-1][:4] == ("deny", "w1@alpha", "mrc.getattr/1", "EPERM")
        # a standard user may not present a delegation
        with pytest.raises(XfsError) as e:
            await d.dispatch(ConnState(ALICE), MRC.assume.wire_name, {"token": "x"})
        assert e.value.code == errno.EPERM and "needs a user certificate of role worker" in (
            e.value.message)
        # after assume: the connection acts as the grantor, with the worker's fingerprint
        await d.dispatch(conn, MRC.assume.wire_name, {"token": "t"})
        await d.dispatch(conn, MRC.getattr.wire_name, Ino("v", 1).to_wire())
        acting = state["seen"][-1]
        assert acting.principal == "alice@alpha" and acting.fingerprint == WORKER.fingerprint
        # once per connection
        with pytest.raises(XfsError) as e:
            await d.dispatch(conn, MRC.assume.wire_name, {"token": "t"})
        assert e.value.code == errno.EPERM
        # the end of the delegation shows on the next request, audited with the worker
        state["ended"] = True
        with pytest.raises(XfsError) as e:
            await d.dispatch(conn, MRC.getattr.wire_name, Ino("v", 1).to_wire())
        assert e.value.code == errno.EACCES and "revoked" in e.value.message
        assert rec.records[-1][:4] == ("deny", "w1@alpha", "mrc.getattr/1", "EACCES")
        # another connection of the same worker never assumed anything
        with pytest.raises(XfsError) as e:
            await d.dispatch(WORKER, MRC.getattr.wire_name, Ino("v", 1).to_wire())
        assert e.value.code == errno.EPERM

    run(main)


def test_refusals_under_a_delegation_name_the_worker() -> None:
    d, rec, state = dispatcher()
    state["as"] = dataclasses.replace(ALICE, role=Role.STANDARD)

    async def main() -> None:
        conn = ConnState(WORKER)
        await d.dispatch(conn, MRC.assume.wire_name, {"token": "t"})
        d.register(MRC.volume_delete, lambda p, r: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(XfsError) as e:
            await d.dispatch(conn, MRC.volume_delete.wire_name, {"name": "v"})
        assert e.value.code == errno.EPERM and "it needs role super" in e.value.message
        event, actor, action, outcome, detail = rec.records[-1]
        assert (event, actor, action, outcome) == ("deny", "alice@alpha", "mrc.volume_delete/1",
                                                   "EPERM")
        assert detail["via"] == "w1@alpha"

    run(main)


def test_standard_user_is_told_the_role_needed() -> None:
    d, rec, _ = dispatcher()
    d.register(MRC.status, lambda p, r: None)  # type: ignore[arg-type,return-value]

    async def main() -> None:
        with pytest.raises(XfsError) as e:
            await d.dispatch(ALICE, MRC.status.wire_name, {})
        assert e.value.code == errno.EPERM
        assert e.value.message == (
            "alice@alpha (user/standard) may not call mrc.status/1: it needs role advanced "
            "or super, or a grid operator")
        assert rec.records[-1][:4] == ("deny", "alice@alpha", "mrc.status/1", "EPERM")

    run(main)

