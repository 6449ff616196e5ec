"""``xfs ca``: create VO and service CAs, issue and revoke certificates, write CRLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from xfs.common import ca as ca_lib
from xfs.proto.errors import XfsError
from xfs.proto.records import Kind, Role

T = TypeVar("T")

_DIR = click.Path(file_okay=False, path_type=Path)


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except XfsError as e:
        raise click.ClickException(e.message) from None


@click.group("ca")
def ca() -> None:
    """Certificate authorities: one per VO, one for services."""


@ca.command("init")
@click.option("--dir", "dir_", type=_DIR, required=True, help="Directory for the new CA.")
@click.option("--vo", required=True, help="The VO this CA vouches for.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
def init(dir_: Path, vo: str, days: int) -> None:
    """Create the CA of a VO (ca.crt, ca.key, and a first, empty CRL)."""
    cert = _run(lambda: ca_lib.init_vo_ca(dir_, vo, days=days))
    click.echo(f"created CA of VO {vo}: {cert}")


@ca.command("init-services")
@click.option("--dir", "dir_", type=_DIR, required=True, help="Directory for ca.crt/ca.key.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
def init_services(dir_: Path, days: int) -> None:
    """Create the service CA (vouches for OSDs and MRCs)."""
    cert = _run(lambda: ca_lib.init_service_ca(dir_, days=days))
    click.echo(f"created service CA: {cert}")


@ca.command("issue-user")
@click.option("--ca", "ca_dir", type=_DIR, required=True, help="The VO CA directory.")
@click.option("--name", required=True, help="Local name; the principal is NAME@VO.")
@click.option("--group", "groups", multiple=True, help="Group (NAME or NAME@VO); repeatable.")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.STANDARD.value,
    show_default=True,
)
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.option("--out", "out_dir", type=_DIR, required=True)
def issue_user(
    ca_dir: Path, name: str, groups: tuple[str, ...], role: str, days: int, out_dir: Path
) -> None:
    """Issue a user certificate."""
    paths = _run(lambda: ca_lib.issue_user(ca_dir, name, out_dir, groups, Role(role), days=days))
    click.echo(f"certificate: {paths.cert}\nkey: {paths.key}")


@ca.command("issue-operator")
@click.option("--ca", "ca_dir", type=_DIR, required=True, help="The service CA directory.")
@click.option("--name", required=True, help="Local name; the principal is admin:NAME.")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.option("--out", "out_dir", type=_DIR, required=True)
def issue_operator(ca_dir: Path, name: str, days: int, out_dir: Path) -> None:
    """Issue a grid operator's certificate: it drains and undrains OSDs and sees the
    grid's status, and administers no volume."""
    paths = _run(lambda: ca_lib.issue_operator(ca_dir, name, out_dir, days=days))
    click.echo(f"certificate: {paths.cert}\nkey: {paths.key}")


@ca.command("issue-service")
@click.option("--ca", "ca_dir", type=_DIR, required=True, help="The service CA directory.")
@click.option("--kind", type=click.Choice([Kind.OSD.value, Kind.MRC.value]), required=True)
@click.option("--uuid", "uuid_", required=True, help="The service's UUID (canonical form).")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="IP address or DNS name (repeatable; default 127.0.0.1 and localhost).",
)
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
@click.option("--out", "out_dir", type=_DIR, required=True)
def issue_service(
    ca_dir: Path, kind: str, uuid_: str, hosts: tuple[str, ...], days: int, out_dir: Path
) -> None:
    """Issue an OSD or MRC certificate."""
    paths = _run(
        lambda: ca_lib.issue_service(
            ca_dir, Kind(kind), uuid_, out_dir, hosts or ca_lib.DEFAULT_HOSTS, days=days
        )
    )
    click.echo(f"certificate: {paths.cert}\nkey: {paths.key}")


@ca.command("show")
@click.argument("cert_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ca", "ca_dir", type=_DIR, help="Also say whether this CA revoked it.")
def show(cert_file: Path, ca_dir: Path | None) -> None:
    """Print what a certificate says (its identity extension, parsed strictly)."""
    s = _run(lambda: ca_lib.describe(cert_file))
    c = s.claims
    click.echo(
        f"principal:   {c.principal}\n"
        f"vo:          {c.vo}\n"
        f"kind:        {c.kind.value}\n"
        f"role:        {c.role.value}\n"
        f"groups:      {', '.join(c.groups) or '-'}\n"
        f"issuer:      {s.issuer}\n"
        f"serial:      {s.serial}\n"
        f"not before:  {s.not_before.isoformat()}\n"
        f"not after:   {s.not_after.isoformat()}\n"
        f"fingerprint: sha256:{s.fingerprint.hex()}"
    )
    if ca_dir is not None:
        at = _run(lambda: ca_lib.revoked_at(ca_dir, s.serial))
        click.echo(f"revoked:     {at.isoformat() if at else 'no'}")


def _serial(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a serial number (decimal or 0x…)") from None


def _print_crl(s: ca_lib.CRLSummary) -> None:
    click.echo(
        f"CRL {s.number} ({s.revoked} revoked) written to {s.path}; "
        f"next update {s.next_update.isoformat()}"
    )


_CRL_DAYS = click.option(
    "--days",
    type=click.IntRange(min=1),
    default=ca_lib.CRL_DAYS,
    show_default=True,
    help="Days until the CRL's nextUpdate; re-issue it before then (xfs ca crl).",
)


@ca.command("revoke")
@click.option("--dir", "dir_", type=_DIR, required=True, help="The CA directory.")
@click.option("--serial", callback=_serial, help="Serial number (as xfs ca show prints it).")
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The certificate file.",
)
@_CRL_DAYS
def revoke(dir_: Path, serial: int | None, cert_file: Path | None, days: int) -> None:
    """Revoke a certificate and write the CA's new CRL."""
    if (serial is None) == (cert_file is None):
        raise click.UsageError("give exactly one of --serial and --cert")
    r, crl = _run(lambda: ca_lib.revoke(dir_, serial=serial, cert=cert_file, days=days))
    what = "already revoked" if r.already else "revoked"
    click.echo(f"{what}: serial {r.serial} ({r.principal or 'unknown principal'})")
    _print_crl(crl)


@ca.command("crl")
@click.option("--dir", "dir_", type=_DIR, required=True, help="The CA directory.")
@_CRL_DAYS
def crl(dir_: Path, days: int) -> None:
    """Re-issue the CA's CRL (run it from cron well within --days)."""
    _print_crl(_run(lambda: ca_lib.write_crl(dir_, days=days)))
