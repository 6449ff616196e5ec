"""``xfs ca``: create VO and service CAs, issue certificates, show what a certificate says."""

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
@click.option("--dir", "dir_", type=_DIR, required=True, help="Directory for ca.crt/ca.key.")
@click.option("--vo", required=True, help="The VO this CA vouches for.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True)
def init(dir_: Path, vo: str, days: int) -> None:
    """Create the CA of a VO."""
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
def show(cert_file: Path) -> None:
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
        f"not before:  {s.not_before.isoformat()}\n"
        f"not after:   {s.not_after.isoformat()}\n"
        f"fingerprint: sha256:{s.fingerprint.hex()}"
    )
