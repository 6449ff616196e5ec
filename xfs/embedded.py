"""The embedded default: a whole grid on this machine, under one state directory.

``up`` makes (once) a VO CA and a service CA, certificates for an MRC and ``--osds`` OSDs
(default 3; roles ``mrc``, ``osd1``..``osdN``, ``mount``), their configuration files and
data directories; starts them as background processes on loopback; creates the user's
home volume (owner the user, mode 0700, replication ``rw`` with factor min(3, N), stripe
width 1, 1 MiB stripes); and mounts it. A second ``up`` with the same state directory
starts the same grid with its data. ``down`` unmounts and stops every process it started,
by PID.

``--set ROLE.KEY=VALUE`` (ROLE ``mrc``, ``osd`` for every OSD, ``osdK``, or ``mount``;
VALUE a TOML value, else a string) is kept in grid.json and applied, later ones winning,
whenever the configuration files are written: at an ``up`` that starts the servers.

Tests may put roles into network namespaces (grid.json ``netns``: role -> name under
/run/netns, and ``hosts``: role -> the IPv4 address it listens on and advertises, default
127.0.0.1). Such a role runs under ``nsenter --net`` (only the network namespace: the
FUSE mount stays visible), and ``up`` makes its admin calls from inside the MRC's
namespace. ``xfs status --state`` calls 127.0.0.1 from here, so for an MRC in a
namespace run ``nsenter --net=/run/netns/NAME -- xfs status --mrc HOST:PORT --cert ...``
(tests/system/grid.py does).

Every ``up`` re-issues both CAs' CRLs (``<state>/ca/<ca>/crl.pem``, next to the ``ca.crt``
the processes trust), valid for ``CRL_DAYS``: this also upgrades a state directory made
before CRLs existed. ``xfs ca revoke --dir <state>/ca/local ...`` revokes a certificate;
the running processes pick the new CRL up within their ``crl_check_interval``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from xfs import mounts
from xfs.client.credentials import CredentialStore, account_name, local_groups
from xfs.common import ca, config, groups, pgcluster, processes, tls
from xfs.common.config import ConfigError, MountConfig, MRCConfig, OSDConfig, TLSConfig
from xfs.common.framing import META_FRAME_LIMIT
from xfs.common.identity import TrustStore
from xfs.common.rpc import RetryPolicy, open_pool
from xfs.mrc.sql import is_postgresql, redacted
from xfs.osd.objects import ObjectStore
from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC, Empty, VolumeCreate, VolumeName
from xfs.proto.records import FilePolicy, Kind, Role, StripingPolicy, UpdatePolicy

T = TypeVar("T")

VO = "local"
ADMIN = "xfs-admin"
OPERATOR = "xfs-operator"
DEFAULT_OSDS = 3
METADATA = ("sqlite", "postgresql")  # where an embedded grid keeps its namespace
LOOPBACK = "127.0.0.1"
# Longer than the 7 days of a cron-fed CRL: nobody re-issues the CRLs of an embedded grid
# but ``up`` (and ``xfs ca revoke``), and the processes read them straight from the CAs.
CRL_DAYS = 365


class GridError(Exception):
    """Something the user must fix; printed as one line."""


def default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "xfs"


def default_mountpoint() -> Path:
    return Path.home() / "xfs"


@dataclass
class Layout:
    """Where everything of one embedded grid lives."""

    state: Path

    def role_dir(self, role: str) -> Path:
        return self.state / role

    def config(self, role: str) -> Path:
        return self.role_dir(role) / f"{role.rstrip('0123456789')}.toml"

    def pid(self, role: str) -> Path:
        return self.state / "run" / f"{role}.pid"

    def log(self, role: str) -> Path:
        return self.state / "logs" / f"{role}.log"

    @property
    def grid_file(self) -> Path:
        return self.state / "grid.json"

    @property
    def ca_dirs(self) -> list[Path]:
        return [self.state / "ca" / "services", self.state / "ca" / VO]

    @property
    def trust(self) -> list[Path]:
        """The CA certificates every process trusts; each CA's ``crl.pem`` is next to it."""
        return [d / ca.CA_CERT for d in self.ca_dirs]

    @property
    def credentials(self) -> Path:
        return self.state / "credentials"

    @property
    def admin(self) -> tuple[Path, Path]:
        """The grid's administrator credential (role super), readable by its owner only."""
        d = self.state / "admin"
        return d / f"{ADMIN}.crt", d / f"{ADMIN}.key"

    @property
    def operator(self) -> tuple[Path, Path]:
        """The grid operator's credential (``admin:xfs-operator``, from the service CA):
        drains OSDs; readable by its owner only."""
        d = self.state / "admin"
        return d / f"admin-{OPERATOR}.crt", d / f"admin-{OPERATOR}.key"


