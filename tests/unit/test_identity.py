"""The identity extension's strict parse, the naming rules, and the trust store's checks."""

from __future__ import annotations

import datetime as dt
import errno
import json
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xfs.common import ca
from xfs.common.identity import (
    XFS_IDENTITY_OID,
    CertKind,
    Claims,
    TrustStore,
    decode_claims,
    encode_claims,
    is_name,
    is_scoped,
    is_vo,
    load_credential,
    parse_identity_extension,
)
from xfs.proto.errors import XfsError
from xfs.proto.records import Kind, Role

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
OSD_UUID = str(uuid.uuid4())


@pytest.fixture(scope="module")
def alpha() -> ca.Minted:
    return ca.mint_vo_ca("alpha")


@pytest.fixture(scope="module")
def beta() -> ca.Minted:
    return ca.mint_vo_ca("beta")


@pytest.fixture(scope="module")
def services() -> ca.Minted:
    return ca.mint_service_ca()


@pytest.fixture(scope="module")
def trust(alpha: ca.Minted, beta: ca.Minted, services: ca.Minted) -> TrustStore:
    return TrustStore.from_certs([alpha.cert, beta.cert, services.cert])


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def obj(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "v": 1,
        "kind": "user",
        "principal": "alice@alpha",
        "vo": "alpha",
        "role": "standard",
        "groups": ["users@alpha"],
    }
    base.update(changes)
    return base


def canon(o: object) -> bytes:
    return json.dumps(o, sort_keys=True, separators=(",", ":")).encode()


def craft(
    issuer: ca.Minted,
    raw: bytes | None,
    cn: str = "alice@alpha",
    o: str = "alpha",
    *,
    extra_subject: list[x509.NameAttribute] | None = None,
    not_before: dt.datetime | None = None,
    days: int = 30,
    is_ca: bool = False,
) -> x509.Certificate:
    """A certificate signed by ``issuer`` with any extension bytes and subject."""
    key = ec.generate_private_key(ec.SECP256R1())
    nb = not_before or NOW - dt.timedelta(minutes=1)
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        *(extra_subject or []),
    ]
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(nb + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if raw is not None:
        b = b.add_extension(x509.UnrecognizedExtension(XFS_IDENTITY_OID, raw), critical=False)
    return b.sign(issuer.key, hashes.SHA256())


def refused(exc: pytest.ExceptionInfo[XfsError], code: int = errno.EACCES) -> str:
    assert exc.value.code == code
    return exc.value.message


# ------------------------------------------------------------------ round trips
def test_issue_files_then_identify(tmp_path: Path) -> None:
    ca.init_vo_ca(tmp_path / "alpha", "alpha")
    ca.init_service_ca(tmp_path / "svc")
    user = ca.issue_user(
        tmp_path / "alpha", "alice", tmp_path / "out", groups=["users", "admins@alpha"]
    )
    osd = ca.issue_service(tmp_path / "svc", Kind.OSD, OSD_UUID, tmp_path / "out")
    assert (user.key.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "alpha" / "ca.key").stat().st_mode & 0o777) == 0o600
    trust = TrustStore.load([tmp_path / "alpha" / "ca.crt", tmp_path / "svc" / "ca.crt"])
    bundle = trust.ssl_cafile_bundle()
    assert bundle.count("BEGIN CERTIFICATE") == 2

    cert = x509.load_pem_x509_certificate(user.cert.read_bytes())
    who = trust.identify(der(cert))
    assert (who.principal, who.vo, who.kind, who.role) == (
        "alice@alpha",
        "alpha",
        Kind.USER,
        Role.STANDARD,
    )
    assert who.groups == ("users@alpha", "admins@alpha")  # primary first, then sorted
    assert who.fingerprint == cert.fingerprint(hashes.SHA256())

    osd_cert = x509.load_pem_x509_certificate(osd.cert.read_bytes())
    svc = trust.identify(der(osd_cert))
    assert (svc.principal, svc.vo, svc.kind) == (f"osd:{OSD_UUID}", "services", Kind.OSD)
    san = osd_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]

    cred = load_credential(user.cert, user.key)
    assert cred.identity == who and cred.fingerprint == who.fingerprint
    with pytest.raises(XfsError) as e:
        load_credential(user.cert, osd.key)
    refused(e, errno.EINVAL)


def test_ca_dir_is_never_overwritten(tmp_path: Path) -> None:
    ca.init_vo_ca(tmp_path, "alpha")
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(XfsError) as e:
        ca.init_vo_ca(tmp_path, "alpha")
    refused(e, errno.EEXIST)
    assert (tmp_path / "ca.key").read_bytes() == before


