"""The per-user credential store of a mount: which certificate a local uid acts with.

Layout: ``<root>/<uid>/cert.pem`` and ``key.pem``; the key must be owned by that uid and
not readable by anyone else (0600), or the credential is refused. With an enrolment CA
(the embedded default) a local account without a credential is given one on first use:
principal ``<account>@<vo>``, the groups of the process that first used it as VO groups,
and local root as the VO's super user. Without one, a uid with no credential gets EACCES.

With an enrolment CA the groups of the *calling process* count, as on Linux (see
docs/design/permissions.md): ``get(uid, groups)`` returns a credential that names exactly
those groups. That is the uid's own when its groups match; otherwise the store issues one
for that group set and keeps it in ``<root>/.groups/``, readable by the mount alone, so
that a group a process had only for a while (through root or a setgid program) never
ends up in a key its user could use outside the mount.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import logging
import os
import pwd
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from xfs.common.ca import issue_user, read_cert, revoke
from xfs.common.identity import (
    Credential,
    is_name,
    load_credential,
    parse_identity_extension,
)
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


CREDENTIAL_LIFETIME = 3600.0  # seconds an enrolled credential is valid; renewed at half


class CredentialStore:
    def __init__(
        self,
        root: Path,
        *,
        enroll_ca: Path | None = None,
        lifetime: float = CREDENTIAL_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.enroll_ca = enroll_ca
        self.lifetime = lifetime
        self._clock = clock

    @property
    def enrolls(self) -> bool:
        """Whether this store issues credentials (and so can follow a process's groups)."""
        return self.enroll_ca is not None

    def paths(self, uid: int) -> tuple[Path, Path]:
        d = self.root / str(uid)
        return d / "cert.pem", d / "key.pem"

    def get(self, uid: int, groups: Sequence[str] | None = None) -> Credential:
        """The credential local ``uid`` acts with.

        ``groups``: the calling process's groups as VO group names, its fsgid's first;
        with an enrolment CA the credential names exactly those (see the module doc).
        Without one they are ignored: a user-supplied certificate's groups are its own.
        """
        cert, key = self.paths(uid)
        if not cert.exists() and self.enroll_ca is not None:
            self._enroll(uid, groups)
        if not cert.exists():
            raise XfsError(errno.EACCES, f"local uid {uid} has no xfs credential in {cert.parent}")
        current = read_cert(cert)
        if self.enroll_ca is not None and not made_for(current, uid):
            # the account it was made for is gone and its uid now another's: that one
            # gets its own credential, and the old one no longer works anywhere
            self._retire(uid, cert)
            self._enroll(uid, groups)
            current = read_cert(cert)
        self._check_private(uid, key)
        own = load_credential(cert, key)
        if self.enroll_ca is not None and self._due(current):
            # renewed from the account database: a group the account left is gone from
            # it (the old one expires within the lifetime)
            self._enroll(uid, None)
            own = load_credential(cert, key)
        if groups is None or self.enroll_ca is None or same_groups(own.identity.groups, groups):
            return own
        return self._for_groups(uid, own, groups)

    def _due(self, c: x509.Certificate) -> bool:
        """Is an enrolled certificate past half its lifetime (or a long-lived one from
        before enrolled credentials were short-lived)?"""
        start, end = c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp()
        if end - start > 2 * self.lifetime + 120:
            return True
        return self._clock() >= start + (end - start) / 2

    def _retire(self, uid: int, cert: Path) -> None:
        """Revoke the certificate at ``cert`` at the enrolment CA (the MRC and the OSDs
        refuse it at their next CRL check) and move it out of the uid's place."""
        assert self.enroll_ca is not None
        old = read_cert(cert)
        with contextlib.suppress(XfsError):  # (not the enrolment CA's: nothing to revoke)
            revoke(self.enroll_ca, cert=cert)
        gone = self.root / ".retired"
        gone.mkdir(mode=0o700, exist_ok=True)
        os.chmod(gone, 0o700)
        (self.root / str(uid)).replace(gone / f"{uid}-{old.serial_number:x}")
        log.warning(
            "uid %d is now %s, not %s: its old credential was revoked",
            uid,
            account_name(uid),
            principal_of(old),
        )

    @staticmethod
    def _check_private(uid: int, key: Path) -> None:
        st = key.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
            raise XfsError(
                errno.EACCES, f"credential {key} must be a file owned by uid {uid} with mode 0600"
            )

    def _enroll(self, uid: int, groups: Sequence[str] | None) -> None:
        assert self.enroll_ca is not None
        name = account_name(uid)
        role = Role.SUPER if uid == 0 else Role.STANDARD
        d = self.root / str(uid)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        chosen = local_groups(uid) if groups is None else list(groups)
        issued = issue_user(
            self.enroll_ca, name, d, groups=chosen, role=role, seconds=self.lifetime
        )
        issued.key.replace(d / "key.pem")
        issued.cert.replace(d / "cert.pem")
        gid = pwd.getpwuid(uid).pw_gid if _has_account(uid) else uid
        for p in (d, d / "cert.pem", d / "key.pem"):
            os.chown(p, uid, gid)
        os.chmod(d / "key.pem", 0o600)
        log.info("enrolled local uid %d as %s@... (%s)", uid, name, role)

    def _for_groups(self, uid: int, own: Credential, groups: Sequence[str]) -> Credential:
        """A credential of ``own``'s principal and role naming ``groups``, issued once per
        group set and kept readable by this process alone."""
        assert self.enroll_ca is not None
        canonical = canonical_groups(groups)
        digest = hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:24]
        base = self.root / ".groups"
        base.mkdir(mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
        d = base / f"{uid}-{digest}"
        cert, key = d / "cert.pem", d / "key.pem"
        if cert.exists():
            self._check_private(os.geteuid(), key)
            found = load_credential(cert, key)
            if (
                found.identity.principal == own.identity.principal
                and same_groups(found.identity.groups, canonical)
                and not self._due(read_cert(cert))
            ):
                return found
        d.mkdir(mode=0o700, exist_ok=True)
        name = own.identity.principal.split("@", 1)[0]
        issued = issue_user(
            self.enroll_ca,
            name,
            d,
            groups=canonical,
            role=own.identity.role,
            seconds=self.lifetime,
        )
        issued.key.replace(key)
        os.chmod(key, 0o600)
        issued.cert.replace(cert)
        log.info("issued %s a credential for groups %s", own.identity.principal, canonical)
        return load_credential(cert, key)


def principal_of(cert: x509.Certificate) -> str:
    try:
        return parse_identity_extension(cert).principal
    except XfsError:
        return "?"


def made_for(cert: x509.Certificate, uid: int) -> bool:
    """Was an enrolled certificate made for the account that has ``uid`` now (its name)?"""
    return principal_of(cert).split("@", 1)[0] == account_name(uid)


def canonical_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """Groups as a certificate orders them: the primary first, then the others sorted."""
    first = tuple(groups[:1])
    return first + tuple(sorted(set(groups[1:]) - set(first)))


def same_groups(a: Sequence[str], b: Sequence[str]) -> bool:
    return canonical_groups(a) == canonical_groups(b)


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
