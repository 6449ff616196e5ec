"""The CRIU backend: a process tree dumped into a version, restored from one.

CRIU writes its images straight into the version's draft on the volume; its log goes to
local disk (``log_dir``), never into the image: a verbose log written line by line into
the volume made a dump several times slower. A dump that CRIU reports as failed (any
non-zero exit, see ``criu(8)``) is never published: the draft is removed and the error
names the log. Where CRIU is missing or ``criu check`` fails, :func:`available` says so
in one line, with what ``criu check`` said.

Incremental dumps: where the kernel tracks dirty memory (``criu check --feature
mem_dirty_track``), every dump uses ``--track-mem``, and a dump whose parent version is
a CRIU image of the same process tree passes ``--prev-images-dir`` so only the pages
changed since are written; the version then depends on its parent (``depends_on``),
which ``prune`` keeps and ``delete`` refuses to remove alone.

A restored process gets the PID it was dumped with. Before ``criu restore`` runs, the
root's PID is checked: a process not yet reaped is waited for (:data:`REAP_WAIT`), a live
one is named in the error instead of CRIU's "Can't fork for N: File exists".
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from xfs.checkpoint.sets import CheckpointError

ENV = "XFS_CRIU"  # the criu binary to use, if not the one on PATH
TIMEOUT = 3600.0
LOG_DIR = Path("/var/tmp/xfs-criu")
REAP_WAIT = 10.0  # seconds a dumped process may stay unreaped before restore gives up


class CriuError(CheckpointError):
    """CRIU is missing, unusable here, or failed."""


def find() -> str | None:
    """The criu binary: $XFS_CRIU, else on PATH (or in the sbin directories)."""
    if chosen := os.environ.get(ENV):
        return chosen if os.access(chosen, os.X_OK) else None
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which("criu", path=path)


def _run(argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@dataclass(frozen=True)
class Criu:
    binary: str
    version: str
    track_mem: bool  # the kernel tracks dirty memory: incremental dumps


def available() -> Criu:
    """The usable CRIU of this node, or CriuError saying in one line why there is none."""
    binary = find()
    if binary is None:
        raise CriuError(errno.ENOENT, f"criu is not installed (not on PATH, ${ENV} not set)")
    try:
        checked = _run([binary, "check"])
        said = _run([binary, "--version"]).stdout.splitlines()
        version = next((v.split(":", 1)[1].strip() for v in said if v.startswith("Version:")), "?")
        track = _run([binary, "check", "--feature", "mem_dirty_track"]).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CriuError(errno.ENOEXEC, f"{binary} cannot run: {e}") from None
    if checked.returncode != 0:
        why = _last_line(checked.stderr + checked.stdout)
        raise CriuError(errno.ENOSYS, f"criu check failed on this node: {why}")
    return Criu(binary, version, track)


# CRIU's closing lines ("Restoring FAILED.") and an error it carries on after say nothing of
# why it failed; the cause is the last other error line.
_UNTOLD = ("FAILED", "rlimit:")


def _cause(log_text: str) -> str | None:
    errors = [line.strip() for line in log_text.splitlines() if "Error" in line]
    told = [line for line in errors if not any(word in line for word in _UNTOLD)]
    return (told or errors)[-1] if errors else None


def _failure(what: str, proc: subprocess.CompletedProcess[str], log: Path) -> CriuError:
    detail: str | None = None
    with contextlib.suppress(OSError):
        detail = _cause(log.read_text(errors="replace"))
    detail = detail or _last_line(proc.stderr + proc.stdout)
    return CriuError(
        errno.EIO, f"criu {what} failed (exit {proc.returncode}): {detail} (log: {log})"
    )


def _criu(what: str, argv: list[str], log: Path) -> None:
    """Run ``criu what``: CriuError unless it exits 0 (criu(8)) within TIMEOUT."""
    try:
        proc = _run(argv, TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CriuError(
            errno.ETIMEDOUT, f"criu {what} ran over {TIMEOUT:.0f} s (log: {log})"
        ) from None
    if proc.returncode != 0:
        raise _failure(what, proc, log)


def dump(
    criu: Criu,
    pid: int,
    images: Path,
    log: Path,
    *,
    leave_running: bool,
    parent_images: str | None = None,
    shell_job: bool = False,
) -> None:
    """Dump the process tree rooted at ``pid`` into ``images``; ``parent_images`` (relative
    to ``images``) holds the previous dump's, for an incremental one."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [criu.binary, "dump", "-t", str(pid), "-D", str(images), "-o", str(log), "-v4"]
    if leave_running:
        argv.append("--leave-running")
    if shell_job:
        argv.append("--shell-job")
    if criu.track_mem:
        argv.append("--track-mem")
        if parent_images is not None:
            argv += ["--prev-images-dir", parent_images]
    _criu("dump", argv, log)


def _state(pid: int) -> tuple[str, str] | None:
    """(command, state letter) of ``pid`` on this node, or None where there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    command = stat[stat.index("(") + 1 : stat.rindex(")")]
    return command, stat[stat.rindex(")") + 2 :].split()[0]


def wait_for_pids(pids: list[int], timeout: float = REAP_WAIT) -> None:
    """Return once none of ``pids`` is in use here: CRIU gives a restored process the PID it
    was dumped with. A dead process not yet reaped by its parent is waited for up to
    ``timeout``; a live one is EBUSY, naming it."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while (state := _state(pid)) is not None:
            command, letter = state
            if letter not in ("Z", "X") or time.monotonic() > deadline:
                raise CriuError(
                    errno.EBUSY,
                    f"PID {pid} is in use on this node by {command!r}"
                    f"{' (dead, not reaped by its parent)' if letter in ('Z', 'X') else ''}; "
                    "a CRIU image restores with the PIDs it was dumped with: end that "
                    "process or restore on another node",
                )
            time.sleep(0.05)


def restore(
    criu: Criu, images: Path, log: Path, *, pids: list[int], shell_job: bool = False
) -> int:
    """Restore the process tree in ``images`` (rooted at ``pids``), detached; the PID of
    its root."""
    wait_for_pids(pids)
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile = log.with_suffix(".pid")
    pidfile.unlink(missing_ok=True)
    argv = [criu.binary, "restore", "-D", str(images), "-o", str(log), "-v4", "-d"]
    argv += ["--pidfile", str(pidfile)]
    if shell_job:
        argv.append("--shell-job")
    _criu("restore", argv, log)
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        raise CriuError(errno.EIO, f"criu restore wrote no PID to {pidfile}") from None
