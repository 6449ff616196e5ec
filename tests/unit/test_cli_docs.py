"""Every `xfs` command and option is in the CLI reference (docs/cli.md), next to its command:
a new option without documentation fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click

from xfs.cli.main import cli

README = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
ROWS = [line for line in README.splitlines() if line.startswith("| `xfs ")]
# options that a whole family of commands shares, documented once in their own table
SHARED = {"--state", "--mrc", "--cert", "--key", "--trust", "--help"}


def commands(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[str, click.Command]]:
    if isinstance(cmd, click.Group):  # (`xfs` itself loads its commands when asked)
        ctx = click.Context(cmd)
        subs = [(name, cmd.get_command(ctx, name)) for name in cmd.list_commands(ctx)]
        return [c for name, sub in subs if sub is not None for c in commands(sub, (*path, name))]
    return [] if cmd.hidden else [(" ".join(path), cmd)]


def test_every_command_loads_under_its_name() -> None:
    names = [name for name, _ in commands(cli, ("xfs",))]
    assert len(names) > 40
    for top in ("mrc", "osd list", "mount", "up", "replica list", "store-migrate"):
        assert f"xfs {top}" in names


def test_a_short_command_loads_neither_fuse_nor_postgresql() -> None:
    """Only the command that runs is imported (``LazyGroup``)."""
    code = (
        "import sys; from click.testing import CliRunner; from xfs.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['replica', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('pyfuse3', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_every_command_and_option_is_documented() -> None:
    missing = []
    for name, cmd in commands(cli, ("xfs",)):
        rows = [r for r in ROWS if re.match(r"\| `" + re.escape(name) + r"[ `]", r)]
        if not rows:
            missing.append(f"{name}: no row in docs/cli.md")
            continue
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            for option in (*param.opts, *param.secondary_opts):
                if option.startswith("--") and option not in SHARED and option not in rows[0]:
                    missing.append(f"{name}: {option} not in its row")
    assert missing == []


def test_the_shared_connection_options_are_documented() -> None:
    for option in SHARED - {"--help"}:
        assert f"`{option}" in README, option
