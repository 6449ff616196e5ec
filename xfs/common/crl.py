"""Certificate revocation lists on the trusting side: where they live, and the pure checks.

Every trusted CA must have a current CRL, or nobody it vouches for is accepted (fail
closed). A CA is trusted by naming its certificate file in a process's ``trust`` list; its
CRL is the PEM file next to it:

    <dir>/ca.crt          ->  <dir>/crl.pem        (a CA directory, as ``xfs ca`` writes it)
    <dir>/<name>.<ext>    ->  <dir>/<name>.crl.pem (a trust directory holding several CAs)

A trust file holding several CA certificates has their CRLs concatenated in its CRL file.
A CRL belongs to the CA whose name it carries as issuer *and* whose key signed it. The
rules, checked by ``TrustStore.identify`` for the CA that issued a peer's certificate:

    no CRL file, or it cannot be read                 "CRL missing"
    no CRL in the file signed by this CA              "wrong CRL (not signed by this CA)"
    a delta or partitioned CRL, or no nextUpdate      "CRL unusable"
    now < thisUpdate                                  "CRL not yet valid"
    now >= nextUpdate                                 "CRL expired"
    the certificate's serial is listed                "certificate revoked (serial N)"

All refusals are ``XfsError(EACCES)`` whose message names the CA. The first five are
``StaleCRL``: a newer file on disk may cure them, so the trust store re-reads its files
once before refusing. Nothing here reads files or the clock; ``xfs.common.identity`` does.
"""

from __future__ import annotations

import datetime as dt
import errno
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from xfs.proto.errors import XfsError

CA_FILE = "ca.crt"
CRL_FILE = "crl.pem"
CRL_SUFFIX = ".crl.pem"

_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_PARTIAL = (ExtensionOID.DELTA_CRL_INDICATOR, ExtensionOID.ISSUING_DISTRIBUTION_POINT)


class StaleCRL(XfsError):
    """The CA's CRL is missing, foreign, unusable or outside its validity window."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)


def crl_path(ca_file: Path) -> Path:
    """Where the CRL of the CA certificate file ``ca_file`` is (see the module docstring)."""
    ca_file = Path(ca_file)
    if ca_file.name == CA_FILE:
        return ca_file.with_name(CRL_FILE)
    return ca_file.with_name(ca_file.stem + CRL_SUFFIX)


def parse_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every PEM CRL in ``data``; ValueError if there is none or one is malformed."""
    blocks = _PEM_CRL.findall(data)
    if not blocks:
        raise ValueError("no PEM CRL in the file")
    return [x509.load_pem_x509_crl(block) for block in blocks]


@dataclass(frozen=True)
class CRLState:
    """What a trust store knows of one CA's CRL: a usable CRL, or why there is none."""

    problem: str = ""  # empty when the CRL below is usable
    this_update: float = 0.0  # unix seconds
    next_update: float = 0.0
    number: int | None = None  # the CRLNumber extension, if any
    revoked: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def unavailable(cls, problem: str) -> CRLState:
        return cls(problem=problem)

    def describe(self) -> str:
        if self.problem:
            return self.problem
        until = dt.datetime.fromtimestamp(self.next_update, dt.UTC).isoformat()
        return f"CRL {self.number}, {len(self.revoked)} revoked, next update {until}"


def _usable(crl: x509.CertificateRevocationList) -> str:
    try:
        extensions = crl.extensions
    except ValueError as e:
        return f"CRL unusable (unreadable extensions: {e})"
    if any(ext.oid in _PARTIAL for ext in extensions):
        return "CRL unusable (a delta or partitioned CRL; xfs needs complete CRLs)"
    if crl.next_update_utc is None:
        return "CRL unusable (it has no nextUpdate)"
    return ""


def _number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (x509.ExtensionNotFound, ValueError):
        return None


def state_for(
    ca_cert: x509.Certificate, crls: Sequence[x509.CertificateRevocationList]
) -> CRLState:
    """The state of ``ca_cert``'s CRL among ``crls``: its newest one that it signed."""
    mine = []
    for crl in crls:
        if crl.issuer != ca_cert.subject:
            continue
        try:
            signed = crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError):
            signed = False
        if signed:
            mine.append(crl)
    if not mine:
        if not crls:
            return CRLState.unavailable("CRL missing")
        return CRLState.unavailable("wrong CRL (not signed by this CA)")
    crl = max(mine, key=lambda c: (c.last_update_utc, _number(c) or 0))
    problem = _usable(crl)
    if problem:
        return CRLState.unavailable(problem)
    assert crl.next_update_utc is not None  # _usable checked it
    return CRLState(
        this_update=crl.last_update_utc.timestamp(),
        next_update=crl.next_update_utc.timestamp(),
        number=_number(crl),
        revoked=frozenset(entry.serial_number for entry in crl),
    )


def check(state: CRLState, serial: int, now: float, ca_name: str, *, peer: str) -> None:
    """Refuse (``XfsError(EACCES)``) the certificate ``serial`` that ``ca_name`` issued to
    ``peer``, at ``now`` (unix seconds), if its CRL says so or cannot say."""
    if state.problem:
        raise StaleCRL(f"{peer}: {state.problem} for {ca_name}")
    if now < state.this_update:
        since = dt.datetime.fromtimestamp(state.this_update, dt.UTC).isoformat()
        raise StaleCRL(f"{peer}: CRL not yet valid for {ca_name} (thisUpdate {since})")
    if now >= state.next_update:
        until = dt.datetime.fromtimestamp(state.next_update, dt.UTC).isoformat()
        raise StaleCRL(f"{peer}: CRL expired for {ca_name} (nextUpdate {until})")
    if serial in state.revoked:
        raise XfsError(errno.EACCES, f"{peer}: certificate revoked (serial {serial}) by {ca_name}")
