"""`xfs mrc`, `xfs osd`, `xfs mount`: the long-running processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xfs.cli.run import serve, setup_logging
from xfs.common import config as cfg
from xfs.common.config import ConfigError, MountConfig, MRCConfig, OSDConfig


def _load(cls: type[Any], path: Path, overrides: dict[str, Any]) -> Any:
    try:
        return cfg.load(cls, path, overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def _server_command(name: str, config_cls: type[Any], help: str) -> click.Command:
    """`xfs mrc` and `xfs osd`: load the config, run the service until SIGTERM."""

    @click.command(name, help=help)
    @click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        required=True,
        help="TOML configuration file.",
    )
    @click.option("--port", type=int, help="Override the port to listen on.")
    @click.option("-v", "--verbose", is_flag=True)
    def command(config_file: Path, port: int | None, verbose: bool) -> None:
        if name == "mrc":
            from xfs.mrc.service import MRCService as Service
        else:
            from xfs.osd.service import OSDService as Service  # type: ignore[assignment]
        setup_logging(verbose)
        service = Service(_load(config_cls, config_file, {"port": port}))
        serve(service, service.stop)

    return command


mrc = _server_command(
    "mrc", MRCConfig, "Run an MRC (metadata and replica catalogue) until SIGTERM."
)
osd = _server_command("osd", OSDConfig, "Run an OSD (object storage daemon) until SIGTERM.")


@click.command("mount")
@click.argument("volume", required=False)
@click.argument("mountpoint", required=False, type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML configuration file (mrc, volume, mountpoint, trust, credentials); with "
    "VOLUME and MOUNTPOINT the template their mount starts from.",
)
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    default=None,
    help="With VOLUME and MOUNTPOINT: the embedded grid whose mount configuration is the "
    "template (default: $XDG_STATE_HOME/xfs or ~/.local/state/xfs); the mount is kept "
    "there for xfs umount and xfs down.",
)
@click.option(
    "--delegation",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A delegation token file (xfs delegate create --out): act for its grantor, "
    "serving only the uid that runs the mount.",
)
@click.option("-v", "--verbose", is_flag=True)
def mount(
    volume: str | None,
    mountpoint: Path | None,
    config_file: Path | None,
    state: Path | None,
    delegation: Path | None,
    verbose: bool,
) -> None:
    """Mount a volume with FUSE: with --config alone, serve it here until unmounted or
    SIGTERM; with VOLUME MOUNTPOINT, in the background (end it with xfs umount)."""
    if volume is not None:
        _mount_by_name(volume, mountpoint, config_file, state, delegation)
        return
    if config_file is None:
        raise click.UsageError("give VOLUME MOUNTPOINT, or --config FILE")
    from xfs.client.delegation import read_token
    from xfs.client.idmap import IdentityMap
    from xfs.client.mount import Mount
    from xfs.proto.errors import XfsError

    setup_logging(verbose)
    overrides: dict[str, Any] = {}
    if delegation is not None:
        try:
            read_token(delegation)  # a bad token file is one line here, not a traceback
        except XfsError as e:
            raise click.ClickException(e.message) from None
        overrides["delegation"] = str(delegation.absolute())
    config = _load(MountConfig, config_file, overrides)
    try:
        IdentityMap.load(config.vo, config.identity_map)  # one line, not a traceback
    except XfsError as e:
        raise click.ClickException(e.message) from None
    m = Mount(config)
    serve(m, m.stop)


def _mount_by_name(
    volume: str,
    mountpoint: Path | None,
    template: Path | None,
    state: Path | None,
    delegation: Path | None,
) -> None:
    from xfs import embedded, mounts

    if mountpoint is None:
        raise click.UsageError("give the MOUNTPOINT too")
    state = (state or embedded.default_state()).absolute()
    template = template or embedded.Layout(state).config("mount")
    if not template.exists():
        raise click.ClickException(
            f"no mount configuration to start from ({template}): xfs up first, or --config"
        )
    try:
        pid = mounts.start(state, template, volume, mountpoint, delegation=delegation)
    except mounts.MountError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"xfs: volume {volume} is mounted at {mountpoint.absolute()} (process {pid})")


@click.command("umount")
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    default=None,
    help="The state directory the mount was made with (default as for xfs mount).",
)
def umount(mountpoint: Path, state: Path | None) -> None:
    """End a mount made with xfs mount VOLUME MOUNTPOINT (or mount -t fuse.xfs): open
    files are flushed, then the volume is unmounted."""
    from xfs import embedded, mounts

    state = (state or embedded.default_state()).absolute()
    if not mounts.stop(state, mountpoint.absolute()):
        raise click.ClickException(f"{mountpoint} is not mounted")
    click.echo(f"xfs: unmounted {mountpoint.absolute()}")
