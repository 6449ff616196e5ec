"""`xfs delegate ...`: let a worker node act for you inside one directory (a batch job)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from xfs import embedded
from xfs.cli.admin import connection_options, run_mrc
from xfs.client import delegation as client
from xfs.proto.methods import DelegationInfo


def _where(spec: str, options: dict[str, Any]) -> tuple[str, str]:
    """(volume, path) of ``VOLUME:/PATH``, or of ``/PATH`` in the embedded grid's volume."""
    volume, colon, path = spec.partition(":")
    if colon:
        return volume, path or "/"
    if options.get("mrc_address"):
        raise click.ClickException(f"{spec}: name the volume, as VOLUME:/PATH")
    state = (options.get("state") or embedded.default_state()).absolute()
    grid_file = embedded.Layout(state).grid_file
    if not grid_file.exists():
        raise click.ClickException(f"no xfs grid in {state}; give VOLUME:/PATH and --mrc")
    return embedded.Grid.load(grid_file).volume, spec


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _state(d: DelegationInfo) -> str:
    if d.revoked is not None:
        return f"revoked {_when(d.revoked)}"
    return "expired" if d.expires <= time.time() else "in force"


@click.group("delegate")
def delegate() -> None:
    """Delegate a directory to a worker node for a batch job; list and revoke."""


@delegate.command("create")
@connection_options
@click.argument("path")
@click.option("--to", "grantee", required=True, help="The worker's principal, name@vo.")
@click.option("--hours", type=float, default=24.0, show_default=True, help="Lifetime.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the token to this new file (mode 0600) instead of printing it.",
)
def create(path: str, grantee: str, hours: float, out: Path | None, **options: Any) -> None:
    """Let the worker named by --to act as you inside directory PATH ([VOLUME:]/dir)."""
    volume, path = _where(path, options)
    if out is not None and out.exists():
        raise click.ClickException(f"{out} exists; the token goes to a new file")
    info = run_mrc(
        options,
        lambda pool, mrc: client.delegate(pool, mrc, volume, path, grantee, hours * 3600),
        own=True,
    )
    summary = (
        f"delegation {info.id}: {info.grantee} acts as {info.grantor} in "
        f"{volume}:{info.path} until {_when(info.expires)}"
    )
    if out is None:
        click.echo(summary, err=True)
        click.echo(info.token)
        return
    client.write_token(out, info.token)
    click.echo(f"{summary}; token in {out}")


@delegate.command("revoke")
@connection_options
@click.argument("id")
def revoke(id: str, **options: Any) -> None:
    """Revoke delegation ID (its grantor, or a super user of the grantor's VO)."""
    run_mrc(options, lambda pool, mrc: client.revoke(pool, mrc, id), own=True)
    click.echo(f"revoked delegation {id}")


@delegate.command("list")
@connection_options
def list_(**options: Any) -> None:
    """Your delegations (a super user: its VO's), in force or recently ended."""
    found = run_mrc(options, client.delegations, own=True)
    table = Table()
    for column in ("id", "grantor", "worker", "volume", "path", "expires", "state"):
        table.add_column(column, no_wrap=column in ("id", "expires"))
    for d in found:
        table.add_row(d.id, d.grantor, d.grantee, d.volume, d.path, _when(d.expires), _state(d))
    Console().print(table)
