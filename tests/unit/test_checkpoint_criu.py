"""What ``--backend criu`` says where CRIU is missing or broken: one line, with the
reason ``criu check`` gave. (The real dump and restore: tests/system/test_checkpoints.py.)"""

from __future__ import annotations

import subprocess
import sys
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