@dataclass
class Grid:
    """The persistent facts of one embedded grid (grid.json)."""

    user_uid: int
    volume: str
    mountpoint: str
    ports: dict[str, int] = field(default_factory=dict)
    osds: int = DEFAULT_OSDS  # fixed when the grid is made
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> key -> value
    netns: dict[str, str] = field(default_factory=dict)  # role -> network namespace (tests)
    hosts: dict[str, str] = field(default_factory=dict)  # role -> address; default loopback
    # where the MRC keeps the namespace: "sqlite", "postgresql" (a local cluster in
    # metadata_dir, xfs.common.pgcluster), or the postgresql:// address of a database
    # that runs without the grid; fixed when the grid is made
    metadata: str = "sqlite"
    metadata_dir: str = ""
    mrcs: int = 1  # MRCs over the store: one serves, the others stand by (postgresql only)

    @classmethod
    def load(cls, path: Path) -> Grid:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @property
    def osd_roles(self) -> list[str]:
        return [f"osd{i}" for i in range(1, self.osds + 1)]

    @property
    def mrc_roles(self) -> list[str]:
        return ["mrc", *(f"mrc{i}" for i in range(2, self.mrcs + 1))]

    @property
    def server_roles(self) -> list[str]:
        return [*self.mrc_roles, *self.osd_roles]

    @property
    def roles(self) -> list[str]:
        return [*self.server_roles, "mount"]

    def host(self, role: str) -> str:
        return self.hosts.get(role, LOOPBACK)

    @property
    def pg_cluster(self) -> pgcluster.Cluster | None:
        """The local PostgreSQL cluster this grid starts and stops, if it has one."""
        return pgcluster.Cluster(Path(self.metadata_dir)) if self.metadata == "postgresql" else None

    @property
    def store(self) -> str:
        """The MRCs' ``store``: "" (SQLite), the local cluster's address or the given one."""
        if self.pg_cluster is not None:
            return self.pg_cluster.dsn()
        return self.metadata if is_postgresql(self.metadata) else ""

    @property
    def mrc_address(self) -> str:
        """Every MRC's address: one, or a group of which one serves (xfs.common.rpc)."""
        return ",".join(f"{self.host(r)}:{self.ports.get(r, 0)}" for r in self.mrc_roles)

    def add_settings(self, settings: list[str]) -> None:
        """Merge ``ROLE.KEY=VALUE`` settings (later ones win); see :func:`parse_setting`."""
        roles = {"osd", *self.roles}
        for text in settings:
            role, key, value = parse_setting(text)
            if role not in roles:
                raise GridError(f"--set {text}: no role {role!r} (one of {sorted(roles)})")
            osds = sorted(r for r in roles if r.startswith("osd") and r != "osd")
            if role == "osd" and key == "metrics_port" and value and len(osds) > 1:
                raise GridError(
                    f"--set {text}: the {len(osds)} OSDs of this machine cannot share one "
                    f"port; give each its own ({', '.join(f'{r}.metrics_port=' for r in osds)})"
                )
            self.settings.setdefault(role, {})[key] = value

    def settings_of(self, role: str) -> dict[str, Any]:
        """The settings applied to ``role``: those of every OSD, then its own."""
        general = self.settings.get("osd", {}) if role.startswith("osd") else {}
        return {**general, **self.settings.get(role, {})}


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``ROLE.KEY=VALUE`` -> (role, key, value); VALUE is a TOML value, else a string."""
    name, eq, raw = text.partition("=")
    role, dot, key = name.strip().partition(".")
    if not (eq and dot and role and key):
        raise GridError(f"--set {text}: expected ROLE.KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return role, key.strip(), value


def parse_assignments(pairs: list[str], what: str) -> dict[str, str]:
    """``ROLE=VALUE`` pairs (the hidden ``--netns`` and ``--host`` of ``up``)."""
    result = {}
    for text in pairs:
        role, eq, value = text.partition("=")
        if not (eq and role and value):
            raise GridError(f"--{what} {text}: expected ROLE={what.upper()}")
        result[role] = value
    return result


def _free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there (connections of a process that stopped may
    linger in TIME_WAIT: the servers bind with SO_REUSEADDR, and so does this probe),
    else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise GridError("no free TCP port on 127.0.0.1")


# ---------------------------------------------------------------------------- set-up
def initialise(
    layout: Layout,
    mountpoint: Path,
    uid: int,
    osds: int = DEFAULT_OSDS,
    metadata: str = "sqlite",
    mrcs: int = 1,
) -> Grid:
    """Create CAs, certificates, data directories and the grid file (first ``up`` only)."""
    state = layout.state
    if metadata not in METADATA and not is_postgresql(metadata):
        raise GridError(
            f"--metadata {metadata!r}: one of {', '.join(METADATA)} or a postgresql:// address"
        )
    if mrcs != 1 and metadata == "sqlite":
        raise GridError(f"--mrcs {mrcs}: several MRCs share a PostgreSQL store only")
    if metadata == "postgresql" and (why := pgcluster.available()):
        raise GridError(f"--metadata postgresql: {why}")
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    for d in ("run", "logs"):
        (state / d).mkdir(exist_ok=True)
    ca.init_service_ca(state / "ca" / "services")
    ca.init_vo_ca(state / "ca" / VO, VO)
    grid = Grid(
        uid, f"home-{account_name(uid)}", str(mountpoint), osds=osds, metadata=metadata, mrcs=mrcs
    )
    mrc_uuids = {role: str(uuid.uuid4()) for role in grid.mrc_roles}
    for role, mrc_uuid in mrc_uuids.items():
        ca.issue_service(state / "ca" / "services", Kind.MRC, mrc_uuid, layout.role_dir(role))
    if osds < 1:
        raise GridError(f"--osds {osds}: a grid needs at least one OSD")
    for i in range(1, osds + 1):
        role = f"osd{i}"
        store = ObjectStore(layout.role_dir(role) / "data")
        layout.role_dir(role).mkdir(parents=True, exist_ok=True)
        store.open()
        ca.issue_service(state / "ca" / "services", Kind.OSD, store.uuid, layout.role_dir(role))
    ca.issue_user(state / "ca" / VO, ADMIN, state / "admin", role=Role.SUPER, days=3650)
    CredentialStore(layout.credentials, enroll_ca=state / "ca" / VO).get(uid)
    if metadata == "postgresql":
        grid.metadata_dir = str(pgcluster.home_for(state, f"grid-{mrc_uuids['mrc']}"))
    grid.save(layout.grid_file)
    return grid


def issue_operator(layout: Layout) -> None:
    """The grid operator's credential: ``up`` makes it when it is missing (a new grid,
    or a state directory made before grid operators)."""
    ca.issue_operator(layout.state / "ca" / "services", OPERATOR, layout.state / "admin", 3650)


def refresh_crls(layout: Layout) -> None:
    """Re-issue both CAs' CRLs (at every ``up``; running processes re-read them).

    This is also what upgrades a state directory made before CRLs existed.
    """
    for ca_dir in layout.ca_dirs:
        try:
            ca.write_crl(ca_dir, days=CRL_DAYS)
        except XfsError as e:
            raise GridError(f"cannot re-issue the CRL of {ca_dir}: {e.message}") from None


def _only(directory: Path, suffix: str) -> Path:
    found = sorted(directory.glob(f"*{suffix}"))
    if len(found) != 1:
        raise GridError(f"expected one *{suffix} in {directory}, found {len(found)}")
    return found[0]


def _with_settings(cfg: T, settings: dict[str, Any], role: str) -> T:
    """``cfg`` with ``settings`` applied, checked as a configuration file would be."""
    if not settings:
        return cfg
    data = tomllib.loads(config.dump(cfg))
    data.update(settings)
    where = f"--set {role}"
    try:
        return config.from_dict(type(cfg), data, Path("/"), where)
    except ConfigError as e:  # from_dict names ``where``; a dataclass's own check does not
        message = str(e)
        raise GridError(message if message.startswith(where) else f"{where}: {message}") from None


def build_configs(layout: Layout, grid: Grid) -> dict[str, Any]:
    """Every process's configuration (role -> config), with the grid's settings applied."""
    port = grid.ports.get
    mrc_address = grid.mrc_address

    def tls_of(role: str) -> TLSConfig:
        d = layout.role_dir(role)
        return TLSConfig(_only(d, ".crt"), _only(d, ".key"), layout.trust)

    configs: dict[str, Any] = {
        role: MRCConfig(
            tls=tls_of(role),
            data_dir=layout.role_dir(role) / "data",
            host=grid.host(role),
            port=port(role, 0),
            osd_dead_after=15.0,
            store=grid.store,
        )
        for role in grid.mrc_roles
    }
    for i, role in enumerate(grid.osd_roles, 1):
        configs[role] = OSDConfig(
            tls=tls_of(role),
            data_dir=layout.role_dir(role) / "data",
            mrc=mrc_address,
            host=grid.host(role),
            port=port(role, 0),
            heartbeat_interval=2.0,
            labels={"host": f"local-{i}"},
        )
    configs["mount"] = MountConfig(
        mrc=mrc_address,
        volume=grid.volume,
        mountpoint=Path(grid.mountpoint),
        trust=layout.trust,
        credentials=layout.credentials,
        enroll_ca=layout.state / "ca" / VO,
        vo=VO,
        allow_other=_allow_other_permitted(),
        audit_log=layout.role_dir("mount") / "audit.log",
    )
    return {role: _with_settings(c, grid.settings_of(role), role) for role, c in configs.items()}


def write_configs(layout: Layout, grid: Grid) -> None:
    """(Re)write every process's configuration: a server that runs keeps its port, one
    that does not gets its old port again if that is free (else another)."""
    for role in grid.server_roles:
        if role not in grid.ports or running_pid(layout, role) is None:
            grid.ports[role] = _free_port(grid.ports.get(role))
    grid.save(layout.grid_file)
    layout.role_dir("mount").mkdir(exist_ok=True)
    for role, cfg in build_configs(layout, grid).items():
        layout.config(role).write_text(config.dump(cfg))


def _allow_other_permitted() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        return any(
            line.strip() == "user_allow_other"
            for line in Path("/etc/fuse.conf").read_text().splitlines()
        )
    except OSError:
        return False


# ---------------------------------------------------------------------------- processes
def running_pid(layout: Layout, role: str) -> int | None:
    """The PID of this grid's ``role`` process, if it is still the one we started."""
    return processes.ours(layout.pid(role), layout.config(role))


