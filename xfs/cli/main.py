"""The `xfs` command."""

from __future__ import annotations

import click

from xfs import __version__
from xfs.cli.acl import acl
from xfs.cli.admin import osd_group, status, volume
from xfs.cli.audit import audit
from xfs.cli.ca import ca
from xfs.cli.checkpoint import checkpoint
from xfs.cli.checks import fsck, scrub
from xfs.cli.delegate import delegate
from xfs.cli.grid import down, up
from xfs.cli.migrate import store_migrate
from xfs.cli.mount_helper import mount_helper
from xfs.cli.policy import policy
from xfs.cli.quota import quota
from xfs.cli.replica import replica
from xfs.cli.servers import mount, mrc, osd, umount


@click.group()
@click.version_option(__version__, prog_name="xfs")
def cli() -> None:
    """xfs: a grid file system (MRC, OSDs and a FUSE client over mutual TLS)."""


for command in (
    mrc,
    osd_group(osd),
    mount,
    umount,
    mount_helper,
    up,
    down,
    status,
    volume,
    ca,
    audit,
    acl,
    delegate,
    policy,
    quota,
    replica,
    checkpoint,
    fsck,
    scrub,
    store_migrate,
):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
