"""The mount's credential store refuses keys that are not the uid's own and private."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.conftest import PKI
from xfs.client.credentials import CredentialStore
from xfs.common import ca
from xfs.proto.errors import XfsError

UID = 4242


def install(pki: PKI, root: Path, uid: int = UID) -> Path:
    d = root / str(uid)
    d.mkdir(parents=True)
    issued = ca.issue_user(pki.vo_ca, "carol", d, groups=("carol",))
    issued.cert.replace(d / "cert.pem")
    issued.key.replace(d / "key.pem")
    for p in (d / "cert.pem", d / "key.pem"):
        os.chown(p, uid, uid)
    os.chmod(d / "key.pem", 0o600)
    return d / "key.pem"


@pytest.fixture
def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another uid")


def test_a_private_key_of_the_uid_is_accepted(pki: PKI, tmp_path: Path, root_only: None) -> None:
    install(pki, tmp_path)
    assert CredentialStore(tmp_path).get(UID).identity.principal == "carol@physics"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_a_key_readable_by_others_is_refused(
    pki: PKI, tmp_path: Path, root_only: None, mode: int
) -> None:
    os.chmod(install(pki, tmp_path), mode)
    with pytest.raises(XfsError) as e:
        CredentialStore(tmp_path).get(UID)
    assert e.value.code == errno.EACCES and "mode 0600" in e.value.message


def test_a_key_of_another_owner_is_refused(pki: PKI, tmp_path: Path, root_only: None) -> None:
    os.chown(install(pki, tmp_path), 0, 0)
    with pytest.raises(XfsError) as e:
        CredentialStore(tmp_path).get(UID)
    assert e.value.code == errno.EACCES and f"owned by uid {UID}" in e.value.message


def test_a_symlinked_key_is_refused(pki: PKI, tmp_path: Path, root_only: None) -> None:
    key = install(pki, tmp_path)
    real = tmp_path / "elsewhere.pem"
    key.replace(real)
    key.symlink_to(real)
    with pytest.raises(XfsError) as e:
        CredentialStore(tmp_path).get(UID)
    assert e.value.code == errno.EACCES


def test_no_credential_and_no_enrolment_is_eacces(tmp_path: Path) -> None:
    with pytest.raises(XfsError) as e:
        CredentialStore(tmp_path).get(UID)
    assert e.value.code == errno.EACCES and "no xfs credential" in e.value.message


# ---------------------------------------------------------------- process group sets
def test_enrolment_takes_the_first_callers_groups(
    pki: PKI, tmp_path: Path, root_only: None
) -> None:
    """A uid with no passwd entry is enrolled with the groups of the process that first
    used the mount, not with a group named after its uid."""
    store = CredentialStore(tmp_path, enroll_ca=pki.vo_ca)
    own = store.get(61001, ("61002@physics", "61004@physics", "61003@physics"))
    assert own.identity.principal == "61001@physics"
    assert own.identity.groups == ("61002@physics", "61003@physics", "61004@physics")
    st = os.stat(tmp_path / "61001" / "key.pem")
    assert (st.st_uid, st.st_mode & 0o777) == (61001, 0o600)


def test_another_group_set_gets_a_credential_only_the_mount_can_read(
    pki: PKI, tmp_path: Path, root_only: None
) -> None:
    store = CredentialStore(tmp_path, enroll_ca=pki.vo_ca)
    own = store.get(61001, ("a@physics", "b@physics"))
    assert store.get(61001, ("a@physics", "b@physics")).fingerprint == own.fingerprint
    # the same set in another order is the same set; the primary group decides the order
    assert store.get(61001, ("a@physics", "b@physics")).identity.groups == own.identity.groups
    other = store.get(61001, ("b@physics", "c@physics", "a@physics"))
    assert other.identity.principal == own.identity.principal
    assert other.identity.groups == ("b@physics", "a@physics", "c@physics")
    assert other.identity.role == own.identity.role
    assert other.key_path.parent.parent == tmp_path / ".groups"
    st = other.key_path.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (os.geteuid(), 0o600)
    assert (tmp_path / ".groups").stat().st_mode & 0o777 == 0o700
    # issued once: asked again (also by a new store over the same directory), it is reused
    again = CredentialStore(tmp_path, enroll_ca=pki.vo_ca).get(
        61001, ("b@physics", "a@physics", "c@physics")
    )
    assert again.fingerprint == other.fingerprint


def test_without_enrolment_the_certificate_groups_count(
    pki: PKI, tmp_path: Path, root_only: None
) -> None:
    install(pki, tmp_path)
    got = CredentialStore(tmp_path).get(UID, ("wheel@physics",))
    assert got.identity.groups == ("carol@physics",)
