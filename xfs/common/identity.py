"""Who a certificate names: the identity extension, the naming rules, the trust store.

Every xfs certificate carries a private, non-critical extension (``XFS_IDENTITY_OID``)
whose value is canonical UTF-8 JSON (sorted keys, no spaces)::

    {"groups":["users@physics"],"kind":"user","principal":"alice@physics","role":"standard","v":1,"vo":"physics"}

It is parsed strictly: exactly these keys, exact types, canonical bytes, every name checked
by the rules below, and the subject must be ``CN=<principal>, O=<vo>``. The naming rules
are the only ones in xfs; ``xfs.common.ca`` checks them on issue with the same functions.

A peer's identity is trusted only through ``TrustStore.identify``, which also checks that
the CA that signed the certificate may vouch for it: a VO CA for users of its own VO only,
the service CA for OSDs and MRCs only; and that the certificate is not revoked by that CA's
CRL, which must be present and current (``xfs.common.crl`` says where it lives and what
fails closed). ``TrustStore.reload`` re-reads the CA files and CRLs whose mtime changed.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from xfs.common import crl
from xfs.proto.errors import XfsError
from xfs.proto.records import Identity, Kind, Role

log = logging.getLogger(__name__)

XFS_IDENTITY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.58888.1.1")
IDENTITY_VERSION = 1
SERVICES_VO = "services"  # the VO of OSDs, MRCs and the service CA; no VO CA may use it
MAX_PRINCIPAL = 64  # X.509 upper bound of a common name, and CN == principal
MAX_GROUPS = 256
MAX_EXTENSION_BYTES = 16384

_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}|[0-9]{1,10}")
_VO = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEYS = frozenset({"v", "kind", "principal", "vo", "role", "groups"})


class CertKind(enum.StrEnum):
    """The ``kind`` of an identity extension: the peer kinds of ``Kind`` plus the CAs."""

    USER = "user"
    MRC = "mrc"
    OSD = "osd"
    ADMIN = "admin"  # a grid operator (from the service CA): OSDs and the grid itself
    CA = "ca"  # a VO's CA: vouches for the users of its VO
    SERVICE_CA = "service-ca"  # vouches for OSDs and MRCs

    @property
    def is_ca(self) -> bool:
        return self in (CertKind.CA, CertKind.SERVICE_CA)


class Claims(NamedTuple):
    """The content of an identity extension, after the strict parse."""

    kind: CertKind
    principal: str
    vo: str
    role: Role
    groups: tuple[str, ...]


# ------------------------------------------------------------------ naming rules
def is_name(s: str) -> bool:
    """A local name: ``[a-z_][a-z0-9_.-]{0,63}``, or a numeric id of up to 10 digits."""
    return _NAME.fullmatch(s) is not None


def is_vo(s: str) -> bool:
    return _VO.fullmatch(s) is not None


def is_scoped(s: str, vo: str) -> bool:
    """``name@vo`` for exactly this VO (user principals and groups)."""
    name, at, rest = s.partition("@")
    return at == "@" and rest == vo and is_name(name) and len(s) <= MAX_PRINCIPAL


def is_uuid(s: str) -> bool:
    """A UUID in canonical form: lower-case hex, 8-4-4-4-12."""
    return _UUID.fullmatch(s) is not None


def service_principal(kind: Kind | CertKind, uuid: str) -> str:
    return f"{kind.value}:{uuid}"


def claims_problem(c: Claims) -> str | None:
    """Why ``c`` breaks the naming and kind rules, or None if it does not."""
    if not isinstance(c.kind, CertKind) or not isinstance(c.role, Role):
        return "bad kind or role"
    if not is_vo(c.vo):
        return f"bad VO name {c.vo!r:.80}"
    if len(c.groups) > MAX_GROUPS:
        return f"more than {MAX_GROUPS} groups"
    if len(set(c.groups)) != len(c.groups) or list(c.groups[1:]) != sorted(c.groups[1:]):
        return "groups must be unique: the primary group first, then the others sorted"
    if c.kind is CertKind.USER:
        if c.vo == SERVICES_VO:
            return f"VO {SERVICES_VO!r} is reserved for services"
        if not is_scoped(c.principal, c.vo):
            return f"bad user principal {c.principal!r:.80} for VO {c.vo!r}"
        for g in c.groups:
            if not is_scoped(g, c.vo):
                return f"bad group {g!r:.80}: groups are name@{c.vo}"
        return None
    if c.role is not Role.STANDARD or c.groups:
        return f"{c.kind.value} certificates have role standard and no groups"
    if c.kind in (CertKind.OSD, CertKind.MRC):
        kind_, colon, uuid = c.principal.partition(":")
        if c.vo != SERVICES_VO or kind_ != c.kind.value or not colon or not is_uuid(uuid):
            return f"bad {c.kind.value} principal {c.principal!r:.80} (VO {c.vo!r:.80})"
        return None
    if c.kind is CertKind.ADMIN:
        kind_, colon, name = c.principal.partition(":")
        if c.vo != SERVICES_VO or kind_ != "admin" or not colon or not is_name(name):
            return f"bad operator principal {c.principal!r:.80} (VO {c.vo!r:.80})"
        return None
    if c.kind is CertKind.CA:
        if c.vo == SERVICES_VO:
            return f"VO {SERVICES_VO!r} is reserved for the service CA"
    elif c.vo != SERVICES_VO:
        return f"the service CA has VO {SERVICES_VO!r}"
    if c.principal != c.kind.value:
        return f"{c.kind.value} certificates have principal {c.kind.value!r}"
    return None


# ------------------------------------------------------------------ the extension
def encode_claims(c: Claims) -> bytes:
    """The canonical extension value. Does not check the rules (see ``claims_problem``)."""
    return _canonical(
        {
            "v": IDENTITY_VERSION,
            "kind": c.kind.value,
            "principal": c.principal,
            "vo": c.vo,
            "role": c.role.value,
            "groups": list(c.groups),
        }
    )


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _refuse(reason: str) -> XfsError:
    return XfsError(errno.EACCES, f"identity extension: {reason}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def decode_claims(raw: bytes) -> Claims:
    """The strict parse of an extension value; ``XfsError(EACCES)`` on anything unexpected."""
    if len(raw) > MAX_EXTENSION_BYTES:
        raise _refuse("too long")
    try:
        obj = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError) as e:
        raise _refuse(f"not JSON ({e})") from None
    if not isinstance(obj, dict) or set(obj) != _KEYS:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise _refuse(f"expected exactly the keys {sorted(_KEYS)}, got {keys!s:.200}")
    v, groups = obj["v"], obj["groups"]
    if type(v) is not int or v != IDENTITY_VERSION:
        raise _refuse(f"unsupported version {v!r:.20}")
    for key in ("kind", "principal", "vo", "role"):
        if type(obj[key]) is not str:
            raise _refuse(f"{key} is not a string")
    if type(groups) is not list or any(type(g) is not str for g in groups):
        raise _refuse("groups is not a list of strings")
    if _canonical(obj) != raw:
        raise _refuse("not canonical JSON")
    try:
        kind, role = CertKind(obj["kind"]), Role(obj["role"])
    except ValueError:
        raise _refuse(f"unknown kind {obj['kind']!r:.40} or role {obj['role']!r:.40}") from None
    claims = Claims(kind, obj["principal"], obj["vo"], role, tuple(groups))
    problem = claims_problem(claims)
    if problem:
        raise _refuse(problem)
    return claims


def subject_for(c: Claims) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, c.vo),
            x509.NameAttribute(NameOID.COMMON_NAME, c.principal),
        ]
    )


def parse_identity_extension(cert: x509.Certificate) -> Claims:
    """The certificate's claims, strictly parsed, with its subject checked against them.

    This says what the certificate claims, not that anyone vouches for it: peers are
    identified with ``TrustStore.identify``.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(XFS_IDENTITY_OID)
    except x509.ExtensionNotFound:
        raise _refuse("missing") from None
    except ValueError as e:  # duplicate or malformed extensions
        raise _refuse(f"unreadable extensions ({e})") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise _refuse("unexpected value type")
    claims = decode_claims(ext.value.value)
    try:
        subject = cert.subject
    except ValueError as e:
        raise _refuse(f"unreadable subject ({e})") from None
    if subject != subject_for(claims):
        raise _refuse(
            f"subject {subject.rfc4514_string()!r:.200} is not CN={claims.principal},O={claims.vo}"
        )
    return claims


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the DER certificate: what an XCap names its holder by."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def to_identity(claims: Claims, fp: bytes) -> Identity:
    if claims.kind.is_ca:
        raise _refuse("a CA certificate names no peer")
    return Identity(
        principal=claims.principal,
        vo=claims.vo,
        kind=Kind(claims.kind.value),
        role=claims.role,
        groups=claims.groups,
        fingerprint=fp,
    )


