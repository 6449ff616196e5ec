"""Attack: administration across VOs, and of what all VOs share.

A chem super user used to drain an OSD that physics also uses, unaudited, with no way
back. Now every admin method has a scope (docs/design/roles.md): a VO's super user
administers its own VO's volumes; the OSDs need a grid operator's certificate
(``admin:<name>``, from the service CA), which in turn administers no volume; every
admin call is audited, allowed or not, and a drain can be undone.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from tests.conftest import PKI
from tests.rpc.ingrid import Grid, assert_denied_and_audited, open_grid, run_within
from xfs.common.ca import CertPaths
from xfs.common.rpc import Pool
from xfs.proto.methods import (
    MRC,
    Empty,
    Ino,
    OSDName,
    VolumeCreate,
    VolumeName,
    XattrSet,
)
from xfs.proto.records import Kind, Role

POLICY = b"xfs.policy"


def mrc(grid: Grid, pool: Pool, method: Any, request: Any) -> Any:
    return pool.call(grid.mrc_address, method, request, expect=Kind.MRC)


def admin_records(grid: Grid, marks: dict[str, int], action: str) -> list[dict[str, Any]]:
    return [r for _, r in grid.audit_since(marks)
            if r["event"] == "admin" and r["action"] == action]


def test_osds_are_the_grid_operators_and_volumes_their_vos(pki: PKI, tmp_path: Path) -> None:
    chem_super = pki.user("carol", Role.SUPER, vo_ca=pki.other_vo_ca)
    alice = pki.user("alice")
    ops: CertPaths = pki.operator("ops")

    async def main() -> None:
        async with open_grid(pki, tmp_path, osds=2) as grid, \
                grid.client(grid.root_user) as physics, grid.client(chem_super) as chem, \
                grid.client(alice) as user, grid.client(ops) as operator:
            await mrc(grid, physics, MRC.volume_create,
                      VolumeCreate("phys", owner="alice@physics", mode=0o755))
            osd = next(iter(grid.osd_addresses))

            async def serves() -> None:
                assert (await mrc(grid, user, MRC.getattr, Ino("phys", 1))).ino == 1

            # the OSDs: neither VO's super user, nor a user; the operator may
            for who, pool in (("root@physics", physics), ("carol@chem", chem),
                              ("alice@physics", user)):
                for method in (MRC.osd_drain, MRC.osd_undrain):
                    await assert_denied_and_audited(
                        grid, mrc(grid, pool, method, OSDName(osd)), actor=who,
                        action=method.wire_name, code=errno.EPERM,
                        reason="a grid operator's certificate", service="mrc",
                        still_serves=serves)
            marks = grid.audit_marks()
            await mrc(grid, operator, MRC.osd_drain, OSDName(osd))
            assert admin_records(grid, marks, "osd_drain")[0]["actor"] == "admin:ops"
            status = await mrc(grid, operator, MRC.status, Empty())  # the operator's view
            assert status.repair is not None and osd in status.repair.draining
            marks = grid.audit_marks()
            await mrc(grid, operator, MRC.osd_undrain, OSDName(osd))
            (undone,) = admin_records(grid, marks, "osd_undrain")
            assert undone["actor"] == "admin:ops" and undone["detail"]["was_draining"] is True
            status = await mrc(grid, operator, MRC.status, Empty())
            assert status.repair is not None and osd not in status.repair.draining
            # the operator administers no volume, and reads none
            await assert_denied_and_audited(
                grid, mrc(grid, operator, MRC.volume_create, VolumeCreate("ops-vol")),
                actor="admin:ops", action=MRC.volume_create.wire_name, code=errno.EPERM,
                reason="role super", service="mrc", still_serves=serves)
            await assert_denied_and_audited(
                grid, mrc(grid, operator, MRC.getattr, Ino("phys", 1)), actor="admin:ops",
                action=MRC.getattr.wire_name, code=errno.EPERM, service="mrc",
                still_serves=serves)
            # a VO's volumes: chem's super user is a standard user of physics's volume
            await assert_denied_and_audited(
                grid, mrc(grid, chem, MRC.volume_delete, VolumeName("phys")),
                actor="carol@chem", action=MRC.volume_delete.wire_name, code=errno.EPERM,
                service="mrc", still_serves=serves)
            await assert_denied_and_audited(
                grid, mrc(grid, chem, MRC.setxattr,
                          XattrSet("phys", 1, POLICY, b'{"replication": "none"}')),
                actor="carol@chem", action=MRC.setxattr.wire_name, code=errno.EPERM,
                service="mrc", still_serves=serves)
            # physics's super user sets the policy of physics's volume: allowed, audited
            marks = grid.audit_marks()
            await mrc(grid, physics, MRC.setxattr,
                      XattrSet("phys", 1, POLICY, b'{"replication": "none"}'))
            (policy,) = admin_records(grid, marks, "policy_set")
            assert policy["actor"] == "root@physics" and policy["detail"]["volume"] == "phys"

    run_within(60, main)
