"""`xfs up`, `xfs down`: the embedded default grid on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from xfs import embedded


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
def up(state: Path | None, mountpoint: Path | None, timeout: float) -> None:
    """Start an MRC and three OSDs on loopback and mount your home volume."""
    state = (state or embedded.default_state()).absolute()
    try:
        grid = embedded.up(state, mountpoint.absolute() if mountpoint else None, timeout)
    except embedded.GridError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"xfs: volume {grid.volume} is mounted at {grid.mountpoint}")
    click.echo(f"xfs: state and logs in {state}")
    click.echo(f"xfs: stop everything with: xfs down --state {state}")


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
    try:
        stopped = embedded.down(state)
    except embedded.GridError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"xfs: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