def _check_validity(cert: x509.Certificate, now: float, what: str) -> None:
    if now < cert.not_valid_before_utc.timestamp():
        raise XfsError(errno.EACCES, f"{what} not valid before {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc.timestamp():
        raise XfsError(errno.EACCES, f"{what} expired at {cert.not_valid_after_utc}")


def _is_ca_cert(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


# ------------------------------------------------------------------ trust store
Stamp = tuple[int, int, int] | None  # (mtime_ns, size, inode) of a file; None: absent


@dataclass(frozen=True)
class TrustAnchor:
    cert: x509.Certificate
    claims: Claims
    revocation: crl.CRLState | None = None  # None: not checked (``from_certs`` without CRLs)

    @property
    def name(self) -> str:
        """How messages name this CA."""
        if self.claims.kind is CertKind.SERVICE_CA:
            return "the service CA"
        return f"the CA of VO {self.claims.vo!r}"


class TrustStore:
    """The CAs this process trusts (any number of VO CAs and service CAs) and their CRLs.

    Not thread-safe: identify and reload from one thread (the trio thread).
    """

    def __init__(
        self,
        anchors: Sequence[TrustAnchor],
        *,
        files: Sequence[Path] = (),
        stamps: dict[Path, Stamp] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._anchors = tuple(anchors)
        self._files = tuple(files)
        self._stamps = dict(stamps or {})
        self._clock = clock
        self.generation = 0  # how many times ``reload`` re-read the files

    @classmethod
    def from_certs(
        cls,
        certs: Iterable[x509.Certificate],
        crls: Iterable[x509.CertificateRevocationList] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> TrustStore:
        """A store of ``certs`` in memory.

        With ``crls`` (even none), every CA needs its current CRL among them. Without,
        revocation is not checked at all: for tests and tools that only check names. A
        process's trust always comes from ``load``, which always checks.
        """
        anchors = _anchors(certs)
        if crls is not None:
            found = list(crls)
            anchors = [replace(a, revocation=crl.state_for(a.cert, found)) for a in anchors]
        if not anchors:
            raise XfsError(errno.EINVAL, "a trust store needs at least one CA")
        return cls(anchors, clock=clock)

    @classmethod
    def load(cls, paths: Iterable[Path], *, clock: Callable[[], float] = time.time) -> TrustStore:
        """Read PEM CA certificate files (each may hold several certificates) and their CRLs.

        A bad CA file is an error. A missing or bad CRL is not: it is logged, and the CA
        vouches for nobody until it is fixed (``identify`` re-reads it before refusing).
        """
        files = tuple(Path(p) for p in paths)
        stamps = _stamps(files)  # taken before reading: a change while reading is seen later
        anchors = [anchor for path in files for anchor in _read_trust_file(path)]
        if not anchors:
            raise XfsError(errno.EINVAL, "a trust store needs at least one CA")
        return cls(anchors, files=files, stamps=stamps, clock=clock)

    def reload(self) -> bool:
        """Re-read every CA file and CRL if one changed (mtime, size or inode); True if so.

        A CA file that has become unreadable drops its CAs (their peers are refused) until
        it can be read again: the store never keeps what it read before.
        """
        stamps = _stamps(self._files)
        if not self._files or stamps == self._stamps:
            return False
        anchors: list[TrustAnchor] = []
        for path in self._files:
            try:
                anchors.extend(_read_trust_file(path))
            except XfsError as e:
                log.error("trust file %s dropped until it is fixed: %s", path, e.message)
        self._anchors, self._stamps = tuple(anchors), stamps
        self.generation += 1
        return True

    @property
    def anchors(self) -> tuple[TrustAnchor, ...]:
        return self._anchors

    def ssl_cafile_bundle(self) -> str:
        """All trusted CAs as PEM, for ``SSLContext.load_verify_locations(cadata=...)``."""
        return "".join(
            a.cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for a in self._anchors
        )

    def identify(self, der: bytes, *, now: float | None = None) -> Identity:
        """The identity of a peer from its leaf certificate (already verified by TLS).

        Checks again, independently of TLS: the issuing CA is one of ours (name and
        signature), it may vouch for this kind and VO, both are valid at ``now`` (unix
        seconds; the store's clock if None), and the CA's CRL is present, current and does
        not list the certificate. A missing or stale CRL makes the store re-read its files
        once (``reload``) before refusing. ``XfsError(EACCES)`` otherwise.
        """
        t = self._clock() if now is None else now
        try:
            return self._identify(der, t)
        except crl.StaleCRL:
            if not self.reload():
                raise
        return self._identify(der, t)

    def _identify(self, der: bytes, t: float) -> Identity:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise XfsError(errno.EACCES, f"unreadable peer certificate ({e})") from None
        claims = parse_identity_extension(cert)
        if claims.kind.is_ca or _is_ca_cert(cert):
            raise XfsError(errno.EACCES, "a CA certificate is not a peer identity")
        who = f"{claims.kind.value} {claims.principal}"
        _check_validity(cert, t, f"certificate of {who}")
        anchor = self._issuer_of(cert, who)
        _check_validity(anchor.cert, t, f"CA of {who}")
        if claims.kind is CertKind.USER:
            if anchor.claims.kind is not CertKind.CA or anchor.claims.vo != claims.vo:
                raise XfsError(
                    errno.EACCES,
                    f"{who} is signed by the CA of {anchor.claims.vo!r}, not of {claims.vo!r}",
                )
        elif anchor.claims.kind is not CertKind.SERVICE_CA:
            raise XfsError(errno.EACCES, f"{who} is not signed by the service CA")
        if anchor.revocation is not None:
            crl.check(anchor.revocation, cert.serial_number, t, anchor.name, peer=who)
        return to_identity(claims, fingerprint(cert))

    def _issuer_of(self, cert: x509.Certificate, who: str) -> TrustAnchor:
        named = False
        for anchor in self._anchors:
            if anchor.cert.subject != cert.issuer:
                continue
            named = True
            try:
                cert.verify_directly_issued_by(anchor.cert)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return anchor
        if named:
            raise XfsError(errno.EACCES, f"certificate of {who}: bad signature")
        raise XfsError(errno.EACCES, f"certificate of {who}: issuer is not a trusted CA")


def _anchors(certs: Iterable[x509.Certificate]) -> list[TrustAnchor]:
    anchors = []
    for cert in certs:
        try:
            claims = parse_identity_extension(cert)
        except XfsError as e:
            raise XfsError(errno.EINVAL, f"not an xfs CA certificate: {e.message}") from None
        if not claims.kind.is_ca or not _is_ca_cert(cert):
            raise XfsError(
                errno.EINVAL, f"{claims.principal} ({claims.vo}) is not a CA certificate"
            )
        anchors.append(TrustAnchor(cert, claims))
    return anchors


def _read_trust_file(path: Path) -> list[TrustAnchor]:
    """The CAs of one trust file, each with the state of its CRL (the file next to it)."""
    try:
        anchors = _anchors(x509.load_pem_x509_certificates(path.read_bytes()))
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise XfsError(errno.EINVAL, f"{path}: not PEM certificates ({e})") from None
    crl_file = crl.crl_path(path)
    try:
        found, problem = crl.parse_crls(crl_file.read_bytes()), ""
    except FileNotFoundError:
        found, problem = [], "CRL missing"
    except OSError as e:
        found, problem = [], f"CRL missing (unreadable: {e.strerror})"
    except ValueError as e:
        found, problem = [], f"CRL missing (not a PEM CRL: {e})"
    out = []
    for anchor in anchors:
        state = crl.CRLState.unavailable(problem) if problem else crl.state_for(anchor.cert, found)
        if state.problem:
            log.warning("%s vouches for nobody: %s (%s)", anchor.name, state.problem, crl_file)
        out.append(replace(anchor, revocation=state))
    return out


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _stamps(files: Sequence[Path]) -> dict[Path, Stamp]:
    return {p: _stamp(p) for f in files for p in (f, crl.crl_path(f))}


# ------------------------------------------------------------------ own credential
@dataclass(frozen=True)
class Credential:
    """A certificate and key pair on disk, and who it names (as it claims; not verified)."""

    cert_path: Path
    key_path: Path
    identity: Identity
    fingerprint: bytes


def load_credential(cert_path: Path, key_path: Path) -> Credential:
    """Read a PEM certificate and its PEM key; check the key matches and parse the claims."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise XfsError(e.errno or errno.EIO, f"cannot read {e.filename}: {e.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise XfsError(errno.EINVAL, f"{cert_path}: not a PEM certificate ({e})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise XfsError(errno.EINVAL, f"{key_path}: not an unencrypted PEM key ({e})") from None
    if key.public_key() != cert.public_key():
        raise XfsError(errno.EINVAL, f"{key_path} is not the key of {cert_path}")
    claims = parse_identity_extension(cert)
    fp = fingerprint(cert)
    return Credential(cert_path, key_path, to_identity(claims, fp), fp)
