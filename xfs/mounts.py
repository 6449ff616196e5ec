"""Mounts of volumes by name: ``xfs mount VOLUME MOUNTPOINT``, ``xfs umount``, and the
``mount.fuse.xfs`` helper that lets ``mount -t fuse.xfs`` and ``/etc/fstab`` do the same.

Each such mount is a background ``xfs mount --config`` process with a configuration of
its own, made from a template (the embedded grid's mount configuration, or a file the
operator gives) with the volume and the mount point replaced. Its configuration, PID
file and log live in ``<state>/mounts/<key>/`` (the key names the mount point), so
``xfs umount`` and ``xfs down`` find and stop it by PID, as ``xfs down`` stops the grid.

The mount table (``table``, ``mounted``, ``fs_type``) is read here for every caller: the
embedded grid, these mounts, and checkpoint sets that ask whether they are on xfs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from xfs.common import config, processes
from xfs.common.config import MountConfig

MOUNT_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class MountError(Exception):
    """A mount that could not be made or ended; the message says why."""


def table() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, from /proc/self/mounts."""
    with open("/proc/self/mounts") as f:
        rows = [line.split() for line in f]
    return [(r[1].replace("\\040", " "), r[2]) for r in rows if len(r) > 2]


def mounted(path: Path, kind: str = "") -> bool:
    """Whether ``path`` is a mount point now, of a type starting with ``kind`` (no stat
    of it: a FUSE mount whose process died would fail one with ENOTCONN)."""
    target = os.path.realpath(path)
    return any(point == target and fs.startswith(kind) for point, fs in table())


def fs_type(path: Path) -> str:
    """The file system type of the mount that holds ``path``."""
    target = os.path.realpath(path)
    best, kind = "", ""
    for point, fs in table():
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs
    return kind


def lazy_unmount(path: Path) -> None:
    """Detach the FUSE mount at ``path`` now, even if busy (``fusermount3 -u -z``)."""
    subprocess.run(
        ["fusermount3", "-u", "-z", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )


def home(state: Path, mountpoint: Path) -> Path:
    """The directory of the mount at ``mountpoint``: config, PID file, log."""
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return state / "mounts" / key


def _pid(where: Path) -> int | None:
    """The PID of the mount process of ``where``, if it still runs with its config."""
    return processes.ours(where / "pid", where / "config.toml")


def start(
    state: Path,
    template: Path,
    volume: str,
    mountpoint: Path,
    *,
    delegation: Path | None = None,
    timeout: float = MOUNT_TIMEOUT,
) -> int:
    """Mount ``volume`` at ``mountpoint`` with ``template``'s settings, in the background;
    the PID of the mount process, once the mount is there."""
    mountpoint = mountpoint.absolute()
    if mounted(mountpoint):
        raise MountError(f"{mountpoint} is mounted already")
    if not mountpoint.is_dir():
        raise MountError(f"{mountpoint} is not a directory")
    where = home(state, mountpoint)
    where.mkdir(parents=True, exist_ok=True)
    try:
        base = config.load(MountConfig, template, {})
    except config.ConfigError as e:
        raise MountError(str(e)) from None
    own = dataclasses.replace(
        base,
        volume=volume,
        mountpoint=mountpoint,
        audit_log=None if base.audit_log is None else where / "audit.log",
    )
    (where / "config.toml").write_text(config.dump(own))
    argv = [sys.executable, "-m", "xfs.cli.main", "mount", "--config", str(where / "config.toml")]
    if delegation is not None:
        argv += ["--delegation", str(delegation.absolute())]
    with open(where / "mount.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    (where / "pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while not mounted(mountpoint):
        if proc.poll() is not None:
            raise MountError(f"the mount of {volume} failed: {_last_line(where / 'mount.log')}")
        if time.monotonic() > deadline:
            stop(state, mountpoint)
            raise MountError(f"{volume} was not mounted within {timeout:.0f} s (log: {where})")
        time.sleep(0.05)
    return proc.pid


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no output"
    return last.removeprefix("Error: ")


def stop(state: Path, mountpoint: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """End the mount at ``mountpoint``: its process (if ours) with SIGTERM, which flushes
    open files and unmounts, else a lazy unmount. Whether anything was mounted there."""
    where = home(state, mountpoint)
    was = mounted(mountpoint)
    pid = processes.end(where / "pid", where / "config.toml", timeout)
    if mounted(mountpoint):
        lazy_unmount(mountpoint)
    return was or pid is not None


def stop_all(state: Path) -> list[Path]:
    """End every mount started under ``state``; their mount points."""
    ended = []
    for where in sorted((state / "mounts").glob("*/config.toml")):
        try:
            point = config.load(MountConfig, where, {}).mountpoint
        except config.ConfigError:
            continue
        if stop(state, point):
            ended.append(point)
    return ended
