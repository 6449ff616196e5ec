"""Every refused or failed `xfs` call prints one `Error:` line and exits non-zero: no
traceback, whatever the command (here with no grid, and paths outside any volume)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from xfs.cli.main import cli

NOWHERE = "/nonexistent/xfs-state"


def calls(tmp: Path) -> list[list[str]]:
    plain = tmp / "plain-file"
    plain.write_text("x")
    return [
        ["status", "--state", NOWHERE],
        ["osd", "list", "--state", NOWHERE],
        ["osd", "drain", "u1", "--state", NOWHERE],
        ["osd", "undrain", "u1", "--state", NOWHERE],
        ["volume", "create", "v", "--state", NOWHERE],
        ["volume", "list", "--state", NOWHERE],
        ["volume", "delete", "v", "--state", NOWHERE],
        ["quota", "set", "v", "--files", "9", "--state", NOWHERE],
        ["quota", "clear", "v", "--state", NOWHERE],
        ["quota", "show", "v", "--state", NOWHERE],
        ["delegate", "create", "/d", "--to", "w@vo", "--state", NOWHERE],
        ["delegate", "list", "--state", NOWHERE],
        ["delegate", "revoke", "id", "--state", NOWHERE],
        ["down", "--state", NOWHERE],
        ["up", "--state", str(tmp / "new-grid"), "--metadata", "mysql://x/y"],
        ["up", "--state", str(tmp / "new-grid"), "--mrcs", "2"],
        ["fsck", "--state", NOWHERE],
        ["fsck", "--db", str(plain)],
        ["scrub", "--state", NOWHERE],
        ["scrub", "--data", str(tmp)],
        ["mount", "v", str(tmp), "--state", NOWHERE],
        ["umount", str(tmp), "--state", NOWHERE],
        ["mount-helper", "remove", "--dir", str(tmp)],
        ["policy", "get", str(plain)],
        ["policy", "set", str(plain), "--factor", "2"],
        ["replica", "list", str(plain)],
        ["replica", "add", str(plain)],
        ["replica", "remove", str(plain), "--osd", "u1"],
        ["replica", "seal", str(plain)],
        ["acl", "get", str(plain)],
        ["acl", "set", str(plain), "user:alice@vo:rw-"],
        ["audit", "verify", str(plain)],
        ["audit", "show", str(plain)],
        ["ca", "show", str(plain)],
        ["checkpoint", "list", str(tmp / "no-set")],
        ["checkpoint", "show", str(tmp / "no-set")],
        ["checkpoint", "verify", str(tmp / "no-set")],
        ["checkpoint", "restore", str(tmp / "no-set")],
        ["checkpoint", "prune", str(tmp / "no-set"), "--keep", "1"],
        ["checkpoint", "delete", str(tmp / "no-set"), "1"],
        ["checkpoint", "keep", str(tmp / "no-set"), "2"],
        ["checkpoint", "dump", str(tmp / "set"), "--backend", "app"],
    ]


def test_every_failure_is_one_error_line(tmp_path: Path) -> None:
    bad = []
    for argv in calls(tmp_path):
        result = CliRunner().invoke(cli, argv)
        lines = result.output.strip().splitlines()
        one_line = len(lines) == 1 and lines[0].startswith("Error: ")
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if result.exit_code == 0 or crashed or not one_line:
            bad.append(f"xfs {' '.join(argv)} -> exit {result.exit_code}: {result.output!r}")
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("argv", [["checkpoint"], ["policy", "set"]])
def test_usage_errors_name_the_command(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0 and "Traceback" not in result.output
