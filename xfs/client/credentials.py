"""The per-user credential store of a mount: which certificate a local uid acts with.

Layout: ``<root>/<uid>/cert.pem`` and ``key.pem``; the key must be owned by that uid and
not readable by anyone else (0600), or the credential is refused. With an enrolment CA
(the embedded default) a local account without a credential is given one on first use:
principal ``<account>@<vo>``, its local groups as VO groups, and local root as the VO's
super user. Without one, a uid with no credential gets EACCES.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat
from pathlib import Path

from xfs.common.ca import issue_user
from xfs.common.identity import Credential, is_name, load_credential
from xfs.proto.errors import XfsError
from xfs.proto.records import Role

log = logging.getLogger(__name__)


def account_name(uid: int) -> str:
    """The grid name of a local uid: the account name if it is a valid name, else the number."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
    return name if is_name(name) else str(uid)


def group_name(gid: int) -> str:
    try:
        name = grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
    return name if is_name(name) else str(gid)


def local_groups(uid: int) -> list[str]:
    """The local groups of ``uid``, primary group first."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return [str(uid)]
    gids = [entry.pw_gid] + [
        g for g in os.getgrouplist(entry.pw_name, entry.pw_gid) if g != entry.pw_gid
    ]
    return [group_name(g) for g in gids]


class CredentialStore:
    def __init__(self, root: Path, *, enroll_ca: Path | None = None) -> None:
        self.root = root
        self.enroll_ca = enroll_ca

    def paths(self, uid: int) -> tuple[Path, Path]:
        d = self.root / str(uid)
        return d / "cert.pem", d / "key.pem"

    def get(self, uid: int) -> Credential:
        cert, key = self.paths(uid)
        if not cert.exists() and self.enroll_ca is not None:
            self._enroll(uid)
        if not cert.exists():
            raise XfsError(errno.EACCES, f"local uid {uid} has no xfs credential in {cert.parent}")
        self._check_private(uid, key)
        return load_credential(cert, key)

    @staticmethod
    def _check_private(uid: int, key: Path) -> None:
        st = key.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            raise XfsError(
                errno.EACCES, f"credential {key} must be a file owned by uid {uid} with mode 0600"
            )

    def _enroll(self, uid: int) -> None:
        assert self.enroll_ca is not None
        name = account_name(uid)
        role = Role.SUPER if uid == 0 else Role.STANDARD
        d = self.root / str(uid)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        issued = issue_user(self.enroll_ca, name, d, groups=local_groups(uid), role=role)
        issued.cert.replace(d / "cert.pem")
        issued.key.replace(d / "key.pem")
        gid = pwd.getpwuid(uid).pw_gid if _has_account(uid) else uid
        for p in (d, d / "cert.pem", d / "key.pem"):
            os.chown(p, uid, gid)
        os.chmod(d / "key.pem", 0o600)
        log.info("enrolled local uid %d as %s@... (%s)", uid, name, role)


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
