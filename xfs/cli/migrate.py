"""`xfs store-migrate`: copy an MRC's store from SQLite to PostgreSQL, or back."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from xfs.cli.checks import users_of
from xfs.mrc import fsck, migrate
from xfs.mrc.sql import MetaStore, is_postgresql, open_store
from xfs.mrc.store import StoreError


@click.command("store-migrate")
@click.argument("source")
@click.argument("destination")
def store_migrate(source: str, destination: str) -> None:
    """Copy the MRC store SOURCE into the new store DESTINATION, then check both with
    fsck and compare them. Each is an mrc.db path or a postgresql:// connection string;
    DESTINATION must be new (an SQLite file that does not exist yet, or a PostgreSQL
    database or schema without xfs's tables). Stop the MRC first."""
    if not is_postgresql(source) and not Path(source).is_file():
        raise click.ClickException(f"{source}: no MRC store there")
    if not is_postgresql(destination) and Path(destination).exists():
        raise click.ClickException(f"{destination} exists: give a new file")
    with contextlib.ExitStack() as stack:
        try:
            src = stack.enter_context(contextlib.closing(open_store(source)))
            _refuse_if_served(src, source)
            dst = stack.enter_context(contextlib.closing(open_store(destination)))
            copied = migrate.copy(src, dst)
        except (StoreError, migrate.MigrateError) as e:
            raise click.ClickException(str(e)) from None
        for table, n in copied.items():
            click.echo(f"{table}: {n} rows")
        problems = [f"{s.name}: {p}" for s in (src, dst) for p in fsck.check(s)]
        problems += migrate.differences(src, dst)
        for line in problems:
            click.echo(line)
        if problems:
            raise click.ClickException(f"the copy in {dst.name} is not sound (above)")
        click.echo(f"{dst.name}: a clean copy of {src.name}")


def _refuse_if_served(store: MetaStore, source: str) -> None:
    """An MRC still using the source would change it after the copy's snapshot."""
    if is_postgresql(source):
        from xfs.mrc.pgstore import PgStore

        assert isinstance(store, PgStore)
        users = [f"PostgreSQL session {pid}" for pid in store.mrc_sessions()]
    else:
        users = [f"process {pid}" for pid in users_of(Path(source))]
        users = [u for u in users if u != f"process {os.getpid()}"]
    if users:
        raise click.ClickException(
            f"{store.name} is in use by {', '.join(users)} (an MRC?): stop it first"
        )
