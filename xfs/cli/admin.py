"""`xfs status` and `xfs volume ...`: administration through the MRC."""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table

from xfs import embedded
from xfs.cli.run import domain_error
from xfs.client.credentials import CredentialStore
from xfs.common import config, tls
from xfs.common.config import ConfigError, MountConfig
from xfs.common.framing import META_FRAME_LIMIT
from xfs.common.identity import Credential, TrustStore, load_credential
from xfs.common.rpc import Pool, RetryPolicy, open_pool
from xfs.proto.codec import Record
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    Empty,
    Method,
    OSDName,
    QuotaInfo,
    RepairStatus,
    VolumeCreate,
    VolumeName,
)
from xfs.proto.records import FilePolicy, Kind, StripingPolicy, UpdatePolicy

R = TypeVar("R", bound=Record)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--state",
                type=click.Path(path_type=Path),
                default=None,
                help="Use the embedded grid in this state directory (default when no "
                "--mrc is given).",
            ),
            click.option("--mrc", "mrc_address", help="MRC address host:port."),
            click.option("--cert", type=click.Path(path_type=Path), help="Your certificate."),
            click.option("--key", type=click.Path(path_type=Path), help="Your private key."),
            click.option(
                "--trust",
                type=click.Path(path_type=Path),
                multiple=True,
                help="Trusted CA certificate (repeat).",
            ),
        ]
    ):
        f = option(f)
    return f


def _embedded_user(layout: embedded.Layout) -> Credential:
    """Your own credential in the embedded grid's credential store."""
    mount = config.load(MountConfig, layout.config("mount"))
    store = CredentialStore(
        mount.credentials, enroll_ca=mount.enroll_ca, lifetime=mount.credential_lifetime
    )
    return store.get(os.getuid())


def run_mrc(
    options: dict[str, Any],
    fn: Callable[[Pool, str], Awaitable[T]],
    *,
    own: bool = False,
    operator: bool = False,
) -> T:
    """Run ``fn(pool, mrc_address)`` as the given credential, or in the embedded grid as
    its administrator (``own``: as yourself, with your credential of its mount;
    ``operator``: as its grid operator)."""
    try:
        if options.get("mrc_address"):
            if not (options.get("cert") and options.get("key") and options.get("trust")):
                raise click.ClickException("--mrc needs --cert, --key and --trust")
            cred = load_credential(options["cert"], options["key"])
            trust_files = list(options["trust"])
            address = options["mrc_address"]
        else:
            state = (options.get("state") or embedded.default_state()).absolute()
            layout = embedded.Layout(state)
            if not layout.grid_file.exists():
                raise click.ClickException(f"no xfs grid in {state}; give --mrc or --state")
            grid = embedded.Grid.load(layout.grid_file)
            if own:
                cred = _embedded_user(layout)
            else:
                cred = load_credential(*(layout.operator if operator else layout.admin))
            trust_files = layout.trust
            address = f"127.0.0.1:{grid.ports['mrc']}"
        trust = TrustStore.load(trust_files)
        ctx = tls.client_context(cred.cert_path, cred.key_path, trust.ssl_cafile_bundle())
    except (XfsError, ConfigError) as e:
        raise click.ClickException(str(getattr(e, "message", e))) from None

    async def main() -> T:
        async with open_pool(
            ctx, trust.identify, frame_limit=META_FRAME_LIMIT, retry=RetryPolicy(attempts=2)
        ) as pool:
            with trio.fail_after(30):
                return await fn(pool, address)

    try:
        return trio.run(main)
    except (XfsError, trio.TooSlowError, BaseExceptionGroup) as raised:
        inner = domain_error(raised)
        if isinstance(inner, XfsError):
            raise click.ClickException(inner.message) from None
        if isinstance(inner, trio.TooSlowError):
            raise click.ClickException(f"the MRC at {address} did not answer in time") from None
        raise


def call_mrc(
    options: dict[str, Any], method: Method[Any, R], request: Any, *, operator: bool = False
) -> R:
    """Call the MRC as the given credential (or the embedded grid's administrator, or
    with ``operator`` its grid operator)."""

    async def one(pool: Pool, address: str) -> R:
        return await pool.call(address, method, request, expect=Kind.MRC)

    return run_mrc(options, one, operator=operator)


def _wide_option(f: F) -> F:
    return click.option(
        "--wide",
        is_flag=True,
        help="Never cut identifiers to the terminal's width (the default off a terminal).",
    )(f)


