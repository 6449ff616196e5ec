"""Configuration of the long-running processes: TOML files, overridden by flags.

Each process reads one TOML file whose keys are exactly the fields of its dataclass
below (unknown keys are an error, so a typo does not silently fall back to a default).
Relative paths are taken relative to the file's directory.

``crl_check_interval`` (MRC and OSD, seconds, default 10): how often a server re-reads its
trust files and CRLs (those whose mtime changed) and closes the connections whose
certificate is now refused. The CRL of each trusted CA lives next to its file in ``trust``
(``xfs.common.crl``); a CA whose CRL is missing or expired vouches for nobody.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")

MIN_XCAP_LIFETIME = 10.0  # seconds: twice the clock skew an OSD allows
MAX_XCAP_LIFETIME = 600.0  # seconds: an XCap expires within minutes


class ConfigError(Exception):
    """A configuration file or flag is wrong; the message says which and why."""


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    trust: list[Path]  # CA certificates: the service CA and every trusted VO CA


#: Clients replace a connection idle for 60 s (xfs.common.rpc.Pool.IDLE_REUSE); a server
#: must wait well longer before it closes one, or a request could cross the close.
MIN_IDLE_TIMEOUT = 120.0


def _check_idle_timeout(value: float) -> None:
    if value < MIN_IDLE_TIMEOUT:
        raise ConfigError(
            f"idle_timeout: {value:g} s is shorter than {MIN_IDLE_TIMEOUT:g} s (clients "
            "reuse a connection idle for up to 60 s)"
        )


@dataclass(frozen=True)
class MRCConfig:
    tls: TLSConfig
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 32636
    # where the namespace is kept: "" for SQLite (<data_dir>/mrc.db), or a PostgreSQL
    # connection string (postgresql://...; docs/design/metadata-ha.md)
    store: str = ""
    # seconds between a standby MRC's tries to take over (MRCs over one PostgreSQL store)
    standby_poll: float = 0.5
    xcap_lifetime: float = 600.0  # seconds an XCap stays valid
    osd_dead_after: float = 30.0  # seconds without heartbeat before an OSD is not used
    client_lease: float = 30.0  # seconds a client's opens and locks outlive its last renewal
    grace: float = 5.0  # seconds in-flight requests get on SIGTERM
    # seconds between fsyncs of the metadata journal (group commit): what a power loss
    # may lose of acknowledged changes that no fsync(2) covered (docs/design/metadata.md)
    sync_interval: float = 0.1
    crl_check_interval: float = 10.0  # seconds between re-reads of the trust files and CRLs
    audit_log: Path | None = None  # None: <data_dir>/audit.log
    audit_max_bytes: int = 64 << 20  # the audit log is rotated at this size ...
    audit_max_age: float = 86400.0  # ... or once its first record is this old (seconds)
    # bytes of users' request frames held at once; a quarter of it per principal
    frame_memory: int = 128 << 20
    xcap_key_rotation: float = 24.0  # hours a signing key signs before the next one does
    max_delegation: float = 7 * 86400.0  # seconds a delegation to a worker may last at most
    # replication (docs/design/replication.md)
    osd_lease: float = 10.0  # seconds an OSD may act as primary after a heartbeat it sent
    osd_replace_after: float = 300.0  # seconds silent before an OSD's replicas are replaced
    heal_interval: float = 2.0  # seconds between the healer's rounds
    # background scrubbing: a pass over every file each scrub_interval seconds (0: never;
    # the first one interval after the start), at most scrub_rate files a second
    scrub_interval: float = 86400.0
    scrub_rate: float = 50.0
    idle_timeout: float = 300.0  # seconds before a connection with nothing open is closed
    # Prometheus metrics at http://metrics_host:metrics_port/metrics (0: none)
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check_idle_timeout(self.idle_timeout)
        if self.store and not self.store.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"store: {self.store!r} is neither empty (SQLite in data_dir) nor a "
                "PostgreSQL connection string (postgresql://...)"
            )
        if not 1.0 <= self.osd_lease <= self.osd_dead_after:
            raise ConfigError(
                f"osd_lease: {self.osd_lease:g} s must be at least 1 s and at most "
                f"osd_dead_after ({self.osd_dead_after:g} s)"
            )
        if self.osd_replace_after < self.osd_dead_after:
            raise ConfigError(
                f"osd_replace_after: {self.osd_replace_after:g} s is shorter than "
                f"osd_dead_after ({self.osd_dead_after:g} s)"
            )
        if not MIN_XCAP_LIFETIME <= self.xcap_lifetime <= MAX_XCAP_LIFETIME:
            raise ConfigError(
                f"xcap_lifetime: {self.xcap_lifetime:g} s is outside "
                f"{MIN_XCAP_LIFETIME:g}..{MAX_XCAP_LIFETIME:g} s (an XCap must expire "
                "within minutes, so that a changed permission takes effect)"
            )
        if not self.xcap_key_rotation * 3600 >= self.xcap_lifetime:
            raise ConfigError(
                f"xcap_key_rotation: {self.xcap_key_rotation:g} h is shorter than "
                f"xcap_lifetime ({self.xcap_lifetime:g} s)"
            )


@dataclass(frozen=True)
class OSDConfig:
    tls: TLSConfig
    data_dir: Path
    mrc: str  # "host:port"
    host: str = "127.0.0.1"
    port: int = 32640
    heartbeat_interval: float = 2.0
    labels: dict[str, str] = field(default_factory=dict)
    grace: float = 5.0
    crl_check_interval: float = 10.0  # seconds between re-reads of the trust files and CRLs
    audit_log: Path | None = None  # None: <data_dir>/audit.log
    audit_max_bytes: int = 64 << 20  # the audit log is rotated at this size ...
    audit_max_age: float = 86400.0  # ... or once its first record is this old (seconds)
    # bytes of users' request frames (object writes) held at once; a quarter of it, at
    # least one frame, per principal
    frame_memory: int = 512 << 20
    peer_timeout: float = 5.0  # seconds a forward to another replica may take per attempt
    forward_deadline: float = 20.0  # seconds a primary tries a replica before failing a write
    io_threads: int = 8  # object reads and writes on the local disk at once
    idle_timeout: float = 300.0  # seconds before a connection with nothing open is closed
    # serve the local socket, through which mounts on this host read objects themselves
    # (docs/design/local-reads.md)
    local_reads: bool = True
    # Prometheus metrics at http://metrics_host:metrics_port/metrics (0: none)
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check_idle_timeout(self.idle_timeout)


@dataclass(frozen=True)
class MountConfig:
    mrc: str  # "host:port"
    volume: str
    mountpoint: Path
    trust: list[Path]
    credentials: Path  # credential store: <dir>/<uid>/cert.pem, key.pem
    identity_map: Path | None = None  # gridmap-style file; None: names of local accounts
    enroll_ca: Path | None = None  # embedded default: issue certs for local users on first use
    # seconds an enrolled credential is valid (renewed at half, from the account database):
    # how long a group the account left may still count for the user's own certificate
    credential_lifetime: float = 3600.0
    vo: str = "local"
    allow_other: bool = True
    io_timeout: float = 30.0  # seconds before an operation with no reachable server fails
    osd_timeout: float = 10.0  # seconds one OSD call may take before another replica is tried
    xcap_renew_margin: float = 60.0
    # a delegation token file (xfs delegate create --out): the mount serves only the uid
    # that runs it, with that uid's (worker) credential, acting for the grantor
    delegation: Path | None = None
    audit_log: Path | None = None  # where the mount records refused local users; None: nowhere
    # seconds the kernel may serve attributes and entries from its cache: how long a
    # change made through another client may stay unseen here (this mount's own are
    # seen at once); an open always fetches the attributes again (close-to-open)
    attr_timeout: float = 10.0
    entry_timeout: float = 10.0
    # seconds the kernel may remember that a name is absent (a negative entry), and the
    # longest this mount answers "absent" from the names of a directory it made itself
    # without asking the MRC: how long a name another client creates may stay unseen
    # here (0: never cache absence)
    negative_timeout: float = 10.0
    # MiB of one open file's writes on their way to the OSDs at once (whole objects, at
    # least 2); a write beyond waits: the client's dirty limit per file. Measured on
    # 2 cores, factor-3 writes: 4 MiB ~75 MB/s, 8 ~79, 16 ~87, 32 ~79
    write_window: int = 16
    read_cache_objects: int = 16  # whole objects one open file keeps for reads
    # objects fetched ahead of a sequential reader (at least the stripe width, at most
    # read_cache_objects): how many reads of one file the OSDs work on at once
    read_ahead: int = 4
    # read object ranges straight from the files of OSDs on this host, when they grant it
    # (docs/design/local-reads.md)
    local_reads: bool = True
    # Prometheus metrics at http://metrics_host:metrics_port/metrics (0: none)
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"


def _convert(tp: Any, value: Any, base: Path, where: str) -> Any:
    origin = getattr(tp, "__origin__", None)
    if tp is Path or tp == (Path | None):
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p
    if origin is list:
        (item,) = tp.__args__
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(item, v, base, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{where}: expected a table of strings")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return from_dict(tp, value, base, where)  # type: ignore[arg-type]
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], base: Path, where: str = "") -> T:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs = {
        k: _convert(hints[k], v, base, f"{where}.{k}" if where else k) for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def load(cls: type[T], path: Path, overrides: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from a TOML file, with ``overrides`` (flags) applied on top."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(cls, data, path.parent.resolve())


def dump(config: Any) -> str:
    """Render a config dataclass as TOML (paths as strings, None left out)."""
    lines: list[str] = []
    tables: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            tables.append(f"\n[{f.name}]\n" + dump(value))
        elif isinstance(value, dict):
            inner = ", ".join(f"{k} = {_toml(v)}" for k, v in value.items())
            lines.append(f"{f.name} = {{ {inner} }}")
        else:
            lines.append(f"{f.name} = {_toml(value)}")
    return "\n".join(lines) + "\n" + "".join(tables)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
