"""The hash-chained audit log: records chain, any change is found and named."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from xfs.cli.main import cli
from xfs.common import audit


def write_log(path: Path, n: int) -> None:
    with audit.AuditLog(path, "mrc", clock=lambda: 1795000000.5) as log:
        for i in range(n):
            log.record(audit.DENY, f"u{i}@physics", "open", "EACCES", ino=i, why=b"\x01")


def rewrite_line(path: Path, index: int, change: dict[str, object]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[index])
    record.update(change)
    lines[index] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def test_records_chain_and_verify(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 5)
    verdict = audit.verify(log)
    assert verdict.ok and verdict.records == 5
    rows = list(audit.records(log))
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev"] == audit.GENESIS
    assert all(rows[i]["prev"] == rows[i - 1]["hash"] for i in range(1, 5))
    assert rows[2]["detail"] == {"ino": 2, "why": "01"}
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 3)
    write_log(log, 2)
    verdict = audit.verify(log)
    assert verdict.ok and verdict.records == 5


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"actor": "mallory@physics"}, "altered"),
        ({"outcome": "ok"}, "altered"),
        ({"seq": 9}, "sequence"),
        ({"prev": "f" * 64}, "does not follow"),
    ],
)
def test_an_altered_record_is_named(tmp_path: Path, change: dict[str, object], reason: str) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 6)
    rewrite_line(log, 3, change)
    verdict = audit.verify(log)
    assert not verdict.ok and verdict.bad_line == 4 and reason in verdict.reason
    assert verdict.records == 3


def test_altered_record_with_recomputed_hash_breaks_the_next(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 6)
    lines = log.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["actor"] = "mallory@physics"
    record["hash"] = audit.chain_hash(record)
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    log.write_bytes(b"".join(lines))
    verdict = audit.verify(log)
    assert verdict.bad_line == 4 and "does not follow" in verdict.reason


def test_removed_reordered_and_garbage_records_are_named(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 6)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert audit.verify(log).bad_line == 3
    log.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    assert audit.verify(log).bad_line == 2
    log.write_bytes(b"".join(lines[:4]) + b"not json\n" + b"".join(lines[4:]))
    assert audit.verify(log).bad_line == 5
    log.write_bytes(b"".join(lines[:5]) + lines[5][:-10])
    assert "cut short" in audit.verify(log).reason


def test_records_from_many_threads_stay_chained(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    with audit.AuditLog(log_path, "osd") as log:

        def work(t: int) -> None:
            for i in range(200):
                log.record(audit.XCAP, f"t{t}@vo", "issue", ino=i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    verdict = audit.verify(log_path)
    assert verdict.ok and verdict.records == 800


def test_unknown_events_are_refused(tmp_path: Path) -> None:
    with audit.AuditLog(tmp_path / "a.log", "mrc") as log, pytest.raises(ValueError):
        log.record("mischief", "a@vo", "x")


def test_cli_verify_and_show(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_log(log, 4)
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", str(log)])
    assert ok.exit_code == 0 and "4 records in 1 file(s), chain intact" in ok.output
    shown = runner.invoke(cli, ["audit", "show", str(log), "--tail", "2"])
    assert shown.exit_code == 0 and len(shown.output.splitlines()) == 2
    assert "u3@physics open EACCES" in shown.output
    rewrite_line(log, 1, {"actor": "mallory@physics"})
    bad = runner.invoke(cli, ["audit", "verify", str(log)])
    assert bad.exit_code != 0 and "line 2" in bad.output and "altered" in bad.output


class Clock:
    def __init__(self) -> None:
        self.now = 1795000000.0

    def __call__(self) -> float:
        return self.now


def test_rotation_by_size_and_age_keeps_one_chain(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    clock = Clock()
    with audit.AuditLog(log_path, "mrc", clock, max_bytes=2000, max_age=3600) as log:
        for i in range(30):  # ~300 bytes each: a new file every 7 records
            log.record(audit.ADMIN, "root@physics", "volume_create", volume=f"v{i}")
        clock.now += 3600  # an hour on: the next record starts a new file, whatever its size
        log.record(audit.ADMIN, "root@physics", "volume_delete", volume="v0")
    files = audit.series(log_path)
    assert len(files) >= 5 and files[-1] == log_path
    assert [p.name for p in files[:-1]] == sorted(p.name for p in files[:-1])
    assert files[0].name == "audit.log.000000000001"
    assert [r["seq"] for r in audit.records(log_path)] == list(range(1, 32))
    assert list(audit.records(log_path))[-1]["action"] == "volume_delete"
    assert len(list(audit.records(files[-1]))) >= 1  # (records() of a file: its series)
    verdict = audit.verify(log_path)
    assert verdict.ok and verdict.records == 31 and verdict.files == len(files)
    # a service started again goes on with the same chain, in the current file
    with audit.AuditLog(log_path, "mrc", clock, max_bytes=2000) as log:
        log.record(audit.ADMIN, "root@physics", "volume_create", volume="again")
    assert audit.verify(log_path).records == 32
    # an altered record in a rotated file is named, with its file
    rewrite_line(files[1], 0, {"actor": "mallory@physics"})
    bad = audit.verify(log_path)
    assert not bad.ok and bad.bad_file == files[1] and bad.bad_line == 1
    runner = CliRunner()
    out = runner.invoke(cli, ["audit", "verify", str(log_path)])
    assert out.exit_code != 0 and str(files[1]) in out.output


def test_a_series_whose_oldest_files_were_removed_verifies_from_where_it_starts(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "audit.log"
    with audit.AuditLog(log_path, "osd", Clock(), max_bytes=1500) as log:
        for i in range(20):
            log.record(audit.XCAP, "a@physics", "issue", ino=i)
    first = audit.series(log_path)[0]
    first.unlink()  # retention
    verdict = audit.verify(log_path)
    assert verdict.ok and verdict.starts_at > 1 and verdict.records == 21 - verdict.starts_at
    out = CliRunner().invoke(cli, ["audit", "verify", str(log_path)])
    assert out.exit_code == 0 and "older files were removed" in out.output


def test_repeated_refusals_from_one_address_are_counted_not_written(tmp_path: Path) -> None:
    """3,000 refused handshakes from one address: one record, then one count a window."""
    log_path = tmp_path / "audit.log"
    clock = Clock()
    with audit.AuditLog(log_path, "mrc", clock, repeat_window=60) as log:
        for _ in range(3000):
            clock.now += 0.01  # 30 s in all
            log.record(audit.CERT, "127.0.0.9", "tls.handshake", "refused", why="no cert")
        log.record(audit.CERT, "127.0.0.8", "tls.handshake", "refused", why="no cert")
        clock.now += 61  # the window has passed: the count comes with the next record
        log.record(audit.DENY, "bob@physics", "mrc.open/1", "EACCES", why="mode")
        log.record(audit.DENY, "bob@physics", "mrc.open/1", "EACCES", why="mode")  # not cert
        log.record(audit.CERT, "127.0.0.8", "tls.handshake", "refused", why="no cert")
    rows = list(audit.records(log_path))
    assert [(r["actor"], r["detail"].get("repeated")) for r in rows] == [
        ("127.0.0.9", None),
        ("127.0.0.8", None),
        ("127.0.0.9", 2999),
        ("bob@physics", None),
        ("bob@physics", None),
        ("127.0.0.8", None),
    ]
    assert log_path.stat().st_size < 3000
    assert audit.verify(log_path).ok
