"""``mount.fuse.xfs``: what ``mount -t fuse.xfs VOLUME DIR -o OPTIONS`` and an
``/etc/fstab`` line run, and ``xfs mount-helper install`` puts where mount(8) looks.

mount(8) calls ``/sbin/mount.fuse.xfs SOURCE DIR [-sfnv] [-o OPTIONS]``. SOURCE is the
volume's name; the options of xfs are ``state=PATH`` (the embedded grid, default the
caller's), ``config=FILE`` (a mount configuration to start from instead) and
``delegation=FILE``; the generic ones fstab lines carry (``rw``, ``defaults``, ``auto``,
``noauto``, ``nofail``, ``_netdev``, ``user``, ``nouser``, ``x-*``, ``comment=*``) are
accepted and left to mount(8). Exit status as mount(8) documents: 0 mounted, 1 a bad
command line, 32 the mount failed; one line on stderr says why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from xfs import embedded, mounts

HELPER = "mount.fuse.xfs"
GENERIC = {"rw", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users"}
USAGE, FAILED = 1, 32


def parse(argv: list[str]) -> tuple[str, Path, dict[str, str]]:
    """(volume, mount point, xfs's options) of a helper's command line; ValueError."""
    positional: list[str] = []
    options: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            options += next(args, "").split(",")
        elif arg.startswith("-o"):
            options += arg[2:].split(",")
        elif arg in ("-t",):
            next(args, None)
        elif arg.startswith("-"):
            continue  # -s -f -n -v: nothing for xfs to do
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise ValueError(f"usage: {HELPER} VOLUME DIR [-o state=PATH,config=FILE,...]")
    ours: dict[str, str] = {}
    for option in filter(None, options):
        key, _, value = option.partition("=")
        if key in ("state", "config", "delegation") and value:
            ours[key] = value
        elif not (option in GENERIC or key.startswith("x-") or key == "comment"):
            raise ValueError(f"unknown option {option!r} (xfs takes state=, config=, delegation=)")
    return positional[0], Path(positional[1]), ours


def main(argv: list[str] | None = None) -> int:
    try:
        volume, mountpoint, options = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"{HELPER}: {e}", file=sys.stderr)
        return USAGE
    state = Path(options.get("state") or embedded.default_state()).absolute()
    template = (
        Path(options["config"]) if "config" in options else embedded.Layout(state).config("mount")
    )
    delegation = Path(options["delegation"]) if "delegation" in options else None
    try:
        if not template.exists():
            raise mounts.MountError(f"no mount configuration {template} (state= or config=)")
        mounts.start(state, template, volume, mountpoint, delegation=delegation)
    except (mounts.MountError, OSError) as e:
        print(f"{HELPER}: {e}", file=sys.stderr)
        return FAILED
    return 0


@click.group("mount-helper")
def mount_helper() -> None:
    """The mount.fuse.xfs helper: mount -t fuse.xfs and /etc/fstab lines."""


_DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/sbin"),
    show_default=True,
    help="Where mount(8) looks for helpers.",
)


@mount_helper.command("install")
@_DIR_OPTION
def install(directory: Path) -> None:
    """Install mount.fuse.xfs, running this xfs, so that mount(8) finds it."""
    target = directory / HELPER
    script = f'#!/bin/sh\nexec "{sys.executable}" -m xfs.cli.mount_helper "$@"\n'
    try:
        tmp = target.with_name(f".{HELPER}.tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    except OSError as e:
        raise click.ClickException(f"{target}: {e.strerror}") from None
    click.echo(f"installed {target}")


@mount_helper.command("remove")
@_DIR_OPTION
def remove(directory: Path) -> None:
    """Remove mount.fuse.xfs."""
    target = directory / HELPER
    try:
        target.unlink()
    except OSError as e:
        raise click.ClickException(f"{target}: {e.strerror}") from None
    click.echo(f"removed {target}")


if __name__ == "__main__":
    sys.exit(main())
