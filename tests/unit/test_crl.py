"""CRLs: issuing and revoking on the CA side, the fail-closed checks on the trusting side."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from xfs import embedded
from xfs.cli.ca import ca as ca_cli
from xfs.common import ca, crl
from xfs.common.ca import CertPaths
from xfs.common.identity import TrustStore
from xfs.proto.errors import XfsError

NOW = dt.datetime.now(dt.UTC)
T = NOW.timestamp()


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is the start of each test, not of the session: certificates minted in a test
    are valid from (a minute before) the moment they are minted."""
    global NOW, T
    NOW = dt.datetime.now(dt.UTC)
    T = NOW.timestamp()


def der(cert: CertPaths | ca.Minted) -> bytes:
    c = cert.cert if isinstance(cert, ca.Minted) else ca.read_cert(cert.cert)
    return c.public_bytes(Encoding.DER)


def refused(store: TrustStore, cert: CertPaths | ca.Minted, now: float | None = None) -> str:
    with pytest.raises(XfsError) as e:
        store.identify(der(cert), now=now)
    assert e.value.code == errno.EACCES
    return e.value.message


def touch_later(path: Path) -> None:
    """Make sure a rewrite is seen even on a file system with coarse mtimes."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def cas(tmp_path: Path) -> tuple[Path, Path, Path]:
    physics, chem, services = tmp_path / "physics", tmp_path / "chem", tmp_path / "services"
    ca.init_vo_ca(physics, "physics")
    ca.init_vo_ca(chem, "chem")
    ca.init_service_ca(services)
    return physics, chem, services


def trust_of(*dirs: Path) -> TrustStore:
    return TrustStore.load([d / ca.CA_CERT for d in dirs])


# ----------------------------------------------------------------------------- layout
def test_crl_file_names() -> None:
    assert crl.crl_path(Path("/etc/xfs/physics/ca.crt")) == Path("/etc/xfs/physics/crl.pem")
    assert crl.crl_path(Path("/etc/xfs/trust/physics.crt")) == Path(
        "/etc/xfs/trust/physics.crl.pem"
    )
    assert crl.crl_path(Path("trust/bundle.pem")) == Path("trust/bundle.crl.pem")


def test_init_writes_an_empty_crl_and_an_index(cas: tuple[Path, Path, Path]) -> None:
    physics, _, _ = cas
    (c,) = crl.parse_crls((physics / ca.CA_CRL).read_bytes())
    assert list(c) == [] and c.is_signature_valid(ca.read_cert(physics / ca.CA_CERT).public_key())
    assert c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert c.next_update_utc is not None
    days = (c.next_update_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert 6.99 < days <= 7
    index = json.loads((physics / ca.CA_INDEX).read_text())
    assert index == {"v": 1, "crl_number": 1, "issued": [], "revoked": []}


def test_issue_records_serials(cas: tuple[Path, Path, Path], tmp_path: Path) -> None:
    physics, _, services = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    osd = ca.issue_service(
        services, ca.Kind.OSD, "0" * 8 + "-0000-4000-8000-" + "0" * 12, tmp_path / "s"
    )
    (entry,) = json.loads((physics / ca.CA_INDEX).read_text())["issued"]
    assert entry["serial"] == str(ca.read_cert(alice.cert).serial_number)
    assert entry["principal"] == "alice@physics" and entry["kind"] == "user"
    (entry,) = json.loads((services / ca.CA_INDEX).read_text())["issued"]
    assert entry["serial"] == str(ca.read_cert(osd.cert).serial_number)


# ----------------------------------------------------------------------------- revocation
def test_revoke_lists_the_serial_and_numbers_crls(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, _, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    serial = ca.read_cert(alice.cert).serial_number
    r, summary = ca.revoke(physics, serial=serial, days=3)
    assert (r.serial, r.principal, r.already) == (serial, "alice@physics", False)
    assert summary.number == 2 and summary.revoked == 1
    (c,) = crl.parse_crls(summary.path.read_bytes())
    assert [e.serial_number for e in c] == [serial]
    assert c.next_update_utc is not None
    assert abs((c.next_update_utc - NOW).total_seconds() - 3 * 86400) < 60
    again, summary = ca.revoke(physics, cert=alice.cert)
    assert again.already and again.at == r.at and summary.number == 3 and summary.revoked == 1
    assert ca.revoked_at(physics, serial) == r.at
    assert ca.revoked_at(physics, serial + 1) is None


def test_revoke_refuses_unknown_serials_and_foreign_certificates(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, chem, _ = cas
    with pytest.raises(XfsError) as e:
        ca.revoke(physics, serial=12345)
    assert e.value.code == errno.ENOENT and "--cert" in e.value.message
    carol = ca.issue_user(chem, "carol", tmp_path / "u")
    with pytest.raises(XfsError) as e:
        ca.revoke(physics, cert=carol.cert)
    assert e.value.code == errno.EINVAL and "not issued by" in e.value.message
    with pytest.raises(XfsError):
        ca.revoke(physics)
    assert json.loads((physics / ca.CA_INDEX).read_text())["revoked"] == []


def test_a_ca_made_before_crls_is_upgraded(cas: tuple[Path, Path, Path], tmp_path: Path) -> None:
    physics, _, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    for name in (ca.CA_INDEX, ca.CA_CRL):
        (physics / name).unlink()
    assert "CRL missing" in refused(trust_of(physics), alice)
    assert ca.write_crl(physics).number == 1
    assert trust_of(physics).identify(der(alice)).principal == "alice@physics"
    r, _ = ca.revoke(physics, cert=alice.cert)  # not in the new index: by file
    assert r.principal == "alice@physics"
    assert "certificate revoked" in refused(trust_of(physics), alice)


# ----------------------------------------------------------------------------- trust side
def test_revoked_certificate_is_refused_others_are_not(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, chem, services = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    bob = ca.issue_user(physics, "bob", tmp_path / "u")
    store = trust_of(physics, chem, services)
    r, _ = ca.revoke(physics, cert=alice.cert)
    touch_later(physics / ca.CA_CRL)
    assert store.reload() and store.generation == 1
    assert not store.reload() and store.generation == 1  # nothing changed since
    assert refused(store, alice) == (
        f"user alice@physics: certificate revoked (serial {r.serial}) by the CA of VO 'physics'"
    )
    assert store.identify(der(bob)).principal == "bob@physics"


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d, other: (d / ca.CA_CRL).unlink(), "CRL missing"),
        (lambda d, other: (d / ca.CA_CRL).write_text("not a CRL"), "CRL missing (not a PEM CRL"),
        (
            lambda d, other: shutil.copy(other / ca.CA_CRL, d / ca.CA_CRL),
            "wrong CRL (not signed by this CA)",
        ),
        (
            lambda d, other: ca.write_crl(d, days=1, now=NOW - dt.timedelta(days=2)),
            "CRL expired",
        ),
        (
            lambda d, other: ca.write_crl(d, days=1, now=NOW + dt.timedelta(hours=1)),
            "CRL not yet valid",
        ),
    ],
    ids=["missing", "garbage", "other-ca", "expired", "not-yet-valid"],
)
def test_a_ca_without_a_current_crl_vouches_for_nobody(
    cas: tuple[Path, Path, Path], tmp_path: Path, damage: object, reason: str
) -> None:
    physics, chem, services = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    carol = ca.issue_user(chem, "carol", tmp_path / "u")
    damage(physics, chem)  # type: ignore[operator]
    store = trust_of(physics, chem, services)
    message = refused(store, alice)
    assert message.startswith(f"user alice@physics: {reason}")
    assert "the CA of VO 'physics'" in message
    assert store.identify(der(carol)).principal == "carol@chem"


def test_forged_crl_with_the_cas_name_is_not_its_crl(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, _, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    impostor = ca.mint_vo_ca("physics")  # same subject, another key
    forged = ca.mint_crl(impostor, [], number=99)
    (physics / ca.CA_CRL).write_bytes(forged.public_bytes(Encoding.PEM))
    assert "wrong CRL" in refused(trust_of(physics), alice)
    # a genuine CRL next to the forged one in the same file is found
    ca.write_crl(physics)
    genuine = (physics / ca.CA_CRL).read_bytes()
    (physics / ca.CA_CRL).write_bytes(forged.public_bytes(Encoding.PEM) + genuine)
    assert trust_of(physics).identify(der(alice)).principal == "alice@physics"


def test_delta_crls_are_not_accepted(cas: tuple[Path, Path, Path], tmp_path: Path) -> None:
    physics, _, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    authority = ca.load_ca(physics)
    delta = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(NOW - dt.timedelta(minutes=1))
        .next_update(NOW + dt.timedelta(days=1))
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)
        .sign(authority.key, hashes.SHA256())
    )
    (physics / ca.CA_CRL).write_bytes(delta.public_bytes(Encoding.PEM))
    assert "delta or partitioned" in refused(trust_of(physics), alice)


def test_validity_window_follows_the_injected_clock(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, _, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    start = T + 3600
    ca.write_crl(physics, days=2, now=NOW + dt.timedelta(hours=1))
    now = [start]
    store = TrustStore.load([physics / ca.CA_CERT], clock=lambda: now[0])
    assert store.identify(der(alice)).principal == "alice@physics"
    now[0] = start + 2 * 86400 - 1
    assert store.identify(der(alice)).principal == "alice@physics"
    now[0] = start + 2 * 86400
    assert "CRL expired for the CA of VO 'physics'" in refused(store, alice)
    now[0] = start - 61  # thisUpdate is back-dated by a minute
    assert "CRL not yet valid for the CA of VO 'physics'" in refused(store, alice)
    now[0] = start - 59
    assert store.identify(der(alice)).principal == "alice@physics"


def test_in_memory_store_with_crls(cas: tuple[Path, Path, Path]) -> None:
    authority = ca.mint_vo_ca("alpha")
    user = ca.mint_user(authority, "alice")
    fresh = ca.mint_crl(authority, [], number=1, now=NOW)
    revoking = ca.mint_crl(authority, [(user.cert.serial_number, NOW)], number=2, now=NOW)
    assert TrustStore.from_certs([authority.cert], [fresh]).identify(der(user), now=T)
    assert "CRL missing" in refused(TrustStore.from_certs([authority.cert], []), user, T)
    assert "certificate revoked" in refused(
        TrustStore.from_certs([authority.cert], [fresh, revoking]), user, T
    )
    # without CRLs at all, revocation is not checked (tests and name-only tools)
    assert TrustStore.from_certs([authority.cert]).identify(der(user), now=T)


def test_identify_rereads_a_stale_crl_before_refusing(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, _, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    (physics / ca.CA_CRL).unlink()
    store = trust_of(physics)
    assert "CRL missing" in refused(store, alice)
    ca.write_crl(physics)
    assert store.identify(der(alice)).principal == "alice@physics"  # no explicit reload
    assert store.generation == 1


def test_trust_directory_with_a_bundle_and_its_crls(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, chem, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    carol = ca.issue_user(chem, "carol", tmp_path / "u")
    trust = tmp_path / "trust"
    trust.mkdir()
    bundle = trust / "vos.crt"
    bundle.write_bytes((physics / ca.CA_CERT).read_bytes() + (chem / ca.CA_CERT).read_bytes())
    assert crl.crl_path(bundle) == trust / "vos.crl.pem"
    (trust / "vos.crl.pem").write_bytes((physics / ca.CA_CRL).read_bytes())
    store = TrustStore.load([bundle])
    assert store.identify(der(alice)).principal == "alice@physics"
    assert "wrong CRL" in refused(store, carol)  # the file has a CRL, not one of chem's
    (trust / "vos.crl.pem").write_bytes(
        (physics / ca.CA_CRL).read_bytes() + (chem / ca.CA_CRL).read_bytes()
    )
    assert store.identify(der(carol)).principal == "carol@chem"


def test_an_unreadable_ca_file_drops_its_ca_until_fixed(
    cas: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    physics, chem, _ = cas
    alice = ca.issue_user(physics, "alice", tmp_path / "u")
    store = trust_of(physics, chem)
    saved = (physics / ca.CA_CERT).read_bytes()
    (physics / ca.CA_CERT).write_bytes(b"garbage")
    assert store.reload() and len(store.anchors) == 1
    assert "issuer is not a trusted CA" in refused(store, alice)
    (physics / ca.CA_CERT).write_bytes(saved)
    touch_later(physics / ca.CA_CERT)
    assert store.reload() and len(store.anchors) == 2
    assert store.identify(der(alice)).principal == "alice@physics"


# ----------------------------------------------------------------------------- the CLI
def run(*args: str | Path) -> Result:
    return CliRunner().invoke(ca_cli, [str(a) for a in args])


def test_cli_revoke_crl_and_show(tmp_path: Path) -> None:
    vo, out = tmp_path / "vo", tmp_path / "out"
    assert run("init", "--dir", vo, "--vo", "physics").exit_code == 0
    assert (vo / ca.CA_CRL).exists()
    for name in ("alice", "bob"):
        assert run("issue-user", "--ca", vo, "--name", name, "--out", out).exit_code == 0
    shown = run("show", out / "alice.crt", "--ca", vo)
    assert shown.exit_code == 0, shown.output
    serial = int(shown.output.split("serial:")[1].split()[0])
    assert "revoked:     no" in shown.output

    r = run("revoke", "--dir", vo, "--serial", hex(serial))
    assert r.exit_code == 0, r.output
    assert f"revoked: serial {serial} (alice@physics)" in r.output
    assert "CRL 2 (1 revoked)" in r.output
    r = run("revoke", "--dir", vo, "--cert", out / "bob.crt", "--days", "2")
    assert r.exit_code == 0 and "CRL 3 (2 revoked)" in r.output
    r = run("revoke", "--dir", vo, "--cert", out / "bob.crt")
    assert r.exit_code == 0 and "already revoked" in r.output
    assert "revoked:     20" in run("show", out / "alice.crt", "--ca", vo).output

    r = run("crl", "--dir", vo, "--days", "30")
    assert r.exit_code == 0, r.output
    assert "CRL 5 (2 revoked)" in r.output
    (c,) = crl.parse_crls((vo / ca.CA_CRL).read_bytes())
    assert c.next_update_utc is not None
    assert 29.9 < (c.next_update_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400 <= 30


@pytest.mark.parametrize(
    "args, message",
    [
        (("revoke", "--dir", "{vo}"), "exactly one of --serial and --cert"),
        (("revoke", "--dir", "{vo}", "--serial", "1", "--cert", "{vo}/ca.crt"), "exactly one"),
        (("revoke", "--dir", "{vo}", "--serial", "twelve"), "not a serial number"),
        (("revoke", "--dir", "{vo}", "--serial", "12"), "is not in"),
        (("revoke", "--dir", "{vo}", "--cert", "{vo}/ca.crt"), "is a CA certificate"),
        (("crl", "--dir", "{vo}", "--days", "0"), "--days"),
        (("crl", "--dir", "{vo}/nope"), "cannot read"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    vo = tmp_path / "vo"
    ca.init_vo_ca(vo, "physics")
    r = run(*(a.replace("{vo}", str(vo)) for a in args))
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output


# ----------------------------------------------------------------------------- embedded grid
def test_up_upgrades_an_embedded_state_made_before_crls(tmp_path: Path) -> None:
    layout = embedded.Layout(tmp_path / "state")
    services, vo = layout.ca_dirs
    ca.init_service_ca(services)
    ca.init_vo_ca(vo, embedded.VO)
    user = ca.issue_user(vo, "alice", tmp_path / "u")
    for d in (services, vo):  # as an older xfs left them
        (d / ca.CA_CRL).unlink()
        (d / ca.CA_INDEX).unlink()
    assert "CRL missing" in refused(TrustStore.load(layout.trust), user)
    embedded.refresh_crls(layout)
    assert TrustStore.load(layout.trust).identify(der(user)).principal == "alice@local"
    (c,) = crl.parse_crls((vo / ca.CA_CRL).read_bytes())
    assert c.next_update_utc is not None
    assert (c.next_update_utc - dt.datetime.now(dt.UTC)).days >= embedded.CRL_DAYS - 1
    embedded.refresh_crls(layout)  # and again at the next up
    (c,) = crl.parse_crls((vo / ca.CA_CRL).read_bytes())
    assert c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
