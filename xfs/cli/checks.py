"""``xfs fsck`` and ``xfs scrub``: read-only checks of the MRC's store and the OSDs'.

``fsck`` runs every invariant of the MRC's store (``xfs.mrc.fsck``) in one read
transaction on a read-only connection: safe while the MRC runs (SQLite's WAL lets a
reader see one consistent state beside the writer). ``fsck --repair`` first repairs
what a rule can set right (``xfs.mrc.repair``), refused while any process has the store
open. ``scrub`` reads every object and
epoch record of OSD stores and checks their format and CRC32Cs (``xfs.osd.scrub``),
also safe while the OSDs run, and only reports (an OSD repairs a corrupt object from
another replica when a read or the MRC's background scrubbing finds it). Both exit 1
when they find something.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import click

from xfs import embedded
from xfs.common import config
from xfs.common.config import ConfigError, MRCConfig, OSDConfig
from xfs.mrc import repair as repairs
from xfs.mrc.store import StoreError, add_functions
from xfs.osd.objects import ObjectStore, StoreFormatError, check_format
from xfs.osd.scrub import scrub as scrub_store
from xfs.proto.errors import XfsError


def _layout(state: Path | None) -> embedded.Layout:
    layout = embedded.Layout((state or embedded.default_state()).absolute())
    if not layout.grid_file.exists():
        raise click.ClickException(f"no xfs grid in {layout.state}; give --state or a path")
    return layout


def _data_dir(cls: type[Any], path: Path) -> Path:
    try:
        return Path(config.load(cls, path, {}).data_dir)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.command("fsck")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="The MRC's mrc.db.")
@click.option(
    "--store",
    "pg_store",
    metavar="postgresql://...",
    help="The MRC's PostgreSQL store (its connection string) instead of an mrc.db.",
)
@click.option("--state", type=click.Path(path_type=Path), help="The embedded grid (default).")
@click.option(
    "--repair",
    is_flag=True,
    help="First repair what a rule can set right (the MRC must be stopped), then check.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fsck(
    db: Path | None, pg_store: str | None, state: Path | None, repair: bool, as_json: bool
) -> None:
    """Check every invariant of the MRC's store, read-only (the MRC may run); with
    --repair, offline, repair first."""
    running: list[int] = []
    if db is None and pg_store is None:
        layout = _layout(state)
        try:
            mrc = config.load(MRCConfig, layout.config("mrc"), {})
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
        if mrc.store:
            pg_store = mrc.store
        else:
            db = Path(mrc.data_dir) / "mrc.db"
        pid = embedded.running_pid(layout, "mrc")
        running = [] if pid is None else [pid]
    if pg_store is not None:
        name, done, problems = _fsck_postgresql(pg_store, repair, running)
    else:
        assert db is not None
        name, done, problems = str(db), *_fsck_sqlite(db, repair, running)
    if as_json:
        click.echo(json.dumps({"store": name, "repaired": done, "problems": problems}, indent=1))
    else:
        for line in done:
            click.echo(f"repaired: {line}")
        for p in problems:
            click.echo(p)
        click.echo(f"{name}: {'clean' if not problems else f'{len(problems)} problem(s)'}")
    if problems:
        raise SystemExit(1)


def _fsck_sqlite(db: Path, repair: bool, running: list[int]) -> tuple[list[str], list[str]]:
    if not db.is_file():
        raise click.ClickException(f"{db}: no MRC store there")
    done: list[str] = []
    try:
        if repair:
            running = running or users_of(db)
            if running:
                raise click.ClickException(
                    f"{db} is in use by process {', '.join(map(str, running))} (the MRC?): "
                    "stop it first, repair is offline"
                )
            conn = sqlite3.connect(db, isolation_level=None)
            add_functions(conn)
            try:
                done = repairs.repair(conn)
            finally:
                conn.close()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        add_functions(conn)
        try:
            problems = repairs.check(conn)  # one consistent state for every check
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise click.ClickException(f"{db}: {e}") from None
    return done, problems


def _fsck_postgresql(
    dsn: str, repair: bool, running: list[int]
) -> tuple[str, list[str], list[str]]:
    """fsck of a PostgreSQL store: one REPEATABLE READ snapshot, safe beside running MRCs;
    --repair refused while any MRC is connected to it."""
    import psycopg

    from xfs.mrc import fsck as checks
    from xfs.mrc.pgstore import PgStore

    try:
        with contextlib.closing(PgStore.open(dsn)) as store:
            done: list[str] = []
            if repair:
                mrcs = running or store.mrc_sessions()
                if mrcs:
                    raise click.ClickException(
                        f"{store.name} is in use by {len(mrcs)} MRC connection(s) "
                        f"({', '.join(map(str, mrcs))}): stop the MRCs first, repair is offline"
                    )
                with store.transaction() as cur:
                    done = repairs.repair_in(cur)
            return store.name, done, checks.check(store)
    except (StoreError, psycopg.Error) as e:
        raise click.ClickException(str(e)) from None


def users_of(path: Path) -> list[int]:
    """The processes that have ``path`` open (those whose descriptors this user may see)."""
    target = str(path.resolve())
    users = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                users.append(int(proc.name))
        except OSError:
            continue
    return users


@click.command("scrub")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="An OSD's data directory (repeatable).",
)
@click.option("--osd", "roles", multiple=True, metavar="ROLE", help="osdK of the embedded grid.")
@click.option("--state", type=click.Path(path_type=Path), help="The embedded grid (default).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def scrub(
    data_dirs: tuple[Path, ...], roles: tuple[str, ...], state: Path | None, as_json: bool
) -> None:
    """Read every object of OSD stores and check it, read-only (the OSDs may run); by
    default every OSD of the embedded grid."""
    targets: dict[str, Path] = {str(d): d for d in data_dirs}
    if not data_dirs:
        layout = _layout(state)
        grid = embedded.Grid.load(layout.grid_file)
        for role in roles or grid.osd_roles:
            if role not in grid.osd_roles:
                raise click.ClickException(f"no {role} in this grid ({', '.join(grid.osd_roles)})")
            targets[role] = _data_dir(OSDConfig, layout.config(role))
    reports: dict[str, Any] = {}
    for name, data in targets.items():
        try:
            check_format(data)  # (opening a directory that holds no store would make one)
            store = ObjectStore(data)
            store.open()
            r = scrub_store(store)
        except StoreFormatError as e:
            raise click.ClickException(str(e)) from None  # (it names the directory)
        except (XfsError, OSError, ValueError) as e:
            raise click.ClickException(f"{name}: {getattr(e, 'message', e)}") from None
        reports[name] = {
            "checked": r.checked,
            "corrupt": [f"object {objno} of {fid}" for fid, objno in r.corrupt],
            "stray": r.stray,
            "bad_epochs": r.bad_epochs,
        }
    bad = {n: r for n, r in reports.items() if r["corrupt"] or r["stray"] or r["bad_epochs"]}
    if as_json:
        click.echo(json.dumps(reports, indent=1, sort_keys=True))
    else:
        for name, r in reports.items():
            found = r["corrupt"] + [f"stray {s}" for s in r["stray"]]
            found += [f"bad epoch record of {f}" for f in r["bad_epochs"]]
            click.echo(
                f"{name}: {r['checked']} objects, {'clean' if not found else ''}".rstrip(", ")
            )
            for line in found:
                click.echo(f"  {line}")
    if bad:
        raise SystemExit(1)
