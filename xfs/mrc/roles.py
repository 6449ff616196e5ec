"""Roles scoped to VOs: who a caller is on a volume, and who may administer what. Pure.

The usage levels of a user certificate (XWHEP's): ``super`` administers the volumes and
users of its own VO, ``advanced`` also sees the operator's views (``status``, the OSD
list), ``standard`` uses the file system, ``worker`` acts only under a delegation. A
volume belongs to the VO of its owner (``name@vo``). There is no global root: a super
user of another VO is a standard user on the volume, and ``effective`` is the one place
that says so, before any permission check (``perms`` only ever sees the result).
"""

from __future__ import annotations

import dataclasses

from xfs.common.identity import is_scoped, is_vo
from xfs.proto.records import Identity, Role

# what a worker acting under a delegation is at most: a delegation never carries the
# grantor's super (or advanced) powers
DELEGATED_ROLE = Role.STANDARD


def vo_of(principal: str) -> str:
    """The VO of a user principal or VO group ``name@vo`` ("" if it names none)."""
    name, at, vo = principal.rpartition("@")
    return vo if at and name and is_vo(vo) else ""


def effective(caller: Identity, volume_owner: str) -> Identity:
    """Who ``caller`` is on a volume owned by ``volume_owner``: a super user of another
    VO is a standard user there; everyone else is who the certificate says."""
    if caller.is_super and caller.vo != vo_of(volume_owner):
        return dataclasses.replace(caller, role=Role.STANDARD)
    return caller


def is_super_of(caller: Identity, vo: str) -> bool:
    return caller.is_super and bool(vo) and caller.vo == vo


def volume_create_denial(caller: Identity, owner: str, group: str) -> str | None:
    """Why ``caller`` may not create a volume for ``owner`` and ``group`` ("": the
    defaults, the caller and its first group), or None. Only a super user, and only for
    an owner and group of its own VO."""
    if not caller.is_super:
        return f"{caller.principal} (role {caller.role}) may not create volumes: needs super"
    owner = owner or caller.principal
    if vo_of(owner) != caller.vo:
        return (
            f"{caller.principal} is super of VO {caller.vo!r} only: "
            f"it may not create a volume for {owner!r}"
        )
    if group and vo_of(group) != caller.vo:
        return f"{caller.principal} is super of VO {caller.vo!r} only: group {group!r} is not"
    return None


def volume_delete_denial(caller: Identity, name: str, owner: str) -> str | None:
    """Why ``caller`` may not delete volume ``name`` owned by ``owner``, or None: only the
    super users of the volume's VO may."""
    if is_super_of(caller, vo_of(owner)):
        return None
    return (
        f"{caller.principal} (role {caller.role}, VO {caller.vo!r}) may not delete volume "
        f"{name!r}: it needs role super of VO {vo_of(owner)!r}"
    )


# ------------------------------------------------------------------------ delegations
def delegation_denial(
    grantor: Identity, grantee: str, lifetime: float, max_lifetime: float
) -> str | None:
    """Why a delegation of ``grantor`` to ``grantee`` for ``lifetime`` seconds is not
    valid, or None.

    The grantee is a user principal (the worker's certificate must name it, with role
    worker, when it presents the token) other than the grantor; the lifetime is positive
    and at most ``max_lifetime``. (Who may delegate is the method's authority; that the
    grantor may write the directory and acts under no delegation, the MRC checks.)
    """
    if not is_scoped(grantee, vo_of(grantee)):
        return f"grantee {grantee!r:.80} is not a user principal name@vo"
    if grantee == grantor.principal:
        return f"{grantee} may not delegate to itself"
    if not 0 < lifetime <= max_lifetime:
        return f"lifetime {lifetime:g} s: more than 0, at most {max_lifetime:g} s"
    return None


def may_manage_delegation(caller: Identity, grantor: str, grantor_vo: str) -> bool:
    """May ``caller`` see and revoke a delegation of ``grantor``: the grantor itself, or a
    super user of the grantor's VO."""
    return caller.principal == grantor or is_super_of(caller, grantor_vo)