def _console(wide: bool) -> Console:
    """A console that cuts nothing off a terminal (UUIDs and addresses are what
    ``osd drain`` and ``replica remove`` need) or with ``--wide``."""
    return Console(width=1000) if wide or not sys.stdout.isatty() else Console()


def human_size(n: int) -> str:
    """Bytes as B, KiB, MiB, GiB or TiB with one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.command("status")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_wide_option
def status(as_json: bool, wide: bool, **options: Any) -> None:
    """Show the MRC, the OSDs and the volumes."""
    st = call_mrc(options, MRC.status, Empty())
    if as_json:
        click.echo(json.dumps(st.to_wire(), indent=2, default=lambda b: b.hex()))
        return
    console = _console(wide)
    console.print(
        f"MRC {st.uuid}: {len(st.volumes)} volumes, {len(st.osds)} OSDs, "
        f"{st.pending_deletions} files awaiting deletion"
    )
    osds = Table("OSD", "address", "state", "free", "total", "labels", title="OSDs")
    for o in st.osds:
        osds.add_row(
            o.uuid,
            o.address,
            "up" if o.alive else "[red]down[/red]",
            human_size(o.free),
            human_size(o.total),
            ",".join(f"{k}={v}" for k, v in sorted(o.labels.items())),
        )
    console.print(osds)
    vols = Table(
        "volume", "owner", "group", "mode", "stripe", "width", "files", "bytes", title="Volumes"
    )
    for v in st.volumes:
        vols.add_row(
            v.name,
            v.owner,
            v.group,
            f"{v.mode:o}",
            human_size(v.striping.stripe_size),
            str(v.striping.width),
            str(v.files),
            human_size(v.bytes_used),
        )
    console.print(vols)
    if st.quotas:
        console.print(quota_table(st.quotas, "Quotas"))
    if st.repair is not None:
        _print_repair(console, st.repair)
    if st.scrub is not None:
        sc = st.scrub
        state = "pass under way" if sc.running else f"{sc.passes} passes done"
        console.print(
            f"scrub: {state}; {sc.files} files, {sc.objects} objects checked in the "
            f"{'current' if sc.running else 'last'} pass; repaired {sc.repaired}, "
            f"unrepaired {sc.unrepaired}"
        )


def _who(principal: str) -> str:
    return principal or "(volume)"


def _limit_text(limit: int | None, used: int, size: bool) -> str:
    show = human_size if size else str
    return f"{show(used)} of {show(limit)}" if limit is not None else f"{show(used)}, no limit"


def quota_table(quotas: list[QuotaInfo], title: str) -> Table:
    """The table ``quota show`` and ``status`` print."""
    table = Table("volume", "principal", "bytes (all replicas)", "files", title=title)
    for q in quotas:
        table.add_row(
            q.volume,
            _who(q.principal),
            _limit_text(q.bytes_limit, q.bytes, True),
            _limit_text(q.files_limit, q.files, False),
        )
    return table


def _print_repair(console: Console, repair: RepairStatus) -> None:
    """The healer's progress: files at their factor, replicas left on draining OSDs."""
    files, at_factor = repair.replicated_files, repair.replicated_files - repair.below_factor
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        "replicated files at factor",
        ProgressBar(total=max(files, 1), completed=at_factor if files else 1, width=30),
        f"{at_factor}/{files}",
    )
    console.print(bar)
    if repair.filling:
        console.print(f"{repair.filling} replicas being filled")
    for uuid in repair.dead:
        console.print(f"[red]dead OSD {uuid}[/red]: its replicas are replaced")
    for uuid, left in sorted(repair.draining.items()):
        console.print(f"draining OSD {uuid}: " + (f"{left} replicas left" if left else "drained"))


def osd_group(run: click.Command) -> click.Group:
    """`xfs osd`: ``run`` (``xfs osd --config FILE``, unchanged) or, with a subcommand,
    the OSDs' administration: ``list``, ``drain``."""
    params = []
    for param in run.params:
        param = copy.copy(param)
        param.required = False  # --config is needed only to run an OSD
        params.append(param)

    @click.pass_context
    def callback(ctx: click.Context, **kwargs: Any) -> None:
        if ctx.invoked_subcommand is not None:
            return
        if kwargs.get("config_file") is None:
            raise click.UsageError("give --config FILE to run an OSD, or a command", ctx)
        ctx.invoke(run, **kwargs)

    group = click.Group(
        "osd",
        params=params,
        callback=callback,
        invoke_without_command=True,
        help=f"{run.help}\n\nWith a command: list or drain the grid's OSDs.",
    )
    group.add_command(osd_list)
    group.add_command(osd_drain)
    group.add_command(osd_undrain)
    return group


