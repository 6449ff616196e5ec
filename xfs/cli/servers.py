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
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    required=True,
    help="TOML configuration file (mrc, volume, mountpoint, trust, credentials).",
)
@click.option(
    "--delegation",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A delegation token file (xfs delegate create --out): act for its grantor, "
    "serving only the uid that runs the mount.",
)
@click.option("-v", "--verbose", is_flag=True)
def mount(config_file: Path, delegation: Path | None, verbose: bool) -> None:
    """Mount a volume with FUSE and serve it until unmounted or SIGTERM."""
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
