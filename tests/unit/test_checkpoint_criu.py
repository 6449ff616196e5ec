"""What ``--backend criu`` says where CRIU is missing or broken: one line, with the
reason ``criu check`` gave. (The real dump and restore: tests/system/test_checkpoints.py.)"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xfs.checkpoint import criu


def broken_criu(tmp_path: Path) -> Path:
    """A criu whose ``check`` fails as it does on a kernel without what CRIU needs."""
    binary = tmp_path / "criu"
    binary.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "Version: 3.17"; exit 0; fi\n'
        'echo "Error (criu/cr-check.c:1234): Kernel does not support '
        'PTRACE_O_SUSPEND_SECCOMP" >&2\n'
        "exit 1\n"
    )
    binary.chmod(0o755)
    return binary


def test_missing_criu_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(criu.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(criu.CriuError, match="criu is not installed"):
        criu.available()


def test_a_failing_criu_check_gives_its_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(criu.ENV, str(broken_criu(tmp_path)))
    with pytest.raises(criu.CriuError) as e:
        criu.available()
    assert e.value.strerror == (
        "criu check failed on this node: Error (criu/cr-check.c:1234): "
        "Kernel does not support PTRACE_O_SUSPEND_SECCOMP"
    )


def test_dump_with_a_broken_criu_says_so_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", criu.ENV: str(broken_criu(tmp_path))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "xfs.cli.main",
            "checkpoint",
            "dump",
            str(tmp_path / "job"),
            "--backend",
            "criu",
            "--pid",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: criu check failed on this node: Error (criu/cr-check.c:1234): "
        "Kernel does not support PTRACE_O_SUSPEND_SECCOMP"
    ]
    assert not (tmp_path / "job").exists()  # nothing made before CRIU was found usable


RESTORE_LOG = """\
(00.015815) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: EPERM
(00.049126) Forking task with 10874 pid (flags 0x0)
(00.049480) Error (criu/cr-restore.c:1230): Can't fork for 10874: File exists
(00.049509) Error (criu/cr-restore.c:2324): Restoring FAILED.
"""


def test_a_failure_names_its_cause_not_criu_closing_line() -> None:
    assert criu._cause(RESTORE_LOG) == (
        "(00.049480) Error (criu/cr-restore.c:1230): Can't fork for 10874: File exists"
    )
    assert criu._cause("(00.1) Error (x.c:1): Dumping FAILED.\n") == (
        "(00.1) Error (x.c:1): Dumping FAILED."
    )
    assert criu._cause("nothing wrong here\n") is None


def test_restore_refuses_a_pid_a_live_process_holds() -> None:
    with pytest.raises(criu.CriuError) as e:
        criu.wait_for_pids([os.getpid()], timeout=0.2)
    assert e.value.errno == errno.EBUSY
    assert f"PID {os.getpid()} is in use on this node by " in str(e.value)
    assert "restores with the PIDs it was dumped with" in str(e.value)


def zombie() -> subprocess.Popen[bytes]:
    """A child that has exited and is not reaped until waited for."""
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    return child


def test_restore_waits_for_a_dead_process_to_be_reaped() -> None:
    child = zombie()
    reaper = threading.Timer(0.3, child.wait)
    reaper.start()
    try:
        criu.wait_for_pids([child.pid], timeout=10)
    finally:
        reaper.join()
    assert not Path(f"/proc/{child.pid}").exists()


def test_restore_gives_up_on_a_process_never_reaped() -> None:
    child = zombie()
    try:
        with pytest.raises(criu.CriuError, match="dead, not reaped by its parent"):
            criu.wait_for_pids([child.pid], timeout=0.5)
    finally:
        child.wait()
