"""``xfs replica``: list, add, remove and seal the replicas of a file in a mounted volume.

Thin, like ``xfs policy``: the MRC answers the xattrs ``xfs.replicas`` (JSON) and
``xfs.replica.add``, ``xfs.replica.remove`` and ``xfs.seal`` (set) through the mount.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from xfs.cli.policy import read_json, through_mount

REPLICAS = "xfs.replicas"
ADD = "xfs.replica.add"
REMOVE = "xfs.replica.remove"
SEAL = "xfs.seal"


def table(info: dict[str, Any]) -> Table:
    """The replicas as ``xfs replica list`` shows them."""
    addresses = info.get("addresses", {})
    t = Table(title=f"policy {info['policy']}, factor {info['factor']}, version {info['version']}")
    for column in ("#", "role", "OSDs", "state"):
        t.add_column(column)
    for i, r in enumerate(info["replicas"], 1):
        role = "primary" if r["primary"] else "backup"
        if info["policy"] == "ronly":
            role = "read-only"
        osds = "\n".join(f"{u} ({addresses.get(u, '?')})" for u in r["osds"])
        state = "complete" if r["complete"] else f"filling ({len(r['incomplete'])} left)"
        t.add_row(str(i), role, osds, state)
    return t


@click.group("replica")
def replica() -> None:
    """The replicas of a file: list, add, remove, seal (read-only replication)."""


@replica.command("list")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(path: str, as_json: bool) -> None:
    """Show the replicas of PATH and where they are."""
    if os.path.isdir(path):
        raise click.ClickException(
            f"{path} is a directory: files have replicas; `xfs policy get {path}` shows "
            "what new files in it get"
        )
    info = read_json(path, REPLICAS)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    Console().print(table(info))


@replica.command("add")
@click.argument("path")
@click.option(
    "--osd",
    "osds",
    multiple=True,
    metavar="UUID",
    help="One per stripe column (default: placement chooses).",
)
def add(path: str, osds: tuple[str, ...]) -> None:
    """Add a replica of PATH on the OSDs given or chosen: filled in the background, or
    object by object as it serves reads if the file's policy says ``--fill partial``."""
    value = ",".join(osds).encode()
    through_mount(path, lambda: os.setxattr(path, ADD, value))


@replica.command("remove")
@click.argument("path")
@click.option("--osd", required=True, metavar="UUID", help="An OSD of the replica to remove.")
def remove(path: str, osd: str) -> None:
    """Remove the replica of PATH on OSD (the last complete one stays: EBUSY)."""
    through_mount(path, lambda: os.setxattr(path, REMOVE, osd.encode()))


@replica.command("seal")
@click.argument("path")
def seal(path: str) -> None:
    """Make PATH read-only for good (ronly), replicated up to its factor."""
    through_mount(path, lambda: os.setxattr(path, SEAL, b"1"))
