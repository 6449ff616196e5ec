"""Processes xfs started and knows by a PID file: whether one still runs, and ending it.

A PID file alone is not proof: the PID may have been given to another process since. A
process counts as ours only while its command line names the configuration file it was
started with.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

KILL_GRACE = 10.0  # seconds to wait for a SIGKILLed process to be gone


def ours(pidfile: Path, config: Path) -> int | None:
    """The PID in ``pidfile`` if that process runs with ``config`` on its command line."""
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(config).encode() in cmdline else None


def ended(pidfile: Path) -> bool:
    """Whether the process of ``pidfile`` has ended (gone, or a zombie not yet reaped).
    Unlike ``not ours(...)``, a process that is still starting is not taken for ended:
    while it execs (``nsenter``, then Python) its command line is briefly not its own."""
    try:
        pid = int(pidfile.read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def end(pidfile: Path, config: Path, timeout: float) -> int | None:
    """End the process of ``pidfile`` (if ours): SIGTERM, then after ``timeout`` SIGKILL,
    waiting up to ``KILL_GRACE`` for it to go (a process stuck in a FUSE or network call
    dies when the kernel lets it go). Removes the PID file; returns the PID it ended."""
    return end_all([(pidfile, config)], timeout)[0]


def end_all(processes: list[tuple[Path, Path]], timeout: float) -> list[int | None]:
    """``end`` for several processes ((PID file, configuration) each) at once: SIGTERM to
    all, then each is waited for (within ``timeout`` of the signal) and, if it has not
    gone, SIGKILLed. Returns the PIDs ended, in order (None: none was running)."""
    pids = [ours(pidfile, config) for pidfile, config in processes]
    for pid in pids:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid, (pidfile, config) in zip(pids, processes, strict=True):
        if pid is not None and not _gone(pidfile, config, pid, deadline - time.monotonic()):
            os.kill(pid, signal.SIGKILL)
            _gone(pidfile, config, pid, KILL_GRACE)
        pidfile.unlink(missing_ok=True)
    return pids


def _gone(pidfile: Path, config: Path, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while ours(pidfile, config) == pid:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