def test_mrc_and_numeric_user(trust: TrustStore, alpha: ca.Minted, services: ca.Minted) -> None:
    mrc = ca.mint_service(services, Kind.MRC, OSD_UUID, hosts=["10.0.0.1", "mrc.example"])
    assert trust.identify(der(mrc.cert)).principal == f"mrc:{OSD_UUID}"
    user = ca.mint_user(alpha, "1000", role=Role.SUPER)
    who = trust.identify(der(user.cert))
    assert who.principal == "1000@alpha" and who.is_super


# ------------------------------------------------------------------ naming rules
@pytest.mark.parametrize(
    "name",
    ["alice", "_x", "a.b-c_d", "0", "4294967295", "a" * 64],
)
def test_good_names(name: str) -> None:
    assert is_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alice",
        "al ice",
        "../x",
        "a/b",
        "a\nb",
        "alice\n",
        "a" * 65,
        "12345678901",
        ".hidden",
        "-x",
        "users,role=super",
        "a@b",
        "é",
        "a\x00",
    ],
)
def test_bad_names(name: str) -> None:
    assert not is_name(name)


def test_vo_and_scoped_rules() -> None:
    assert is_vo("alpha") and is_vo("0-x") and is_vo("a" * 63)
    for bad in ("", "Alpha", "-a", "a_b", "a.b", "a" * 64, "alpha\n"):
        assert not is_vo(bad)
    assert is_scoped("users@alpha", "alpha")
    for bad in ("users@beta", "users", "users@alpha@alpha", "@alpha", "a" * 60 + "@alpha"):
        assert not is_scoped(bad, "alpha")


# ------------------------------------------------------------------ the strict parse
def test_canonical_round_trip() -> None:
    c = Claims(CertKind.USER, "alice@alpha", "alpha", Role.ADVANCED, ("a@alpha", "b@alpha"))
    assert decode_claims(encode_claims(c)) == c
    assert decode_claims(canon(obj())) == Claims(
        CertKind.USER, "alice@alpha", "alpha", Role.STANDARD, ("users@alpha",)
    )


BAD_EXTENSIONS = {
    "extra key": canon(obj(admin=True)),
    "missing key": canon({k: v for k, v in obj().items() if k != "role"}),
    "v as string": canon(obj(v="1")),
    "v as bool": canon(obj(v=True)),
    "v 2": canon(obj(v=2)),
    "v float": canon(obj(v=1.0)),
    "groups as string": canon(obj(groups="users@alpha")),
    "group not a string": canon(obj(groups=[1])),
    "role not a string": canon(obj(role=1)),
    "principal null": canon(obj(principal=None)),
    "spaces": json.dumps(obj(), sort_keys=True).encode(),
    "unsorted keys": json.dumps(obj(), separators=(",", ":")).encode(),
    "unicode escape": canon(obj()).replace(b'"alice@', b'"\\u0061lice@'),
    "duplicate key": canon(obj())[:-1] + b',"vo":"alpha"}',
    "duplicate key overriding": canon(obj(role="standard")).replace(
        b'"role":"standard"', b'"role":"super","role":"standard"'
    ),
    "trailing newline": canon(obj()) + b"\n",
    "not utf-8": canon(obj()).replace(b"alice", b"al\xffce"),
    "not json": b"kind=user",
    "array": canon([obj()]),
    "nan": canon(obj()).replace(b'"v":1', b'"v":NaN'),
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "group of another vo": canon(obj(groups=["users@beta"])),
    "bare group": canon(obj(groups=["users"])),
    "groups unsorted": canon(obj(groups=["c@alpha", "b@alpha", "a@alpha"])),
    "groups repeated": canon(obj(groups=["a@alpha", "b@alpha", "a@alpha"])),
    "groups duplicated": canon(obj(groups=["a@alpha", "a@alpha"])),
    "principal of another vo": canon(obj(principal="alice@beta")),
    "uppercase": canon(obj(principal="Alice@alpha")),
    "space": canon(obj(principal="al ice@alpha")),
    "dot dot slash": canon(obj(principal="../x@alpha")),
    "newline": canon(obj(principal="al\nice@alpha")),
    "65 chars": canon(obj(principal="a" * 65 + "@alpha")),
    "principal over 64": canon(obj(principal="a" * 59 + "@alpha")),
    "comma injection in group": canon(obj(groups=["users,role=super@alpha"])),
    "injection in group vo": canon(obj(groups=["users@alpha,role=super"])),
    "bad vo": canon(obj(vo="Alpha", principal="alice@Alpha")),
    "unknown role": canon(obj(role="root")),
    "admin kind": canon(obj(kind="admin")),
    "unknown kind": canon(obj(kind="wizard")),
    "user in services vo": canon(obj(principal="alice@services", vo="services", groups=[])),
    "osd outside services": canon(
        obj(kind="osd", principal=f"osd:{OSD_UUID}", vo="alpha", groups=[])
    ),
    "osd with groups": canon(
        obj(kind="osd", principal=f"osd:{OSD_UUID}", vo="services", groups=["x@services"])
    ),
    "osd with role": canon(
        obj(kind="osd", principal=f"osd:{OSD_UUID}", vo="services", role="super", groups=[])
    ),
    "osd principal not a uuid": canon(
        obj(kind="osd", principal="osd:../../x", vo="services", groups=[])
    ),
    "osd uuid uppercase": canon(
        obj(kind="osd", principal=f"osd:{OSD_UUID.upper()}", vo="services", groups=[])
    ),
    "osd principal of an mrc": canon(
        obj(kind="osd", principal=f"mrc:{OSD_UUID}", vo="services", groups=[])
    ),
    "mrc without uuid": canon(obj(kind="mrc", principal="mrc", vo="services", groups=[])),
    "ca in services vo": canon(obj(kind="ca", principal="ca", vo="services", groups=[])),
    "ca with other principal": canon(obj(kind="ca", principal="root", groups=[])),
    "service ca in a vo": canon(obj(kind="service-ca", principal="service-ca", groups=[])),
}


