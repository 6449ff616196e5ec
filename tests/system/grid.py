"""A real embedded grid for system and FUSE tests: `xfs up` / `xfs down` as subprocesses.

``Grid`` owns one state directory and one mountpoint under a root directory that the
test gives it. Everything it starts is stopped by :meth:`Grid.cleanup`, which never
raises and never touches a process that is not ours: it runs ``xfs down``, lazily
unmounts the mountpoint if it is still in /proc/mounts, then SIGKILLs every PID listed in
``<state>/run/*.pid`` whose command line names this state directory (a role run in a
network namespace is ``nsenter --net=... -- python ...``, which execs python: same PID,
and its command line names the state directory either way).

``Grid(root, osds=N, settings=[...], netns={role: name}, hosts={role: address})`` passes
``--osds``, ``--set``, ``--netns`` and ``--host`` to ``xfs up``. The namespaces are the
test's (tests/system/netns.py ``Network``), which removes them; :meth:`Grid.cleanup` only
stops processes. With the MRC in a namespace, admin commands (:meth:`Grid.admin`,
:meth:`Grid.status`) run in it via nsenter, with ``--mrc`` and the admin credential.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

UP_TIMEOUT = 90.0
# Where the grids of the tests keep their metadata: SQLite (the embedded default), but
# the conformance suite and the model-based test run on PostgreSQL where it is installed
# (the unit tests of the namespace run on both stores). XFS_TEST_METADATA and
# XFS_TEST_CONFORMANCE_METADATA (sqlite | postgresql) choose otherwise.
METADATA = os.environ.get("XFS_TEST_METADATA", "sqlite")


def conformance_metadata() -> str:
    from xfs.common import pgcluster

    default = "postgresql" if pgcluster.available() is None else "sqlite"
    return os.environ.get("XFS_TEST_CONFORMANCE_METADATA", default)
DOWN_TIMEOUT = 60.0


def xfs_command() -> list[str]:
    """The `xfs` entry point of the interpreter running the tests."""
    script = Path(sys.executable).parent / "xfs"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "xfs.cli.main"]


def run(
    argv: list[str], *, timeout: float = 60.0, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure the message carries its output."""
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{argv!r} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point right now (any file system type)."""
    target = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 2)


def xfs_mounts() -> list[str]:
    """Every fuse.xfs line of /proc/mounts."""
    with open("/proc/mounts") as f:
        return [line for line in f if "fuse.xfs" in line]


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


class Grid:
    """The embedded grid of one test module: a state directory and a mountpoint."""

    def __init__(
        self,
        root: Path,
        osds: int = 3,
        settings: list[str] | None = None,
        netns: dict[str, str] | None = None,
        hosts: dict[str, str] | None = None,
        metadata: str | None = None,
        mrcs: int = 1,
    ) -> None:
        self.root = root
        self.metadata = metadata or METADATA
        self.mrcs = mrcs
        self.state = root / "state"
        self.mnt = root / "mnt"
        self.osds = osds
        self.settings = list(settings or [])
        self.netns = dict(netns or {})
        self.hosts = dict(hosts or {})
        self.osd_roles = tuple(f"osd{i}" for i in range(1, osds + 1))
        self.mrc_roles = ("mrc", *(f"mrc{i}" for i in range(2, mrcs + 1)))
        self.server_roles = (*self.mrc_roles, *self.osd_roles)
        self.roles = (*self.server_roles, "mount")
        self.up_races = 0  # how often `xfs up` lost the race described in ``up``
        self.extra_mounts: list[Path] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}  # started here: reaped here

    # ---------------------------------------------------------------- commands
    def xfs(self, *args: str, timeout: float = 60.0, check: bool = True) -> Any:
        return run([*xfs_command(), *args], timeout=timeout, check=check)

    def admin(self, *args: str, timeout: float = 60.0, check: bool = True) -> Any:
        """An admin command (``xfs status``, ``xfs volume ...``) as the grid's administrator,
        run inside the MRC's network namespace if it has one."""
        netns = self.netns.get("mrc")
        if netns is None:
            return self.xfs(*args, "--state", str(self.state), timeout=timeout, check=check)
        grid = json.loads((self.state / "grid.json").read_text())
        cert, key = self.state / "admin" / "xfs-admin.crt", self.state / "admin" / "xfs-admin.key"
        trust = [f"--trust={self.state / 'ca' / ca / 'ca.crt'}" for ca in ("services", "local")]
        argv = [
            "nsenter", f"--net=/run/netns/{netns}", "--", *xfs_command(), *args,
            "--mrc", f"{self.hosts.get('mrc', '127.0.0.1')}:{grid['ports']['mrc']}",
            "--cert", str(cert), "--key", str(key), *trust,
        ]
        return run(argv, timeout=timeout, check=check)

    def up(self) -> subprocess.CompletedProcess[str]:
        """`xfs up`: start (or restart, with the same data) and mount; returns once mounted.

        Works around a race in `xfs up` (xfs/embedded.py): right after spawning the mount
        process it may read an empty /proc/PID/cmdline (the child is still inside
        execve), take the mount for dead and fail with "the mount process exited" while
        the mount comes up fine. `xfs up` is idempotent, so a second call finishes it.
        """
        deadline = time.monotonic() + UP_TIMEOUT
        options = ["--osds", str(self.osds), "--metadata", self.metadata]
        options += ["--mrcs", str(self.mrcs)] if self.mrcs > 1 else []
        options += [f"--set={s}" for s in self.settings]
        options += [f"--netns={role}={name}" for role, name in self.netns.items()]
        options += [f"--host={role}={address}" for role, address in self.hosts.items()]
        for _ in range(3):
            proc = self.xfs(
                "up", "--state", str(self.state), "--mountpoint", str(self.mnt), *options,
                timeout=max(1.0, deadline - time.monotonic()), check=False,
            )
            if proc.returncode == 0 or "the mount process exited" not in proc.stderr:
                break
            if self.pid("mount") is None:
                break  # it really did exit
            self.up_races += 1
        if proc.returncode != 0:
            raise AssertionError(
                f"xfs up failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{self.logs()}"
            )
        assert mounted(self.mnt), f"xfs up returned but {self.mnt} is not mounted"
        return proc

    def down(self) -> subprocess.CompletedProcess[str]:
        """`xfs down`: unmount and stop every process of this grid."""
        return self.xfs("down", "--state", str(self.state), timeout=DOWN_TIMEOUT)

    def status(self) -> dict[str, Any]:
        proc = self.admin("status", "--json", timeout=60)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def wait_osds_alive(self, n: int, timeout: float = 60.0) -> None:
        """Wait until the MRC reports exactly ``n`` OSDs alive."""
        deadline = time.monotonic() + timeout
        alive = None
        while True:
            left = deadline - time.monotonic()
            proc = self.admin("status", "--json", timeout=max(1.0, min(30.0, left)), check=False)
            if proc.returncode == 0:
                alive = sum(o["alive"] for o in json.loads(proc.stdout)["osds"])
                if alive == n:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{alive} OSDs alive, not {n}, after {timeout:g} s\n{self.logs()}"
                )
            time.sleep(0.2)

    # ---------------------------------------------------------------- processes
    def pid(self, role: str) -> int | None:
        """The PID of ``role`` if that process is alive and is this grid's."""
        try:
            pid = int((self.state / "run" / f"{role}.pid").read_text())
        except (OSError, ValueError):
            return None
        cmdline = _cmdline(pid)
        if cmdline is None or str(self.state).encode() not in cmdline or not _alive(pid):
            return None
        return pid

    def pids(self) -> dict[str, int]:
        return {role: pid for role in self.roles if (pid := self.pid(role)) is not None}

    def kill(self, role: str, timeout: float = 10.0) -> None:
        """SIGKILL ``role`` (if it runs and is ours) and wait until it is gone: a crash."""
        pid = self.pid(role)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        child = self.children.pop(role, None)
        if child is not None and child.pid == pid:
            child.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{role} (pid {pid}) still alive {timeout:g} s after SIGKILL")
            time.sleep(0.02)

    def start(self, role: str) -> int:
        """Start ``role`` again, with its configuration (same port, data and namespace)."""
        from xfs import embedded

        proc = embedded.spawn(embedded.Layout(self.state), role)
        if proc is not None:
            self.children[role] = proc
        pid = self.pid(role) or (proc.pid if proc is not None else None)
        assert pid is not None, f"{role} did not start\n{self.logs()}"
        return pid

    def osd_data(self, role: str) -> Path:
        """The object store root of OSD ``role`` (xfs/osd/objects.py)."""
        return self.state / role / "data"

    def osd_roles_by_uuid(self) -> dict[str, str]:
        """{OSD uuid: role}."""
        return {
            (self.osd_data(role) / "UUID").read_text().strip(): role for role in self.osd_roles
        }

    def our_processes(self) -> list[int]:
        """Every live process whose command line names this state directory."""
        needle = str(self.state).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                cmdline = _cmdline(int(entry.name))
                if cmdline and needle in cmdline and _alive(int(entry.name)):
                    found.append(int(entry.name))
        return found

    def restart_servers(self, timeout: float = 60.0) -> None:
        """SIGTERM the MRC and the OSDs (the mount stays), then start them again.

        Uses the embedded grid's own spawn, so the same configuration files (and ports)
        are used; returns once the MRC reports every OSD alive.
        """
        from xfs import embedded

        layout = embedded.Layout(self.state)
        for role in reversed(self.server_roles):
            embedded.stop_role(layout, role, timeout=20.0)
            if (child := self.children.pop(role, None)) is not None:
                child.wait(timeout=20.0)
        for role in self.server_roles:
            self.start(role)
        self.wait_osds_alive(self.osds, timeout)

    # ---------------------------------------------------------------- more mounts
    def extra_mount(
        self,
        name: str,
        netns: str | None = None,
        settings: str = "",
        *,
        drop: tuple[str, ...] = (),
        delegation: Path | None = None,
    ) -> Path:
        """Mount the same volume a second time, as a second client would (another grid node).

        The extra mount is its own process with its own connections and caches, started
        from a copy of the embedded mount configuration (in network namespace ``netns``
        if given), without the keys in ``drop``, plus ``settings`` (TOML lines of the
        mount's table, such as ``attr_timeout = 1.0``), with ``--delegation`` if given;
        :meth:`cleanup` stops it.
        """
        from xfs import embedded

        layout = embedded.Layout(self.state)
        mnt = self.root / f"mnt-{name}"
        mnt.mkdir(exist_ok=True)
        role_dir = self.state / f"mount-{name}"
        role_dir.mkdir(exist_ok=True)
        text = layout.config("mount").read_text()
        marker = f'mountpoint = "{self.mnt}"'
        assert marker in text, text
        config = role_dir / "config.toml"
        text = text.replace(marker, f'mountpoint = "{mnt}"')
        for key in drop:
            text = re.sub(rf"(?m)^{re.escape(key)}\s*=.*\n", "", text)
        for line in settings.splitlines():  # each replaces the key's line, or is added
            key = line.split("=", 1)[0].strip()
            text, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", line, text)
            if n == 0:
                text = text.replace(f'mountpoint = "{mnt}"', f'mountpoint = "{mnt}"\n{line}')
        config.write_text(text)
        log = (self.state / "logs" / f"mount-{name}.log").open("ab")
        proc = subprocess.Popen(
            [*embedded.in_netns(netns), sys.executable, "-m", "xfs.cli.main", "mount",
             "--config", str(config),
             *([] if delegation is None else ["--delegation", str(delegation)])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        (self.state / "run" / f"mount-{name}.pid").write_text(f"{proc.pid}\n")
        self.children[f"mount-{name}"] = proc
        self.extra_mounts.append(mnt)
        deadline = time.monotonic() + UP_TIMEOUT
        while not mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"extra mount {name} did not come up\n{self.logs()}")
            time.sleep(0.05)
        return mnt

    def store_rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a query on the MRC's store, read only, beside the running MRC (SQLite
        or PostgreSQL, as the grid keeps its metadata)."""
        from xfs import embedded
        from xfs.common import config
        from xfs.common.config import MRCConfig
        from xfs.mrc.pgstore import pg_sql

        # the MRC's own configuration says where its store is (as `xfs fsck --state`)
        mrc_toml = embedded.Layout(self.state).config("mrc")
        store = config.load(MRCConfig, mrc_toml, {}).store
        if store:
            import psycopg

            with psycopg.connect(store) as pg:
                return pg.execute(pg_sql(sql), args).fetchall()
        db = self.state / "mrc" / "data" / "mrc.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute(sql, args).fetchall()

    def logs(self, tail: int = 40) -> str:
        out = []
        for log in sorted((self.state / "logs").glob("*.log")):
            with contextlib.suppress(OSError):
                lines = log.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def assert_no_bugs_logged(self) -> None:
        """Services log a bug they survive (a failed background task) with its traceback;
        a test run that produced one fails even if every operation seemed right."""
        for log in sorted((self.state / "logs").glob("*.log")):
            text = log.read_text(errors="replace")
            at = text.find("Traceback (most recent call last)")
            if at >= 0:
                excerpt = text[max(0, at - 400) : at + 4000]
                raise AssertionError(f"{log.name} recorded a bug:\n{excerpt}")

    def cleanup(self) -> None:
        """Stop everything this grid started (the extra mounts first: clients before
        the servers they would wait for). Never raises."""
        for extra in self.extra_mounts:
            with contextlib.suppress(Exception):
                if mounted(extra):
                    run(["fusermount3", "-u", "-z", str(extra)], timeout=30, check=False)
        for role, child in self.children.items():
            if role.startswith("mount-"):
                with contextlib.suppress(Exception):
                    child.wait(timeout=20)
        if (self.state / "grid.json").exists():
            with contextlib.suppress(Exception):
                self.xfs("down", "--state", str(self.state), timeout=DOWN_TIMEOUT, check=False)
        with contextlib.suppress(Exception):
            if mounted(self.mnt):
                run(["fusermount3", "-u", "-z", str(self.mnt)], timeout=30, check=False)
        with contextlib.suppress(Exception):
            if mounted(self.mnt):
                run(["umount", "-l", str(self.mnt)], timeout=30, check=False)
        for extra in self.extra_mounts:
            with contextlib.suppress(Exception):
                if mounted(extra):
                    run(["fusermount3", "-u", "-z", str(extra)], timeout=30, check=False)
        needle = str(self.state).encode()
        killed = []
        for pidfile in (self.state / "run").glob("*.pid"):
            with contextlib.suppress(Exception):
                pid = int(pidfile.read_text())
                cmdline = _cmdline(pid)
                if cmdline is not None and needle in cmdline:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        for child in self.children.values():
            with contextlib.suppress(Exception):
                child.wait(timeout=10)
        # SIGKILL is not instant: a process inside a FUSE or network call dies when the
        # kernel lets go of it, so wait (bounded) until each one is really gone
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._remove_metadata_cluster()

    def _remove_metadata_cluster(self) -> None:
        """A PostgreSQL grid's cluster: stopped (xfs down did, unless it failed) and
        removed, also when it lives outside the state directory (root's grids)."""
        with contextlib.suppress(Exception):
            where = json.loads((self.state / "grid.json").read_text()).get("metadata_dir")
            if where:
                from xfs.common.pgcluster import Cluster

                Cluster(Path(where)).remove()


@contextlib.contextmanager
def running_grid(
    prefix: str = "xfs-test-",
    *,
    osds: int = 3,
    settings: list[str] | None = None,
    metadata: str | None = None,
    mrcs: int = 1,
) -> Iterator[Grid]:
    """A started grid under a fresh directory of /tmp (world-searchable, so other local
    users can reach the mount); always stopped and removed afterwards. With
    ``XFS_TEST_KEEP_LOGS=DIR`` its logs are copied to DIR first.

    The home volume's root is made 0711: other local users may search it (not list it)
    to reach the tests' directories, as they would reach theirs under /home. The MRC
    checks every request by inode number as a walk from the volume's root, so a test
    user placed in a directory under a root it may not search would be refused there,
    where Linux lets a process go on from its working directory."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(root, 0o755)
    grid = Grid(root, osds=osds, settings=settings or [], metadata=metadata, mrcs=mrcs)
    try:
        grid.up()
        os.chmod(grid.mnt, 0o711)
        yield grid
        grid.assert_no_bugs_logged()
    finally:
        grid.cleanup()
        if keep := os.environ.get("XFS_TEST_KEEP_LOGS"):
            shutil.copytree(grid.state / "logs", Path(keep) / root.name, dirs_exist_ok=True)
        if not mounted(grid.mnt):
            shutil.rmtree(root, ignore_errors=True)


_PAIRS = itertools.count(1)


class Workdirs:
    """Fresh, uniquely named directory pairs: one in the mount, one on a local disk."""

    def __init__(self, grid: Grid, local_root: Path) -> None:
        self.grid = grid
        self.local_root = local_root

    def pair(self, name: str) -> tuple[Path, Path]:
        tag = f"{name}-{next(_PAIRS)}-{secrets.token_hex(3)}"
        remote = self.grid.mnt / tag
        local = self.local_root / tag
        remote.mkdir()
        local.mkdir()
        return remote, local