def in_netns(netns: str | None) -> list[str]:
    """The prefix that runs a command in network namespace ``netns`` (None: here).

    ``nsenter --net`` switches only the network namespace (``ip netns exec`` would also
    unshare the mount namespace and hide the FUSE mount) and then execs the command, so
    the PID and the command line are the command's own.
    """
    return [] if netns is None else ["nsenter", f"--net=/run/netns/{netns}", "--"]


def spawn(layout: Layout, role: str, grid: Grid | None = None) -> subprocess.Popen[bytes] | None:
    """Start ``role`` unless it runs already (then None); in its namespace if it has one."""
    if running_pid(layout, role) is not None:
        return None
    grid = grid or Grid.load(layout.grid_file)
    command = role.rstrip("0123456789")
    log = layout.log(role).open("ab")
    proc = subprocess.Popen(
        [
            *in_netns(grid.netns.get(role)),
            *[sys.executable, "-m", "xfs.cli.main", command],
            *["--config", str(layout.config(role))],
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    layout.pid(role).write_text(f"{proc.pid}\n")
    return proc


def stop_role(layout: Layout, role: str, timeout: float = 20.0) -> None:
    processes.end(layout.pid(role), layout.config(role), timeout)


def stop_roles(layout: Layout, roles: list[str], timeout: float = 20.0) -> None:
    """``stop_role`` for several roles at once (they end in parallel)."""
    processes.end_all([(layout.pid(r), layout.config(r)) for r in roles], timeout)


# ---------------------------------------------------------------------------- admin calls
def _last_words(layout: Layout, role: str) -> str:
    """The error a process that ended wrote last to its log (its ``Error:`` line), with
    where the log is."""
    try:
        lines = [line.strip() for line in layout.log(role).read_text(errors="replace").splitlines()]
    except OSError:
        lines = []
    said = [line for line in lines if line.startswith("Error: ")] or lines[-1:] or ["no log"]
    return f"{said[-1]} (log: {layout.log(role)})"


async def _admin(layout: Layout, grid: Grid, deadline: float) -> None:
    """Wait for the MRC and the OSDs, then make sure the home volume exists."""
    trust = TrustStore.load(layout.trust)
    ctx = tls.client_context(*layout.admin, trust.ssl_cafile_bundle())
    mrc = grid.mrc_address
    async with open_pool(
        ctx, trust.identify, frame_limit=META_FRAME_LIMIT, retry=RetryPolicy(attempts=1)
    ) as pool:
        while True:
            try:
                status = await pool.call(mrc, MRC.status, Empty(), expect=Kind.MRC)
                if sum(o.alive for o in status.osds) >= grid.osds:
                    break
            except XfsError:
                pass
            for role in grid.server_roles:
                if processes.ended(layout.pid(role)):  # it ended while starting
                    raise GridError(f"{role} did not start: {_last_words(layout, role)}")
            if time.monotonic() > deadline:
                raise GridError(
                    f"the MRC and {grid.osds} OSDs did not come up; see {layout.state / 'logs'}"
                )
            await trio.sleep(0.2)
        try:
            await pool.call(mrc, MRC.volume_get, VolumeName(grid.volume))
        except XfsError:
            user = account_name(grid.user_uid)
            group = local_groups(grid.user_uid)[0]
            striping = StripingPolicy(1 << 20, 1)
            policy = FilePolicy(
                replication=UpdatePolicy.RW, factor=min(3, grid.osds), striping=striping
            )
            await pool.call(
                mrc,
                MRC.volume_create,
                VolumeCreate(
                    grid.volume,
                    owner=f"{user}@{VO}",
                    group=f"{group}@{VO}",
                    mode=0o700,
                    striping=striping,
                    policy=policy,
                ),
            )


def admin_main(state: Path, timeout: float) -> None:
    """:func:`_admin` as a process of its own (``up`` runs it inside the MRC's namespace)."""
    layout = Layout(state)
    try:
        trio.run(_admin, layout, Grid.load(layout.grid_file), time.monotonic() + timeout)
    except (GridError, BaseExceptionGroup) as e:
        error = groups.leaf(e, (GridError,))
        if not isinstance(error, GridError):
            raise
        print(error, file=sys.stderr)
        sys.exit(1)


def _run_admin(layout: Layout, grid: Grid, deadline: float) -> None:
    netns = grid.netns.get("mrc")
    if netns is None:
        try:
            trio.run(_admin, layout, grid, deadline)
        except BaseExceptionGroup as e:  # (a nursery's): the GridError in it, one line
            raise groups.leaf(e, (GridError,)) from None
        return
    timeout = max(1.0, deadline - time.monotonic())
    code = (
        "import sys; from pathlib import Path; from xfs import embedded; "
        "embedded.admin_main(Path(sys.argv[1]), float(sys.argv[2]))"
    )
    argv = [*in_netns(netns), sys.executable, "-c", code, str(layout.state), str(timeout)]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 30
        )
    except subprocess.TimeoutExpired:
        raise GridError(f"the admin calls in network namespace {netns} hung") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise GridError(f"in network namespace {netns}: {lines[-1]}")


@dataclass
class UpReport:
    """What ``up`` found and did: one line each, in order (nothing: it all ran already)."""

    grid: Grid
    done: list[str] = field(default_factory=list)


def up(
    state: Path,
    mountpoint: Path | None,
    timeout: float = 60.0,
    *,
    osds: int | None = None,
    settings: list[str] | None = None,
    netns: dict[str, str] | None = None,
    hosts: dict[str, str] | None = None,
    metadata: str | None = None,
    mrcs: int | None = None,
) -> UpReport:
    """Start the grid (made first if new, with ``osds`` OSDs) and mount its home volume;
    repair what it can of a grid that runs in part: a stale mount (its process gone) is
    unmounted, dead processes are started again, each on its old port where it is free.

    ``settings``, ``netns`` and ``hosts`` are merged into grid.json and take effect as
    each process starts: a change for a process that runs now is refused (GridError), as
    is another ``osds`` or ``mountpoint`` for a grid made already. If starting fails, what
    this call started is stopped again."""
    layout = Layout(state)
    existing = layout.grid_file.exists()
    report = UpReport(_load_or_make(layout, mountpoint, osds, metadata, mrcs))
    grid = report.grid
    if existing:
        running = [r for r in grid.roles if running_pid(layout, r) is not None]
        _refuse_changes(layout, grid, mountpoint, osds, settings or [], running)
    else:
        report.done.append(f"made a new grid of {grid.osds} OSDs in {layout.state}")
    grid.add_settings(settings or [])
    grid.netns.update(netns or {})
    grid.hosts.update(hosts or {})
    build_configs(layout, grid)  # refuses bad settings before they are kept
    grid.save(layout.grid_file)
    if not layout.operator[0].exists():
        issue_operator(layout)
    refresh_crls(layout)
    mnt = Path(grid.mountpoint)
    mount_pid = running_pid(layout, "mount")
    if mount_pid is None and mounts.mounted(mnt, "fuse"):
        mounts.lazy_unmount(mnt)  # its process is gone: every call there would fail (ENOTCONN)
        report.done.append(f"unmounted the stale mount at {mnt} (its process was gone)")
    mnt.mkdir(parents=True, exist_ok=True)
    if mount_pid is None and mounts.mounted(mnt, "fuse"):
        raise GridError(f"{mnt} is already mounted by something else")
    was_running = [r for r in grid.roles if running_pid(layout, r) is not None]
    write_configs(layout, grid)
    started: list[str] = []
    pg_started = False
    try:
        deadline = time.monotonic() + timeout
        pg_started = grid.pg_cluster is not None and _start_cluster(grid.pg_cluster, report)
        for role in grid.server_roles:
            if spawn(layout, role, grid) is not None:
                started.append(role)
        _run_admin(layout, grid, deadline)
        mount = spawn(layout, "mount", grid)
        if mount is not None:
            started.append("mount")
        while not mounts.mounted(mnt, "fuse"):
            if mount is not None and mount.poll() is not None:
                raise GridError(f"the mount process exited; see {layout.log('mount')}")
            if time.monotonic() > deadline:
                raise GridError(f"{mnt} was not mounted in time; see {layout.log('mount')}")
            time.sleep(0.05)
        os.stat(mnt)  # usable: the root answers
    except BaseException as e:
        for role in reversed(started):
            stop_role(layout, role)
        if pg_started and grid.pg_cluster is not None:
            with contextlib.suppress(pgcluster.ClusterError):
                grid.pg_cluster.stop()
            started.append("postgresql")
        if isinstance(e, GridError) and started:
            raise GridError(f"{e}; stopped what this xfs up started ({', '.join(started)})") from e
        raise
    if started:
        verb = "restarted" if was_running else "started"
        report.done.append(f"{verb} {', '.join(started)}")
    return report


def _start_cluster(cluster: pgcluster.Cluster, report: UpReport) -> bool:
    """Make and start the grid's PostgreSQL cluster, unless it runs; whether this call
    started it."""
    try:
        made = not cluster.exists()
        cluster.init()
        if cluster.start() or made:
            report.done.append(f"started PostgreSQL in {cluster.root}")
            return True
        return False
    except pgcluster.ClusterError as e:
        raise GridError(f"{e} (log: {cluster.log})") from e


def _load_or_make(
    layout: Layout,
    mountpoint: Path | None,
    osds: int | None,
    metadata: str | None,
    mrcs: int | None,
) -> Grid:
    if layout.grid_file.exists():
        grid = Grid.load(layout.grid_file)
        if metadata is not None and metadata != grid.metadata:
            raise GridError(
                f"this grid keeps its metadata in {redacted(grid.metadata)}; --metadata "
                "applies only when a grid is made (xfs store-migrate copies a store to "
                "another engine)"
            )
        if mrcs is not None and mrcs != grid.mrcs:
            raise GridError(f"this grid has {grid.mrcs} MRC(s); --mrcs applies only when made")
        return grid
    return initialise(
        layout,
        mountpoint or default_mountpoint(),
        os.getuid(),
        osds or DEFAULT_OSDS,
        metadata or "sqlite",
        mrcs or 1,
    )


def _refuse_changes(
    layout: Layout,
    grid: Grid,
    mountpoint: Path | None,
    osds: int | None,
    settings: list[str],
    running: list[str],
) -> None:
    """GridError for what an ``up`` of this existing grid cannot apply."""
    if osds is not None and osds != grid.osds:
        raise GridError(
            f"this grid has {grid.osds} OSDs; --osds applies only when a grid is made "
            f"(a new state directory, or remove {layout.state} after xfs down)"
        )
    if mountpoint is not None and str(mountpoint) != grid.mountpoint:
        if "mount" in running:
            raise GridError(
                f"the home volume is mounted at {grid.mountpoint}; xfs down first to move it"
            )
        grid.mountpoint = str(mountpoint)
    before = {role: grid.settings_of(role) for role in grid.roles}
    trial = Grid(**{**grid.__dict__, "settings": copy.deepcopy(grid.settings)})
    trial.add_settings(settings)
    changed = [r for r in grid.roles if trial.settings_of(r) != before[r] and r in running]
    if changed:
        raise GridError(
            f"--set changes the configuration of {', '.join(changed)}, which "
            f"{'runs' if len(changed) == 1 else 'run'} now and read it only when started: "
            "xfs down first, then xfs up with --set"
        )


def down(state: Path) -> list[str]:
    """Unmount and stop everything; returns the roles that were running."""
    layout = Layout(state)
    if not layout.grid_file.exists():
        raise GridError(f"no xfs grid in {state}")
    grid = Grid.load(layout.grid_file)
    stopped = [r for r in grid.roles if running_pid(layout, r) is not None]
    stop_role(layout, "mount")
    mnt = Path(grid.mountpoint)
    if mounts.mounted(mnt, "fuse"):
        mounts.lazy_unmount(mnt)
    stop_roles(layout, list(reversed(grid.osd_roles)))  # the OSDs at once, then the MRCs
    stop_roles(layout, list(reversed(grid.mrc_roles)))
    if grid.pg_cluster is not None and grid.pg_cluster.pid() is not None:
        try:
            grid.pg_cluster.stop()
        except pgcluster.ClusterError as e:
            raise GridError(str(e)) from e
        stopped.append("postgresql")
    return stopped