@pytest.mark.parametrize("raw", BAD_EXTENSIONS.values(), ids=BAD_EXTENSIONS.keys())
def test_strict_parse_refuses(raw: bytes, alpha: ca.Minted) -> None:
    with pytest.raises(XfsError) as e:
        decode_claims(raw)
    refused(e)
    with pytest.raises(XfsError) as e:
        parse_identity_extension(craft(alpha, raw))
    refused(e)


def test_subject_must_match(alpha: ca.Minted) -> None:
    raw = canon(obj())
    assert parse_identity_extension(craft(alpha, raw)).principal == "alice@alpha"
    for cert in (
        craft(alpha, raw, cn="bob@alpha"),
        craft(alpha, raw, o="beta"),
        craft(
            alpha, raw, extra_subject=[x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x")]
        ),
        craft(alpha, raw, extra_subject=[x509.NameAttribute(NameOID.COMMON_NAME, "alice@alpha")]),
        craft(alpha, None),
    ):
        with pytest.raises(XfsError) as e:
            parse_identity_extension(cert)
        refused(e)


@pytest.mark.parametrize(
    "name, groups",
    [
        ("Alice", ()),
        ("al ice", ()),
        ("../x", ()),
        ("a\nb", ()),
        ("a" * 65, ()),
        ("a" * 59, ()),  # principal longer than a CN may be
        ("alice", ("users@beta",)),
        ("alice", ("users,role=super",)),
        ("alice", ("Users",)),
    ],
)
def test_issue_refuses_bad_names(alpha: ca.Minted, name: str, groups: tuple[str, ...]) -> None:
    with pytest.raises(XfsError) as e:
        ca.mint_user(alpha, name, groups=groups)
    refused(e, errno.EINVAL)


def test_issue_refuses_bad_cas_and_services(alpha: ca.Minted, services: ca.Minted) -> None:
    for call in (
        lambda: ca.mint_vo_ca("services"),
        lambda: ca.mint_vo_ca("Alpha"),
        lambda: ca.mint_vo_ca("a" * 64),
        lambda: ca.mint_user(services, "alice"),
        lambda: ca.mint_service(alpha, Kind.OSD, OSD_UUID),
        lambda: ca.mint_service(services, Kind.USER, OSD_UUID),
        lambda: ca.mint_service(services, Kind.OSD, "not-a-uuid"),
        lambda: ca.mint_service(services, Kind.OSD, OSD_UUID, hosts=["bad host"]),
        lambda: ca.mint_service(services, Kind.OSD, OSD_UUID, hosts=[]),
        lambda: ca.mint_user(alpha, "alice", days=0),
    ):
        with pytest.raises(XfsError) as e:
            call()
        refused(e, errno.EINVAL)


# ------------------------------------------------------------------ who may vouch for whom
def test_vo_ca_cannot_mint_users_of_another_vo(trust: TrustStore, beta: ca.Minted) -> None:
    forged = craft(beta, canon(obj()))  # alice@alpha, signed by beta's CA
    with pytest.raises(XfsError) as e:
        trust.identify(der(forged))
    assert "beta" in refused(e)


def test_vo_ca_cannot_mint_services(trust: TrustStore, alpha: ca.Minted) -> None:
    raw = canon(obj(kind="osd", principal=f"osd:{OSD_UUID}", vo="services", groups=[]))
    forged = craft(alpha, raw, cn=f"osd:{OSD_UUID}", o="services")
    with pytest.raises(XfsError) as e:
        trust.identify(der(forged))
    assert "service CA" in refused(e)


def test_service_ca_cannot_mint_users(trust: TrustStore, services: ca.Minted) -> None:
    with pytest.raises(XfsError) as e:
        trust.identify(der(craft(services, canon(obj()))))
    refused(e)


def test_untrusted_and_impostor_cas(trust: TrustStore, alpha: ca.Minted) -> None:
    gamma = ca.mint_vo_ca("gamma")
    with pytest.raises(XfsError) as e:
        trust.identify(der(ca.mint_user(gamma, "eve").cert))
    assert "not a trusted CA" in refused(e)
    impostor = ca.mint_vo_ca("alpha")  # same subject as the trusted alpha CA, other key
    with pytest.raises(XfsError) as e:
        trust.identify(der(ca.mint_user(impostor, "alice").cert))
    assert "signature" in refused(e)


def test_ca_certificate_is_not_a_peer(trust: TrustStore, alpha: ca.Minted) -> None:
    with pytest.raises(XfsError) as e:
        trust.identify(der(alpha.cert))
    refused(e)
    user_as_ca = craft(alpha, canon(obj()), is_ca=True)
    with pytest.raises(XfsError) as e:
        trust.identify(der(user_as_ca))
    refused(e)


def test_garbage_der(trust: TrustStore) -> None:
    with pytest.raises(XfsError) as e:
        trust.identify(b"\x30\x03\x02\x01\x00")
    refused(e)


def test_validity_with_injected_now() -> None:
    # a CA of its own, valid well before NOW: the module's CA is minted "now", which is
    # later than NOW when the suite has been running for a while
    alpha = ca.mint_vo_ca("alpha", not_before=NOW - dt.timedelta(days=10))
    trust = TrustStore.from_certs([alpha.cert])
    user = ca.mint_user(alpha, "alice", days=1, not_before=NOW)
    start = NOW.timestamp()
    trust.identify(der(user.cert), now=start)
    trust.identify(der(user.cert), now=start + 86400)
    for t in (start - 1, start + 86401):
        with pytest.raises(XfsError) as e:
            trust.identify(der(user.cert), now=t)
        refused(e)
    expired = ca.mint_user(alpha, "old", days=1, not_before=NOW - dt.timedelta(days=3))
    with pytest.raises(XfsError) as e:
        trust.identify(der(expired.cert))
    assert "expired" in refused(e)
    future = ca.mint_user(alpha, "new", days=1, not_before=NOW + dt.timedelta(days=3))
    with pytest.raises(XfsError) as e:
        trust.identify(der(future.cert))
    assert "not valid before" in refused(e)


def test_expired_ca_vouches_for_nobody() -> None:
    old = ca.mint_vo_ca("alpha", days=1, not_before=NOW - dt.timedelta(days=2))
    user = craft(old, canon(obj()), not_before=NOW - dt.timedelta(days=2), days=30)
    store = TrustStore.from_certs([old.cert])
    with pytest.raises(XfsError) as e:
        store.identify(der(user))
    assert "CA of" in refused(e)
    with pytest.raises(XfsError) as e:
        ca.mint_user(old, "alice")  # the CA no longer issues
    refused(e, errno.EINVAL)


def test_leaf_never_outlives_its_ca() -> None:
    short = ca.mint_vo_ca("alpha", days=10)
    user = ca.mint_user(short, "alice", days=365)
    assert user.cert.not_valid_after_utc == short.cert.not_valid_after_utc


def test_trust_store_takes_cas_only(tmp_path: Path, alpha: ca.Minted) -> None:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(ca.mint_user(alpha, "alice").cert_pem())
    with pytest.raises(XfsError) as e:
        TrustStore.load([leaf])
    refused(e, errno.EINVAL)
    with pytest.raises(XfsError) as e:
        TrustStore.load([tmp_path / "missing.pem"])
    refused(e, errno.ENOENT)
    both = tmp_path / "both.pem"
    both.write_bytes(alpha.cert_pem() + ca.mint_service_ca().cert_pem())
    assert len(TrustStore.load([both]).anchors) == 2
