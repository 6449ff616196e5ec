"""The `xfs` command.

Each command's module is imported only when that command runs (``LazyGroup``): a server
process or a quick admin call does not pay for importing every other command (FUSE,
PostgreSQL, rich tables), which took most of a short command's time.
"""

from __future__ import annotations

import importlib

import click

from xfs import __version__

# name -> "module:attribute" of the command (or of a function that makes it)
COMMANDS = {
    "mrc": "xfs.cli.servers:mrc",
    "osd": "xfs.cli.main:osd_command",
    "mount": "xfs.cli.servers:mount",
    "umount": "xfs.cli.servers:umount",
    "mount-helper": "xfs.cli.mount_helper:mount_helper",
    "up": "xfs.cli.grid:up",
    "down": "xfs.cli.grid:down",
    "status": "xfs.cli.admin:status",
    "volume": "xfs.cli.admin:volume",
    "ca": "xfs.cli.ca:ca",
    "audit": "xfs.cli.audit:audit",
    "acl": "xfs.cli.acl:acl",
    "delegate": "xfs.cli.delegate:delegate",
    "policy": "xfs.cli.policy:policy",
    "quota": "xfs.cli.quota:quota",
    "replica": "xfs.cli.replica:replica",
    "checkpoint": "xfs.cli.checkpoint:checkpoint",
    "fsck": "xfs.cli.checks:fsck",
    "scrub": "xfs.cli.checks:scrub",
    "store-migrate": "xfs.cli.migrate:store_migrate",
}


class LazyGroup(click.Group):
    """A group whose commands (``COMMANDS``) are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module, _, attribute = spec.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):  # (a function that makes it)
            command = command()
        assert isinstance(command, click.Command) and command.name == cmd_name, spec
        return command


def osd_command() -> click.Command:
    """`xfs osd`: run an OSD, or with a subcommand administer the grid's OSDs."""
    from xfs.cli.admin import osd_group
    from xfs.cli.servers import osd

    return osd_group(osd)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="xfs")
def cli() -> None:
    """xfs: a grid file system (MRC, OSDs and a FUSE client over mutual TLS)."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
