"""``xfs acl``: show and set POSIX ACLs by grid names, on files of a mounted xfs volume.

Thin: the mount serves ACLs in getfacl's text form with grid names as the xattrs
``system.xfs.acl`` and ``system.xfs.acl_default`` (see ``xfs.client.acl_xattr``); this
command reads and writes those on the path, and edits entries as setfacl does.
"""

from __future__ import annotations

import errno
import os

import click

from xfs.client.acl_xattr import TEXT_ACCESS, TEXT_DEFAULT
from xfs.mrc import acl as acls
from xfs.proto.errors import XfsError


def _fail(path: str, e: OSError | XfsError) -> click.ClickException:
    if isinstance(e, XfsError):
        return click.ClickException(f"{path}: {e.message}")
    if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
        return click.ClickException(f"{path}: not in a mounted xfs volume")
    return click.ClickException(f"{path}: {os.strerror(e.errno or errno.EIO)}")


def _read(path: str, name: bytes) -> str | None:
    """The text of ACL xattr ``name`` of ``path``, None if there is none."""
    try:
        return os.getxattr(path, name).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def _entries(specs: tuple[str, ...], *, with_perm: bool = True) -> list[acls.Entry]:
    """Entries given as arguments, each one or several separated by commas."""
    return [
        acls.parse_entry(spec, with_perm=with_perm)
        for arg in specs
        for spec in arg.split(",")
        if spec.strip()
    ]


@click.group("acl")
def acl() -> None:
    """POSIX ACLs by grid principal and VO group, on files of a mounted volume."""


@acl.command("get")
@click.argument("paths", nargs=-1, required=True)
def get(paths: tuple[str, ...]) -> None:
    """Print the ACLs of PATHS as getfacl does, with grid names."""
    for path in paths:
        try:
            text = _read(path, TEXT_ACCESS) or ""
            default = _read(path, TEXT_DEFAULT)
            access = acls.parse(text)
            default_acl = acls.parse(default) if default else None
        except (OSError, XfsError) as e:
            raise _fail(path, e) from None
        click.echo(f"# file: {path}")
        for line in text.splitlines():
            if line.startswith("#"):
                click.echo(line)
        if access is not None:
            click.echo(acls.to_text(access, effective=True), nl=False)
        if default_acl is not None:
            click.echo(acls.to_text(default_acl, effective=True, prefix="default:"), nl=False)
        click.echo("")


@acl.command("set")
@click.argument("path")
@click.argument("entries", nargs=-1)
@click.option("-d", "--default", "default", is_flag=True, help="The default ACL (directories).")
@click.option(
    "-x",
    "--remove",
    is_flag=True,
    help="Remove the ENTRIES named (user:NAME, group:NAME, mask); with none, the whole ACL.",
)
@click.option("--replace", is_flag=True, help="ENTRIES are the whole ACL (setfacl --set).")
def set_(path: str, entries: tuple[str, ...], default: bool, remove: bool, replace: bool) -> None:
    """Set entries (user:alice@physics:rw, group:users@physics:r-x, mask::rx, other::-)
    of the ACL of PATH; as setfacl -m, the mask is recomputed unless one is given."""
    name = TEXT_DEFAULT if default else TEXT_ACCESS
    try:
        if remove and not entries:
            os.removexattr(path, name)
            return
        if replace and remove:
            raise XfsError(errno.EINVAL, "--replace and --remove do not go together")
        if not entries:
            raise XfsError(errno.EINVAL, "no entries given")
        current_text = _read(path, name)
        current = acls.parse(current_text) if current_text else None
        if remove:
            if current is None:
                return
            new = acls.remove(current, [e.key for e in _entries(entries, with_perm=False)])
        else:
            changes = _entries(entries)
            base = [] if replace or current is None else list(current.entries)
            if default and (current is None or replace):  # setfacl copies these
                access = acls.parse(_read(path, TEXT_ACCESS) or "")
                if access is not None:
                    base = acls.complete_default([*base, *changes], access)
            new = acls.modify(base, changes)
        os.setxattr(path, name, acls.to_text(new).encode())
    except (OSError, XfsError) as e:
        raise _fail(path, e) from None
