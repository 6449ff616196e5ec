"""A local PostgreSQL cluster for the embedded grid (``xfs up --metadata postgresql``)
and the tests: Debian's PostgreSQL programs, a cluster of its own in one directory,
reached only through a Unix socket in that directory (no TCP port), by its one role
``xfs``.

PostgreSQL refuses to run as root. When root makes the cluster, it belongs to the
``postgres`` account Debian's package creates, and lives where that package keeps
clusters (``/var/lib/postgresql``): a directory under root's 0700 state directory
would be out of that account's reach. Its socket is then reachable by ``postgres``
and root only (mode 0700).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PORT = 5432  # names the socket file only: the cluster listens on no TCP port
ROLE = "xfs"
SERVER_ACCOUNT = "postgres"  # who runs the server when root asks for one
ROOT_CLUSTERS = Path("/var/lib/postgresql/xfs")
SETTINGS = f"""
# xfs: reached through the Unix socket in this cluster's directory only
listen_addresses = ''
port = {PORT}
unix_socket_permissions = 0700
"""


class ClusterError(Exception):
    """A local PostgreSQL cluster could not be made, started or stopped."""


def program(name: str) -> str:
    """The path of PostgreSQL's program ``name`` (``initdb``, ``pg_ctl``): on PATH, else
    Debian's newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which(name)
    if found:
        return found
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if os.access(f"{bindir}/{name}", os.X_OK):
            return f"{bindir}/{name}"
    raise ClusterError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")


def _version(bindir: str) -> float:
    try:
        return float(Path(bindir).parent.name)
    except ValueError:
        return 0.0


def available() -> str | None:
    """None when a local cluster can be made here, else why not."""
    try:
        program("initdb")
        program("pg_ctl")
    except ClusterError as e:
        return str(e)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            return f"root cannot run PostgreSQL and there is no {SERVER_ACCOUNT!r} account"
    return None


def home_for(state: Path, name: str) -> Path:
    """Where the cluster of the grid in ``state`` lives (see the module docstring)."""
    return ROOT_CLUSTERS / name if os.geteuid() == 0 else state / "pg"


@dataclass(frozen=True)
class Cluster:
    root: Path  # the cluster's directory: data/, the socket, the log

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgresql.log"

    def dsn(self, database: str = "xfs") -> str:
        return f"postgresql://{ROLE}@/{database}?host={self.root}&port={PORT}"

    def _run(self, *argv: str, timeout: float = 60.0) -> str:
        account = SERVER_ACCOUNT if os.geteuid() == 0 else None
        try:
            proc = subprocess.run(
                argv,
                user=account,
                group=account,
                extra_groups=[] if account else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd="/",
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ClusterError(f"{Path(argv[0]).name}: {e}") from e
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ClusterError(f"{Path(argv[0]).name} failed: {' / '.join(said)}")
        return proc.stdout

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        """Make the cluster (nothing if it exists) with database ``xfs``."""
        if self.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_ACCOUNT)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run(
            program("initdb"),
            "-D",
            str(self.data),
            "-U",
            ROLE,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        )
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(SETTINGS + f"unix_socket_directories = '{self.root}'\n")
        self.start()
        self._run(program("createdb"), "-h", str(self.root), "-p", str(PORT), "-U", ROLE, "xfs")

    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def start(self, timeout: float = 60.0) -> bool:
        """Start the server unless it runs; True if this call started it."""
        if self.pid() is not None:
            return False
        self._run(
            program("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 5,
        )
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (fast: sessions end, what was committed is kept), by its PID."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
        deadline = time.monotonic() + timeout
        while self.pid() == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid() == pid:
            os.kill(pid, signal.SIGQUIT)  # "immediate": crash recovery at the next start
            raise ClusterError(f"PostgreSQL (PID {pid}) did not stop in {timeout:g} s")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
