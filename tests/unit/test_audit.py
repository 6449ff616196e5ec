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
    assert ok.exit_code == 0 and "4 records, chain intact" in ok.output
    shown = runner.invoke(cli, ["audit", "show", str(log), "--tail", "2"])
    assert shown.exit_code == 0 and len(shown.output.splitlines()) == 2
    assert "u3@physics open EACCES" in shown.output
    rewrite_line(log, 1, {"actor": "mallory@physics"})
    bad = runner.invoke(cli, ["audit", "verify", str(log)])
    assert bad.exit_code != 0 and "line 2" in bad.output and "altered" in bad.output
