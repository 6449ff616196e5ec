"""`xfs up`, `xfs down`: the embedded default grid on this machine."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from xfs import embedded, mounts


@click.command("up")
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory (default: $XDG_STATE_HOME/xfs or ~/.local/state/xfs).",
)
@click.option(
    "--mountpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to mount the home volume (default: ~/xfs).",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the grid to come up.",
)
@click.option(
    "--osds",
    type=click.IntRange(min=1),
    default=None,
    help=f"Number of OSDs when the grid is made (default {embedded.DEFAULT_OSDS}; "
    "another number for an existing grid is refused).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="ROLE.KEY=VALUE",
    help="A configuration setting (repeat); ROLE is mrc, osd (every OSD), osdK or mount; "
    "VALUE is TOML. Kept for later runs.",
)
@click.option(
    "--metadata",
    metavar="sqlite|postgresql|ADDRESS",
    default=None,
    help="Where the MRC keeps the namespace, chosen when the grid is made: sqlite (a file, "
    "the default), postgresql (a local PostgreSQL cluster this grid starts and stops), or "
    "the postgresql:// address of a database that runs without the grid.",
)
@click.option(
    "--mrcs",
    type=click.IntRange(min=1),
    default=None,
    help="MRCs over the PostgreSQL store, chosen when the grid is made: one serves, the "
    "others stand by and take over when it ends (default 1).",
)
# for tests (tests/system/grid.py): run a role in a network namespace, on an address
@click.option("--netns", multiple=True, hidden=True, metavar="ROLE=NAME")
@click.option("--host", "hosts", multiple=True, hidden=True, metavar="ROLE=ADDRESS")
def up(
    state: Path | None,
    mountpoint: Path | None,
    timeout: float,
    osds: int | None,
    settings: tuple[str, ...],
    metadata: str | None,
    mrcs: int | None,
    netns: tuple[str, ...],
    hosts: tuple[str, ...],
) -> None:
    """Start an MRC and the OSDs on loopback and mount your home volume."""
    state = (state or embedded.default_state()).absolute()
    try:
        report = embedded.up(
            state,
            mountpoint.absolute() if mountpoint else None,
            timeout,
            osds=osds,
            settings=list(settings),
            netns=embedded.parse_assignments(list(netns), "netns"),
            hosts=embedded.parse_assignments(list(hosts), "host"),
            metadata=metadata,
            mrcs=mrcs,
        )
    except embedded.GridError as e:
        raise click.ClickException(str(e)) from None
    grid = report.grid
    for line in report.done or ["already running: nothing to do"]:
        click.echo(f"xfs: {line}")
    click.echo(f"xfs: volume {grid.volume} is mounted at {grid.mountpoint}")
    click.echo(f"xfs: state and logs in {state}")
    click.echo(f"xfs: stop everything with: {_xfs_command()} down --state {state}")


def _xfs_command() -> str:
    """How to run this ``xfs`` again: its name if PATH finds this one, else its path."""
    me = Path(sys.argv[0])
    if me.name == "xfs" and me.exists():
        found = shutil.which("xfs")
        if found is not None and Path(found).resolve() == me.resolve():
            return "xfs"
        return str(me.resolve())
    return f"{sys.executable} -m xfs.cli.main"


@click.command("down")
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory given to `xfs up`.",
)
def down(state: Path | None) -> None:
    """Unmount the home volume and stop the grid's processes."""
    state = (state or embedded.default_state()).absolute()
    ended = mounts.stop_all(state)  # volumes mounted by name (xfs mount, mount -t fuse.xfs)
    try:
        stopped = embedded.down(state)
    except embedded.GridError as e:
        raise click.ClickException(str(e)) from None
    for point in ended:
        click.echo(f"xfs: unmounted {point}")
    click.echo(f"xfs: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
