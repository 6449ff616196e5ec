"""Certificate authorities: a CA per VO, one for services, and the certificates they issue.

A CA lives in a directory holding:

    ca.crt        the CA certificate
    ca.key        its key (mode 0600)
    index.json    what it issued and revoked (below)
    crl.pem       its current CRL, signed by ca.key; what relying parties need next to
                  ca.crt (``xfs.common.crl``)
    index.lock    taken (flock) while the index and CRL are rewritten

Keys are EC P-256, signatures SHA-256. Every certificate carries the identity extension
(``xfs.common.identity``) and has the subject ``CN=<principal>, O=<vo>``; the naming rules
are checked here on issue and again on every parse.

``index.json`` is JSON (sorted keys), version 1::

    {"v": 1, "crl_number": 4,
     "issued": [{"serial": "<decimal>", "principal": "alice@physics", "kind": "user",
                 "not_after": "<ISO 8601 UTC>"}, ...],
     "revoked": [{"serial": "<decimal>", "at": "<ISO 8601 UTC>"}, ...]}

``crl_number`` is the number of the last CRL written (the CRLNumber extension increases
with every CRL). A CA directory made before revocation existed has no index: it reads as
empty, and its older certificates are revoked by file (``revoke(cert=...)``).

The ``mint_*`` functions work in memory (tests use them directly); ``init_*``, ``issue_*``,
``revoke`` and ``write_crl`` write files. ``init_*`` writes a first, empty CRL; every CRL is
valid from one minute ago (clock skew) for ``days`` (default 7): operators re-issue it
before then (``xfs ca crl`` from cron), or every relying party refuses the CA's peers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from xfs.common.identity import (
    SERVICES_VO,
    XFS_IDENTITY_OID,
    CertKind,
    Claims,
    claims_problem,
    encode_claims,
    fingerprint,
    parse_identity_extension,
    service_principal,
    subject_for,
)
from xfs.proto.errors import XfsError
from xfs.proto.records import Kind, Role

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_CRL = "crl.pem"  # xfs.common.crl.crl_path(<dir>/ca.crt)
CA_INDEX = "index.json"
CA_LOCK = "index.lock"
INDEX_VERSION = 1
CRL_DAYS = 7  # default validity of a CRL
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
BACKDATE = dt.timedelta(minutes=1)  # tolerate a peer's clock running slightly behind

_DNS = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Minted:
    """A certificate and its private key, in memory."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def claims(self) -> Claims:
        return parse_identity_extension(self.cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class CertSummary:
    claims: Claims
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: bytes
    issuer: str
    serial: int


@dataclass(frozen=True)
class CRLSummary:
    """A CRL just written: what ``xfs ca crl`` and ``xfs ca revoke`` print."""

    path: Path
    number: int
    revoked: int
    this_update: dt.datetime
    next_update: dt.datetime


@dataclass(frozen=True)
class Revocation:
    serial: int
    principal: str | None  # from the index or the certificate; None if neither says
    at: dt.datetime
    already: bool  # it had been revoked before


def _invalid(message: str) -> XfsError:
    return XfsError(errno.EINVAL, message)


def _checked(claims: Claims) -> Claims:
    problem = claims_problem(claims)
    if problem:
        raise _invalid(problem)
    return claims


def _window(
    not_before: dt.datetime | None, days: int, seconds: float | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """Valid from ``not_before`` (now, back-dated a little) for ``days``, or for ``seconds``
    (at least a minute) when given: the short-lived credentials a mount enrols."""
    if seconds is None and days < 1:
        raise _invalid(f"validity must be at least one day, not {days}")
    if seconds is not None and seconds < 60:
        raise _invalid(f"validity must be at least 60 s, not {seconds:g}")
    if not_before is None:
        not_before = dt.datetime.now(dt.UTC) - BACKDATE
    elif not_before.tzinfo is None:
        raise _invalid("not_before must be timezone-aware")
    if seconds is not None:
        return not_before, not_before + BACKDATE + dt.timedelta(seconds=seconds)
    return not_before, not_before + dt.timedelta(days=days)


def _build(
    claims: Claims,
    key: ec.EllipticCurvePrivateKey,
    issuer: Minted | None,
    window: tuple[dt.datetime, dt.datetime],
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> Minted:
    """Sign a certificate for ``key`` (self-signed when ``issuer`` is None)."""
    subject = subject_for(claims)
    public = key.public_key()
    not_before, not_after = window
    if issuer is None:
        signer, issuer_name, issuer_public = key, subject, public
    else:
        signer, issuer_name = issuer.key, issuer.cert.subject
        issuer_public = issuer.key.public_key()
        ca_end = issuer.cert.not_valid_after_utc
        not_after = min(not_after, ca_end)  # never outlive the CA
        if not_after <= not_before:
            raise _invalid(f"the CA expires at {ca_end}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
        )
        .add_extension(
            x509.UnrecognizedExtension(XFS_IDENTITY_OID, encode_claims(claims)), critical=False
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    minted = Minted(builder.sign(signer, hashes.SHA256()), key)
    if minted.claims != claims:  # the issuer obeys the same strict parse as every reader
        raise _invalid("issued certificate does not parse back")
    return minted


def _key_usage(*, sign: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(claims: Claims, days: int, not_before: dt.datetime | None) -> Minted:
    return _build(
        _checked(claims),
        ec.generate_private_key(ec.SECP256R1()),
        None,
        _window(not_before, days),
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage(sign=False, cert_sign=True), True),
        ],
    )


def _leaf_extensions(*usages: x509.ObjectIdentifier) -> list[tuple[x509.ExtensionType, bool]]:
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(sign=True, cert_sign=False), True),
        (x509.ExtendedKeyUsage(list(usages)), False),
    ]


def _require_ca(ca: Minted, kind: CertKind) -> Claims:
    claims = ca.claims
    if claims.kind is not kind:
        raise _invalid(f"{claims.principal} ({claims.vo}) is not a {kind.value} certificate")
    return claims


# ------------------------------------------------------------------ in memory
def mint_vo_ca(vo: str, *, days: int = 3650, not_before: dt.datetime | None = None) -> Minted:
    return _ca(Claims(CertKind.CA, CertKind.CA.value, vo, Role.STANDARD, ()), days, not_before)


def mint_service_ca(*, days: int = 3650, not_before: dt.datetime | None = None) -> Minted:
    claims = Claims(CertKind.SERVICE_CA, CertKind.SERVICE_CA.value, SERVICES_VO, Role.STANDARD, ())
    return _ca(claims, days, not_before)


def mint_user(
    ca: Minted,
    name: str,
    *,
    groups: Sequence[str] = (),
    role: Role = Role.STANDARD,
    days: int = 365,
    not_before: dt.datetime | None = None,
    seconds: float | None = None,
) -> Minted:
    """A user certificate ``name@vo``; bare group names get ``@vo`` appended; valid for
    ``days``, or ``seconds`` if given."""
    vo = _require_ca(ca, CertKind.CA).vo
    try:
        role = Role(role)
    except ValueError:
        raise _invalid(f"unknown role {role!r:.20}") from None
    named = [g if "@" in g else f"{g}@{vo}" for g in groups]
    # canonical order: the primary group (the first given) first, then the others sorted
    scoped = named[:1] + sorted(set(named[1:]) - set(named[:1]))
    claims = _checked(Claims(CertKind.USER, f"{name}@{vo}", vo, role, tuple(scoped)))
    return _build(
        claims,
        ec.generate_private_key(ec.SECP256R1()),
        ca,
        _window(not_before, days, seconds),
        _leaf_extensions(ExtendedKeyUsageOID.CLIENT_AUTH),
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not _DNS.fullmatch(host):
        raise _invalid(f"bad host name {host!r:.80}")
    return x509.DNSName(host)


def mint_service(
    ca: Minted,
    kind: Kind,
    uuid: str,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 3650,
    not_before: dt.datetime | None = None,
) -> Minted:
    """An OSD or MRC certificate, principal ``osd:<uuid>`` / ``mrc:<uuid>``."""
    _require_ca(ca, CertKind.SERVICE_CA)
    if kind not in (Kind.OSD.value, Kind.MRC.value):
        raise _invalid(f"services are osd or mrc, not {kind!s:.20}")
    ckind = CertKind(kind)
    claims = _checked(Claims(ckind, service_principal(ckind, uuid), SERVICES_VO, Role.STANDARD, ()))
    names = list(dict.fromkeys(_general_name(h) for h in hosts))
    if not names:
        raise _invalid("a service certificate needs at least one host")
    return _build(
        claims,
        ec.generate_private_key(ec.SECP256R1()),
        ca,
        _window(not_before, days),
        [
            *_leaf_extensions(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            (x509.SubjectAlternativeName(names), False),
        ],
    )


def mint_operator(
    ca: Minted, name: str, *, days: int = 365, not_before: dt.datetime | None = None
) -> Minted:
    """A grid operator's certificate, principal ``admin:<name>``, from the service CA:
    it administers what all VOs share (the OSDs), and nothing in any volume."""
    _require_ca(ca, CertKind.SERVICE_CA)
    claims = _checked(Claims(CertKind.ADMIN, f"admin:{name}", SERVICES_VO, Role.STANDARD, ()))
    return _build(
        claims,
        ec.generate_private_key(ec.SECP256R1()),
        ca,
        _window(not_before, days),
        _leaf_extensions(ExtendedKeyUsageOID.CLIENT_AUTH),
    )


# ------------------------------------------------------------------ files
def _write(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write a file atomically; with ``replace=False`` never overwrite (EEXIST)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise XfsError(errno.EEXIST, f"{path} exists; refusing to overwrite it") from None
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot write {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _store(minted: Minted, cert: Path, key: Path, *, replace: bool) -> CertPaths:
    _write(key, minted.key_pem(), 0o600, replace=replace)
    _write(cert, minted.cert_pem(), 0o644, replace=replace)
    return CertPaths(cert, key)


def _save_ca(dir: Path, minted: Minted) -> Path:
    dir = Path(dir)
    dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (CA_KEY, CA_CERT):
        if (dir / name).exists():
            raise XfsError(errno.EEXIST, f"{dir / name} exists; refusing to overwrite a CA")
    cert = _store(minted, dir / CA_CERT, dir / CA_KEY, replace=False).cert
    write_crl(dir)  # relying parties refuse a CA without a CRL
    return cert


def init_vo_ca(dir: Path, vo: str, days: int = 3650) -> Path:
    """Create the CA of ``vo`` in ``dir``; returns the path of its certificate."""
    return _save_ca(dir, mint_vo_ca(vo, days=days))


def init_service_ca(dir: Path, days: int = 3650) -> Path:
    return _save_ca(dir, mint_service_ca(days=days))


def read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise _invalid(f"{path}: not a PEM certificate ({e})") from None


def load_ca(ca_dir: Path) -> Minted:
    """Read a CA directory; checks that the key matches and that it is a CA."""
    ca_dir = Path(ca_dir)
    cert = read_cert(ca_dir / CA_CERT)
    try:
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot read {e.filename}: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise _invalid(f"{ca_dir / CA_KEY}: not an unencrypted PEM key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise _invalid(f"{ca_dir / CA_KEY} is not the key of {ca_dir / CA_CERT}")
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise _invalid(f"{ca_dir / CA_CERT} is not a CA certificate")
    except x509.ExtensionNotFound:
        raise _invalid(f"{ca_dir / CA_CERT} is not a CA certificate") from None
    return Minted(cert, key)


def issue_user(
    ca_dir: Path,
    name: str,
    out_dir: Path,
    groups: Sequence[str] = (),
    role: Role = Role.STANDARD,
    days: int = 365,
    not_before: dt.datetime | None = None,
    seconds: float | None = None,
) -> CertPaths:
    """Issue ``name@vo``; writes ``<out_dir>/<name>.crt`` and ``<name>.key`` (replacing)."""
    minted = mint_user(
        load_ca(ca_dir),
        name,
        groups=groups,
        role=role,
        days=days,
        not_before=not_before,
        seconds=seconds,
    )
    return _save_issued(ca_dir, minted, out_dir, name)


def issue_service(
    ca_dir: Path,
    kind: Kind,
    uuid: str,
    out_dir: Path,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 3650,
    not_before: dt.datetime | None = None,
) -> CertPaths:
    """Issue ``osd:<uuid>`` / ``mrc:<uuid>``; writes ``<out_dir>/<kind>-<uuid>.crt``/``.key``."""
    ca = load_ca(ca_dir)
    minted = mint_service(ca, kind, uuid, hosts=hosts, days=days, not_before=not_before)
    return _save_issued(ca_dir, minted, out_dir, f"{minted.claims.kind.value}-{uuid}")


def issue_operator(ca_dir: Path, name: str, out_dir: Path, days: int = 365) -> CertPaths:
    """Issue ``admin:<name>``; writes ``<out_dir>/admin-<name>.crt`` and ``.key``."""
    minted = mint_operator(load_ca(ca_dir), name, days=days)
    return _save_issued(ca_dir, minted, out_dir, f"admin-{name}")


def _save_issued(ca_dir: Path, minted: Minted, out_dir: Path, stem: str) -> CertPaths:
    """Note ``minted`` in the CA's index, and write ``<out_dir>/<stem>.crt``/``.key``."""
    _record_issued(Path(ca_dir), minted)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _store(minted, out_dir / f"{stem}.crt", out_dir / f"{stem}.key", replace=True)


def describe(cert_path: Path) -> CertSummary:
    """What ``xfs ca show`` prints: the claims (strictly parsed), validity, fingerprint."""
    cert = read_cert(cert_path)
    return CertSummary(
        claims=parse_identity_extension(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
    )


# ------------------------------------------------------------------ revocation
def mint_crl(
    ca: Minted,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    number: int,
    days: int = CRL_DAYS,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A complete CRL of ``ca`` listing ``revoked`` (serial, when), valid for ``days``."""
    if days < 1:
        raise _invalid(f"a CRL must be valid for at least one day, not {days}")
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        raise _invalid("now must be timezone-aware")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    for serial, at in sorted(revoked):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, hashes.SHA256())


@contextlib.contextmanager
def _locked(ca_dir: Path) -> Iterator[None]:
    """Serialise the writers of a CA's index and CRL (``xfs ca``, a mount enrolling users)."""
    try:
        fd = os.open(ca_dir / CA_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot lock {ca_dir}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_index(ca_dir: Path) -> dict[str, Any]:
    path = ca_dir / CA_INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:  # a CA made before revocation existed
        return {"v": INDEX_VERSION, "crl_number": 0, "issued": [], "revoked": []}
    except (OSError, ValueError) as e:
        raise _invalid(f"{path}: unreadable CA index ({e})") from None
    if (
        not isinstance(index, dict)
        or index.keys() != {"v", "crl_number", "issued", "revoked"}
        or index["v"] != INDEX_VERSION
        or type(index["crl_number"]) is not int
        or not isinstance(index["issued"], list)
        or not isinstance(index["revoked"], list)
    ):
        raise _invalid(f"{path}: not a version {INDEX_VERSION} CA index")
    return index


def _write_index(ca_dir: Path, index: dict[str, Any]) -> None:
    data = json.dumps(index, sort_keys=True, indent=1).encode() + b"\n"
    _write(ca_dir / CA_INDEX, data, 0o644, replace=True)


def _record_issued(ca_dir: Path, minted: Minted) -> None:
    claims = minted.claims
    now = dt.datetime.now(dt.UTC)
    with _locked(ca_dir):
        index = _read_index(ca_dir)
        # certificates past their validity need no index entry (a mount renews its users'
        # short-lived ones every half hour): the index holds what may still be revoked
        index["issued"] = [
            e for e in index["issued"] if dt.datetime.fromisoformat(e["not_after"]) > now
        ]
        index["issued"].append(
            {
                "serial": str(minted.cert.serial_number),
                "principal": claims.principal,
                "kind": claims.kind.value,
                "not_after": minted.cert.not_valid_after_utc.isoformat(),
            }
        )
        _write_index(ca_dir, index)


def _write_crl(
    ca_dir: Path, ca: Minted, index: dict[str, Any], days: int, now: dt.datetime | None
) -> CRLSummary:
    """Sign the next CRL from ``index`` and write it (the caller holds the lock)."""
    number = index["crl_number"] + 1
    revoked = [(int(r["serial"]), dt.datetime.fromisoformat(r["at"])) for r in index["revoked"]]
    crl = mint_crl(ca, revoked, number=number, days=days, now=now)
    index["crl_number"] = number  # first: a crash after it skips a number, never reuses one
    _write_index(ca_dir, index)
    _write(ca_dir / CA_CRL, crl.public_bytes(serialization.Encoding.PEM), 0o644, replace=True)
    assert crl.next_update_utc is not None
    return CRLSummary(
        ca_dir / CA_CRL, number, len(revoked), crl.last_update_utc, crl.next_update_utc
    )


def write_crl(ca_dir: Path, days: int = CRL_DAYS, now: dt.datetime | None = None) -> CRLSummary:
    """Re-issue the CRL of the CA in ``ca_dir`` (``crl.pem``), valid for ``days`` from ``now``."""
    ca_dir = Path(ca_dir)
    ca = load_ca(ca_dir)
    with _locked(ca_dir):
        return _write_crl(ca_dir, ca, _read_index(ca_dir), days, now)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def revoke(
    ca_dir: Path,
    *,
    serial: int | None = None,
    cert: Path | None = None,
    days: int = CRL_DAYS,
    now: dt.datetime | None = None,
) -> tuple[Revocation, CRLSummary]:
    """Revoke a certificate of this CA, by serial (it must be in the index) or by file
    (it must be signed by this CA), and write the new CRL. Revoking twice is harmless."""
    if (serial is None) == (cert is None):
        raise _invalid("revoke either a serial number or a certificate file")
    ca_dir = Path(ca_dir)
    ca = load_ca(ca_dir)
    principal: str | None = None
    if cert is not None:
        leaf = read_cert(cert)
        if _is_ca(leaf):
            raise _invalid(f"{cert} is a CA certificate: remove it from the trust lists instead")
        try:
            leaf.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise _invalid(f"{cert} was not issued by the CA in {ca_dir}") from None
        serial = leaf.serial_number
        with contextlib.suppress(XfsError):
            principal = parse_identity_extension(leaf).principal
    assert serial is not None
    when = now or dt.datetime.now(dt.UTC)
    with _locked(ca_dir):
        index = _read_index(ca_dir)
        issued = {int(e["serial"]): e for e in index["issued"]}
        if serial in issued:
            principal = issued[serial]["principal"]
        elif cert is None:
            raise XfsError(
                errno.ENOENT,
                f"serial {serial} is not in {ca_dir / CA_INDEX} (a certificate issued before "
                "the index existed is revoked with --cert FILE)",
            )
        before = {int(r["serial"]): r["at"] for r in index["revoked"]}
        if serial not in before:
            index["revoked"].append({"serial": str(serial), "at": when.isoformat()})
        summary = _write_crl(ca_dir, ca, index, days, now)
    at = dt.datetime.fromisoformat(before[serial]) if serial in before else when
    return Revocation(serial, principal, at, serial in before), summary


def revoked_at(ca_dir: Path, serial: int) -> dt.datetime | None:
    """When the CA in ``ca_dir`` revoked ``serial``, per its index; None if it did not."""
    for r in _read_index(Path(ca_dir))["revoked"]:
        if int(r["serial"]) == serial:
            return dt.datetime.fromisoformat(r["at"])
    return None
