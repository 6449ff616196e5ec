"""``xfs quota``: limits on the files and bytes of a volume and of its principals
(docs/design/quotas.md). Bytes count every replica: a 1 GiB file at factor 3 uses 3 GiB."""

from __future__ import annotations

import json
from typing import Any

import click

from xfs.cli.admin import (
    _console,
    _who,
    _wide_option,
    call_mrc,
    connection_options,
    human_size,
    quota_table,
)
from xfs.cli.policy import parse_size
from xfs.proto.methods import MRC, QuotaInfo, QuotaSet, VolumeName

NONE = "none"


def _limit(text: str | None, what: str) -> int | None:
    if text is None or text.lower() == NONE:
        return None
    if what == "bytes":
        return parse_size(text)
    if not text.isdigit():
        raise click.BadParameter(f"{text!r} is not a number of files (or {NONE})")
    return int(text)


def _current(options: dict[str, Any], volume: str, principal: str) -> QuotaInfo | None:
    reply = call_mrc(options, MRC.quota_list, VolumeName(volume))
    return next((q for q in reply.quotas if q.principal == principal), None)


@click.group("quota")
def quota() -> None:
    """Limits on the files and bytes of a volume and of each principal in it."""


@quota.command("set")
@connection_options
@click.argument("volume")
@click.option(
    "--principal",
    default="",
    metavar="PRINCIPAL",
    help="Whose inodes (name@vo); without it, the volume as a whole.",
)
@click.option("--bytes", "nbytes", metavar="SIZE", help=f"Bytes (10G, 500M, ...) or {NONE}.")
@click.option("--files", metavar="N", help=f"Files, directories and links, or {NONE}.")
def quota_set(
    volume: str, principal: str, nbytes: str | None, files: str | None, **options: Any
) -> None:
    """Set a quota (needs the super role of the volume's VO). A limit not given stays as
    it was; bytes count every replica."""
    if nbytes is None and files is None:
        raise click.UsageError("give --bytes and/or --files (a size, a number, or none)")
    limit_bytes, limit_files = _limit(nbytes, "bytes"), _limit(files, "files")
    if nbytes is None or files is None:  # a limit not given stays as it is
        now = _current(options, volume, principal)
        if now is not None:
            limit_bytes = limit_bytes if nbytes is not None else now.bytes_limit
            limit_files = limit_files if files is not None else now.files_limit
    call_mrc(options, MRC.quota_set, QuotaSet(volume, principal, limit_files, limit_bytes))
    if limit_bytes is None and limit_files is None:
        click.echo(f"no quota on {_who(principal)} in {volume} any more")
        return
    shown = [
        f"{human_size(limit_bytes)}" if limit_bytes is not None else "bytes unlimited",
        f"{limit_files} files" if limit_files is not None else "files unlimited",
    ]
    click.echo(f"quota of {_who(principal)} in {volume}: {', '.join(shown)}")


@quota.command("clear")
@connection_options
@click.argument("volume")
@click.option("--principal", default="", metavar="PRINCIPAL", help="Whose quota to remove.")
def quota_clear(volume: str, principal: str, **options: Any) -> None:
    """Remove a quota (needs the super role of the volume's VO)."""
    call_mrc(options, MRC.quota_set, QuotaSet(volume, principal, None, None))
    click.echo(f"no quota on {_who(principal)} in {volume} any more")


@quota.command("show")
@connection_options
@click.argument("volume")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_wide_option
def quota_show(volume: str, as_json: bool, wide: bool, **options: Any) -> None:
    """Show a volume's quotas and what each has used (a user sees the volume's and its
    own; super and advanced users see every one)."""
    quotas = call_mrc(options, MRC.quota_list, VolumeName(volume)).quotas
    if as_json:
        click.echo(json.dumps([q.to_wire() for q in quotas], indent=2))
        return
    if not quotas:
        click.echo(f"no quotas on {volume}")
        return
    _console(wide).print(quota_table(quotas, f"Quotas of {volume}"))