@click.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_wide_option
def osd_list(as_json: bool, wide: bool, **options: Any) -> None:
    """List the OSDs the MRC knows."""
    reply = call_mrc(options, MRC.osd_list, Empty())
    if as_json:
        click.echo(json.dumps(reply.to_wire()["osds"], indent=2))
        return
    table = Table("OSD", "address", "state", "free", "total", "labels")
    for o in reply.osds:
        table.add_row(
            o.uuid,
            o.address,
            "up" if o.alive else "[red]down[/red]",
            human_size(o.free),
            human_size(o.total),
            ",".join(f"{k}={v}" for k, v in sorted(o.labels.items())),
        )
    _console(wide).print(table)


@click.command("drain")
@connection_options
@click.argument("uuid")
def osd_drain(uuid: str, **options: Any) -> None:
    """Move every replica off OSD UUID and place nothing new on it (needs a grid
    operator's certificate); `xfs status` shows the replicas left."""
    call_mrc(options, MRC.osd_drain, OSDName(uuid), operator=True)
    click.echo(f"draining OSD {uuid}")


@click.command("undrain")
@connection_options
@click.argument("uuid")
def osd_undrain(uuid: str, **options: Any) -> None:
    """Place new replicas on OSD UUID again (needs a grid operator's certificate); what
    moved off it stays where it went."""
    call_mrc(options, MRC.osd_undrain, OSDName(uuid), operator=True)
    click.echo(f"OSD {uuid} takes new replicas again")


@click.group("volume")
def volume() -> None:
    """Create, list and delete volumes."""


@volume.command("create")
@connection_options
@click.argument("name", required=False)
@click.option("--owner", default="", help="Owner principal (default: you).")
@click.option("--group", default="", help="Owning VO group.")
@click.option("--mode", default=None, help="Octal mode of the root directory (default 755).")
@click.option("--stripe-size", default=1 << 20, show_default=True, type=int)
@click.option("--width", default=1, show_default=True, type=int)
@click.option(
    "--home",
    metavar="PRINCIPAL",
    help="A home volume for PRINCIPAL (name@vo): named home-NAME unless NAME is given, "
    "owned by it, mode 0700, replicated rw with factor 3 (fewer with fewer OSDs).",
)
def volume_create(
    name: str | None,
    owner: str,
    group: str,
    mode: str | None,
    stripe_size: int,
    width: int,
    home: str | None,
    **options: Any,
) -> None:
    """Create a volume (needs the super role). Its owner is you (in the embedded grid:
    the principal your mount uses), unless --owner or --home says otherwise."""
    policy = None
    if home is not None:
        local, at, vo = home.partition("@")
        if not (local and at and vo):
            raise click.ClickException(f"--home {home!r}: a principal, name@vo")
        if owner and owner != home:
            raise click.ClickException("--home and --owner name different owners")
        name, owner, group = name or f"home-{local}", home, group or home
        mode = mode or "700"
        osds = call_mrc(options, MRC.osd_list, Empty()).osds
        policy = FilePolicy(UpdatePolicy.RW, max(1, min(3, len(osds))))
    if name is None:
        raise click.UsageError("give the volume's NAME (or --home PRINCIPAL)")
    if not owner and not options.get("mrc_address"):
        owner = _embedded_principal(options)
    striping = StripingPolicy(stripe_size, width)
    if policy is not None:
        policy = replace(policy, striping=striping)
    request = VolumeCreate(name, owner, group, int(mode or "755", 8), striping, policy)
    info = call_mrc(options, MRC.volume_create, request)
    click.echo(f"created volume {info.name} ({info.id}), owner {info.owner}, mode {info.mode:o}")


def _embedded_principal(options: dict[str, Any]) -> str:
    """The principal of your own credential in the embedded grid ("": none yet)."""
    layout = embedded.Layout((options.get("state") or embedded.default_state()).absolute())
    try:
        return _embedded_user(layout).identity.principal
    except (XfsError, ConfigError, OSError):
        return ""


@volume.command("list")
@connection_options
def volume_list(**options: Any) -> None:
    """List volumes."""
    reply = call_mrc(options, MRC.volume_list, Empty())
    for v in reply.volumes:
        click.echo(f"{v.name}\t{v.owner}\t{v.group}\t{v.mode:o}\t{v.files} files")


@volume.command("delete")
@connection_options
@click.argument("name")
def volume_delete(name: str, **options: Any) -> None:
    """Delete a volume and all its files (needs the super role)."""
    call_mrc(options, MRC.volume_delete, VolumeName(name))
    click.echo(f"deleted volume {name}")
