"""Processes known by a PID file (xfs.common.processes): ours, and ended."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from xfs.common import processes


def test_a_process_is_ended_only_once_gone_or_a_zombie(tmp_path: Path) -> None:
    pidfile = tmp_path / "osd.pid"
    assert processes.ended(pidfile)  # no PID file: nothing runs
    config = tmp_path / "osd.toml"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile.write_text(f"{sleeper.pid}\n")
        # alive, though its command line does not name the configuration (as while it
        # execs): not ours, and not ended either
        assert processes.ours(pidfile, config) is None
        assert not processes.ended(pidfile)
        sleeper.kill()
        deadline = time.monotonic() + 10
        while not processes.ended(pidfile):  # a zombie until reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        sleeper.kill()
        sleeper.wait(10)
    assert processes.ended(pidfile)  # reaped: gone
    pidfile.write_text("junk\n")
    assert processes.ended(pidfile)
