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


def test_processes_end_together_and_one_deaf_to_sigterm_is_killed(tmp_path: Path) -> None:
    """``end_all`` signals every process before it waits for any: two that end on
    SIGTERM take one wait, not two; one that ignores SIGTERM is SIGKILLed after the
    timeout; a PID file whose process is not ours is only removed."""
    polite = ("import signal, sys, time; "
              "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), sys.exit(0))); "
              "print('ready', flush=True); time.sleep(60)")
    deaf = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    children, items = [], []
    try:
        for name, code in (("a", polite), ("b", polite), ("c", deaf)):
            config = tmp_path / f"{name}.toml"
            child = subprocess.Popen([sys.executable, "-c", code, str(config)],
                                     stdout=subprocess.PIPE, text=True)
            children.append(child)
            pidfile = tmp_path / f"{name}.pid"
            pidfile.write_text(f"{child.pid}\n")
            items.append((pidfile, config))
        stranger = tmp_path / "d.pid"
        stranger.write_text(f"{children[0].pid}\n")  # ours only with a.toml
        items.append((stranger, tmp_path / "d.toml"))
        for child in children:  # its SIGTERM handler is installed
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        started = time.monotonic()
        pids = processes.end_all(items, timeout=3.0)
        took = time.monotonic() - started
        assert pids == [c.pid for c in children] + [None]
        assert 3.0 <= took < 4.5  # one timeout for all (one by one: 1 + 1 + 3 s)
        codes = [c.wait(timeout=10) for c in children]
        assert codes[:2] == [0, 0] and codes[2] == -9  # c: SIGKILL
        assert not any(pidfile.exists() for pidfile, _ in items)
    finally:
        for c in children:
            c.kill()
            c.wait(timeout=10)
            if c.stdout is not None:
                c.stdout.close()
