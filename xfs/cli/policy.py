"""``xfs policy``: show and set the replication policy of a file or directory.

Thin, like ``xfs acl``: the MRC answers the xattr ``xfs.policy`` through the mount (JSON,
see ``xfs.mrc.policies``); this command reads it, or sets the keys given as options. A
directory's policy is inherited by what is created in it later; the root's is the
volume's.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from xfs.mrc.placement import unfit
from xfs.mrc.volumes import MAX_STRIPE, MAX_WIDTH, MIN_STRIPE

POLICY = "xfs.policy"
OSD_LABELS = "xfs.osd_labels"

T = TypeVar("T")

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def through_mount(path: str, call: Callable[[], T]) -> T:
    """``call`` (an xattr call on ``path``); an error becomes one line and exit 1."""
    try:
        return call()
    except OSError as e:
        code = e.errno or errno.EIO
        if code in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise click.ClickException(
                f"{path}: EOPNOTSUPP: not in a mounted xfs volume (or not supported there)"
            ) from None
        name = errno.errorcode.get(code, "EIO")
        raise click.ClickException(f"{path}: {name}: {os.strerror(code)}") from None


def read_json(path: str, name: str) -> Any:
    raw = through_mount(path, lambda: os.getxattr(path, name))
    return json.loads(raw)


def parse_size(text: str) -> int:
    """``1M``, ``64K``, ``4096``, ``1MiB``: bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise click.BadParameter(f"{text!r} is not a size (4096, 64K, 1M, 1G, 1T)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def show_size(n: int) -> str:
    for unit in ("G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def _label(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not key or not eq:
        raise click.BadParameter(f"{text!r}: LABEL=VALUE")
    return key, value


def _sort(text: str) -> str:
    if text in ("free", "random") or (text.startswith("prefer:") and "=" in text):
        return text
    raise click.BadParameter(f"{text!r}: free, random or prefer:LABEL=VALUE")


def describe(p: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines ``xfs policy get`` prints."""
    where = p.get("placement", {})
    require = ", ".join(f"{k}={v}" for k, v in sorted(where.get("require", {}).items()))
    replication = p["replication"]
    if replication != "none":
        replication += f", factor {p['factor']}, fill {p['fill']}"
    return [
        ("replication", replication),
        ("seal on close", "yes" if p["seal_on_close"] else "no"),
        ("striping", f"{show_size(p['stripe_size'])} stripes over {p['width']} OSDs"),
        (
            "placement",
            f"spread over {where.get('spread')}, sort {where.get('sort')}, "
            f"require {require or '-'}",
        ),
    ]


@click.group("policy")
def policy() -> None:
    """Replication policies of files, directories (inherited) and volumes (the root's)."""


@policy.command("get")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def get(path: str, as_json: bool) -> None:
    """Print the policy that applies to PATH."""
    p = read_json(path, POLICY)
    if as_json:
        click.echo(json.dumps(p, indent=2, sort_keys=True))
        return
    for key, value in describe(p):
        click.echo(f"{key + ':':15}{value}")


@policy.command("set")
@click.argument("path")
@click.option("--replication", type=click.Choice(["none", "rw", "ronly"]))
@click.option("--factor", type=click.IntRange(1), help="Replicas to keep.")
@click.option("--fill", type=click.Choice(["full", "partial"]), help="How ronly replicas fill.")
@click.option("--stripe-size", help="Stripe size: 4096, 64K, 1M...")
@click.option("--width", type=click.IntRange(1), help="OSDs a replica is striped over.")
@click.option("--seal-on-close/--no-seal-on-close", default=None, help="Seal at last close.")
@click.option("--require", multiple=True, metavar="LABEL=VALUE", help="OSD labels required.")
@click.option("--no-require", is_flag=True, help="Clear the required labels.")
@click.option("--spread", metavar="LABEL", help="Label whose values are failure domains.")
@click.option("--sort", metavar="free|random|prefer:L=V", help="OSD order.")
def set_(
    path: str,
    replication: str | None,
    factor: int | None,
    fill: str | None,
    stripe_size: str | None,
    width: int | None,
    seal_on_close: bool | None,
    require: tuple[str, ...],
    no_require: bool,
    spread: str | None,
    sort: str | None,
) -> None:
    """Change the policy of PATH: the options given, the rest stays. On a directory it
    applies to what is created in it later; on a file, at once (the striping only while
    the file is empty)."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "replication": replication,
            "factor": factor,
            "fill": fill,
            "stripe_size": None if stripe_size is None else parse_size(stripe_size),
            "width": width,
            "seal_on_close": seal_on_close,
        }.items()
        if v is not None
    }
    where: dict[str, Any] = {}
    if require and no_require:
        raise click.UsageError("--require and --no-require together")
    if require or no_require:
        where["require"] = dict(_label(r) for r in require)
    if spread is not None:
        where["spread"] = spread
    if sort is not None:
        where["sort"] = _sort(sort)
    if where:
        changes["placement"] = where
    if not changes:
        raise click.UsageError("nothing to set: give at least one option")
    _refuse_unplaceable(path, changes)
    value = json.dumps(changes, sort_keys=True).encode()
    through_mount(path, lambda: os.setxattr(path, POLICY, value))


def _refuse_unplaceable(path: str, changes: dict[str, Any]) -> None:
    """Say, naming the valid values, what the MRC would refuse with a bare EINVAL (an
    xattr carries no message back): a bad stripe size or width, labels no OSD carries, a
    factor above the OSDs that carry them."""
    size = changes.get("stripe_size")
    if size is not None and not (MIN_STRIPE <= size <= MAX_STRIPE and size % MIN_STRIPE == 0):
        raise click.ClickException(
            f"stripe size {size}: a multiple of {show_size(MIN_STRIPE)} from "
            f"{show_size(MIN_STRIPE)} to {show_size(MAX_STRIPE)} (4K, 64K, 1M, ...)"
        )
    if changes.get("width", 1) > MAX_WIDTH:
        raise click.ClickException(f"width {changes['width']}: 1 to {MAX_WIDTH}")
    current = read_json(path, POLICY)
    merged = current | changes
    require = changes.get("placement", {}).get("require", current["placement"]["require"])
    replicated = merged["replication"] != "none"
    if changes.get("replication") == "none" and "factor" not in changes:
        replicated = False
    labels = read_json(path, OSD_LABELS)
    why = unfit(require, merged["factor"] if replicated else 1, labels)
    if why:
        raise click.ClickException(f"{path}: {why}")
