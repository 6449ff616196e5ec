"""``xfs audit``: check a service's hash-chained audit log and show its records."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from xfs.common import audit as audit_lib

_LOG = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("audit")
def audit() -> None:
    """Audit logs: every denial, admin operation, capability and certificate event."""


@audit.command("verify")
@click.argument("log", type=_LOG)
def verify(log: Path) -> None:
    """Check the hash chain of LOG and of its rotated files (LOG.<seq>), in order; name
    the first altered record."""
    verdict = audit_lib.verify(log)
    if not verdict.ok:
        raise click.ClickException(
            f"{verdict.bad_file or log}: record at line {verdict.bad_line} is not authentic: "
            f"{verdict.reason} ({verdict.records} records before it are intact)"
        )
    start = (
        ""
        if verdict.starts_at == 1
        else f" from record {verdict.starts_at} (older files were removed)"
    )
    click.echo(
        f"{log}: {verdict.records} records in {verdict.files} file(s){start}, chain intact, "
        f"last hash {verdict.last_hash}"
    )


@audit.command("show")
@click.argument("log", type=_LOG)
@click.option("--event", type=click.Choice(sorted(audit_lib.EVENTS)), help="Only this event.")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N records.")
def show(log: Path, event: str | None, tail: int | None) -> None:
    """Print the records of LOG (its rotated files first), one a line."""
    try:
        shown = [r for r in audit_lib.records(log) if event is None or r["event"] == event]
    except (ValueError, KeyError, TypeError) as e:
        raise click.ClickException(f"{log}: not an xfs audit log ({e})") from None
    except OSError as e:
        raise click.ClickException(f"{log}: {e.strerror}") from None
    for r in shown[-tail:] if tail else shown:
        when = datetime.datetime.fromtimestamp(r["time"], datetime.UTC)
        when_text = when.isoformat(timespec="seconds")
        detail = " ".join(f"{k}={v}" for k, v in sorted(r["detail"].items()))
        click.echo(
            f"{r['seq']:>6} {when_text} {r['service']} {r['event']:<5} {r['actor']} "
            f"{r['action']} {r['outcome']} {detail}".rstrip()
        )
