"""The audit log of a service: append-only, one JSON record a line, hash-chained.

Each record is canonical JSON (sorted keys, no spaces) of::

    {"seq": 7, "time": 1795000000.123, "service": "mrc", "event": "deny",
     "actor": "alice@physics", "action": "volume_create", "outcome": "EPERM",
     "detail": {...}, "prev": "<hash of record 6>", "hash": "<hash of this record>"}

where ``hash`` is SHA-256 over the canonical JSON of the record without ``hash`` (which
contains ``prev``), and the first record's ``prev`` is ``GENESIS``. Changing, inserting,
deleting or reordering any record breaks the chain at that record, and :func:`verify`
names the first record that does not follow. Removing records from the *end* leaves a
valid shorter chain; an operator who needs that covered ships the log off the machine
(the last hash is what to compare).

Events: ``deny`` (a request refused for lack of authority or permission), ``admin`` (an
administrative operation), ``xcap`` (a capability issued), ``cert`` (a certificate
refused, revoked or a CRL loaded).

Records are written with one ``write`` each to a file opened ``O_APPEND``, so a crashed
service loses no record it returned from; they reach the disk with the page cache.

**Rotation.** Once the log holds ``max_bytes`` or its first record is ``max_age`` seconds
old, it is renamed ``<name>.<seq of its first record, 12 digits>`` and a new file takes
its name; the chain goes on across the files (the new file's first record follows the
old file's last). A *series* is the rotated files in order, then the log itself;
:func:`verify` and :func:`records` read the whole series. Removing the oldest files of
a series (an operator's retention) leaves a series that verifies from where it starts.

**Repeats.** A refused connection (``cert`` ``tls.handshake``/``tls.identify``) that
repeats from one address with the same reason within ``repeat_window`` seconds is
counted, not written: one record names the first, and a record with ``repeated`` (how
many more, and the time of the last) follows once the window has passed, at the next
record or at close.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DENY = "deny"
ADMIN = "admin"
XCAP = "xcap"
CERT = "cert"
EVENTS = frozenset({DENY, ADMIN, XCAP, CERT, "audit"})

GENESIS = "0" * 64
_KEYS = frozenset(
    {"seq", "time", "service", "event", "actor", "action", "outcome", "detail", "prev", "hash"}
)
_TAIL = 1 << 16  # how much of the end of the file is read to find the last record
MAX_BYTES = 64 << 20  # a log is rotated once it holds this much
MAX_AGE = 86400.0  # or once its first record is this old (seconds)
REPEAT_WINDOW = 60.0  # repeated refusals from one address within it are counted
_REPEATED = frozenset({"tls.handshake", "tls.identify"})
_MAX_REPEAT_KEYS = 1024
_ROTATED = re.compile(r"\.([0-9]{12})$")


class Audit(Protocol):
    """What services call; ``NO_AUDIT`` when a component is built without a log."""

    def record(
        self, event: str, actor: str, action: str, outcome: str = "ok", **detail: Any
    ) -> None: ...


class _NoAudit:
    def record(
        self, event: str, actor: str, action: str, outcome: str = "ok", **detail: Any
    ) -> None:
        pass


NO_AUDIT: Audit = _NoAudit()


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(record: dict[str, Any]) -> str:
    """The hash of a record: SHA-256 of its canonical JSON without the ``hash`` key."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


class AuditLog:
    """The audit log of one service, at ``path``. Safe to call from any thread."""

    def __init__(
        self,
        path: Path,
        service: str,
        clock: Callable[[], float] = time.time,
        *,
        max_bytes: int = MAX_BYTES,
        max_age: float = MAX_AGE,
        repeat_window: float = REPEAT_WINDOW,
    ) -> None:
        self.path = path
        self.service = service
        self._clock = clock
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._window = repeat_window
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seq = 0
        self._prev = GENESIS
        self._size = 0  # bytes in the current file
        self._first: tuple[int, float] | None = None  # its first record: (seq, time)
        # (actor, action, outcome, why) -> [time of the first, repeats since, time of last]
        self._repeats: dict[tuple[str, str, str, str], list[float]] = {}

    def open(self) -> AuditLog:
        """Open (creating it 0600) and continue the chain of an existing log."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_file()
        last = _last_record(self.path)
        if last is None:  # (empty: the series' last rotated file, if any, has the end)
            rotated = rotated_files(self.path)
            last = _last_record(rotated[-1]) if rotated else None
        if last is not None:
            self._seq, self._prev = int(last["seq"]), str(last["hash"])
        first = _first_record(self.path)
        if first is not None:
            self._first = (int(first["seq"]), float(first["time"]))
        return self

    def _open_file(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._flush_repeats(self._clock(), everything=True)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self, event: str, actor: str, action: str, outcome: str = "ok", **detail: Any
    ) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"audit log {self.path} is not open")
            now = self._clock()
            if self._repeats:
                self._flush_repeats(now)
            if event == CERT and action in _REPEATED:
                key = (actor, action, outcome, str(detail.get("why", "")))
                seen = self._repeats.get(key)
                if seen is not None:
                    seen[1] += 1
                    seen[2] = now
                    return
                if len(self._repeats) >= _MAX_REPEAT_KEYS:
                    self._flush_repeats(now, everything=True)
                self._repeats[key] = [now, 0, now]
            self._write(now, event, actor, action, outcome, detail)

    def _flush_repeats(self, now: float, *, everything: bool = False) -> None:
        """Write the count of each repeated refusal whose window has passed."""
        for key, (first, count, last) in list(self._repeats.items()):
            if everything or now - first >= self._window:
                del self._repeats[key]
                if count:
                    actor, action, outcome, why = key
                    detail = {"why": why, "repeated": int(count), "last": round(last, 6)}
                    self._write(now, CERT, actor, action, outcome, detail)

    def _write(
        self, now: float, event: str, actor: str, action: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        assert self._fd is not None
        if self._first is not None and (
            self._size >= self._max_bytes or now - self._first[1] >= self._max_age
        ):
            self._rotate()
        record: dict[str, Any] = {
            "seq": self._seq + 1,
            "time": round(now, 6),
            "service": self.service,
            "event": event,
            "actor": actor,
            "action": action,
            "outcome": outcome,
            "detail": {k: _plain(v) for k, v in detail.items()},
            "prev": self._prev,
        }
        record["hash"] = chain_hash(record)
        line = _canonical(record) + b"\n"
        os.write(self._fd, line)
        self._size += len(line)
        self._seq, self._prev = record["seq"], record["hash"]
        if self._first is None:
            self._first = (record["seq"], now)

    def _rotate(self) -> None:
        """The current file becomes ``<name>.<its first seq>``; a new one takes its name."""
        assert self._fd is not None and self._first is not None
        os.close(self._fd)
        self._fd = None
        os.replace(self.path, self.path.with_name(f"{self.path.name}.{self._first[0]:012d}"))
        self._first = None
        self._open_file()


def _plain(value: Any) -> Any:
    """Detail values as JSON keeps them: bytes as hex, everything else unknown as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _first_record(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as f:
        line = f.readline(_TAIL)
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and {"seq", "time"} <= record.keys() else None


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the log at ``path``, oldest first."""
    found = []
    for p in path.parent.glob(f"{glob_escape(path.name)}.*"):
        m = _ROTATED.search(p.name)
        if m is not None and p.name == f"{path.name}.{m.group(1)}":
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def series(path: Path) -> list[Path]:
    """The rotated files and the log itself, in chain order."""
    return [*rotated_files(path), *([path] if path.exists() else [])]


def _last_record(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL))
        lines = f.read().splitlines()
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"seq", "hash"} <= record.keys():
            return record
    return None


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`: ``bad_line`` is the first record that breaks the
    chain, in ``bad_file``; ``starts_at`` is the first record's seq (1 unless the oldest
    files of the series were removed)."""

    records: int
    last_hash: str
    bad_line: int | None = None
    reason: str = ""
    bad_file: Path | None = None
    files: int = 1
    starts_at: int = 1

    @property
    def ok(self) -> bool:
        return self.bad_line is None


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a log's whole series, in order (``xfs audit show``, tests)."""
    for part in series(path):
        with open(part, "rb") as f:
            for line in f:
                yield json.loads(line)


def verify(path: Path) -> Verdict:
    """Check the chain over the whole series; name the first record (file and 1-based
    line) that does not follow. A series whose oldest files were removed starts where
    what is left starts."""
    files = series(path)
    prev: str | None = None
    seq, count, starts_at = 0, 0, 1
    for part in files:
        with open(part, "rb") as f:
            for number, line in enumerate(f, start=1):
                if prev is None:  # the first record of what is kept
                    first = _first_of(line)
                    if first is not None and first[0] > 1:
                        prev, seq, starts_at = first[1], first[0] - 1, first[0]
                    else:
                        prev = GENESIS
                reason = _check_line(line, prev, seq + 1)
                if reason:
                    return Verdict(count, prev, number, reason, part, len(files), starts_at)
                record = json.loads(line)
                prev, seq, count = record["hash"], record["seq"], count + 1
    return Verdict(count, prev or GENESIS, files=len(files), starts_at=starts_at)


def _first_of(line: bytes) -> tuple[int, str] | None:
    """(seq, prev) of a record, if the line is one."""
    try:
        record = json.loads(line)
        return int(record["seq"]), str(record["prev"])
    except (ValueError, KeyError, TypeError):
        return None


def _check_line(line: bytes, prev: str, seq: int) -> str:
    if not line.endswith(b"\n"):
        return "the record is cut short (no end of line)"
    try:
        record = json.loads(line)
    except ValueError:
        return "not a JSON record"
    if not isinstance(record, dict) or record.keys() != _KEYS:
        return "not an audit record (wrong fields)"
    if _canonical(record) + b"\n" != line:
        return "not in canonical form (edited by hand?)"
    if record["seq"] != seq:
        return f"sequence number {record['seq']!r}, expected {seq} (a record missing or moved)"
    if record["prev"] != prev:
        return "does not follow the previous record (a record before it was changed or removed)"
    if record["hash"] != chain_hash(record):
        return "its contents do not match its hash (the record was altered)"
    return ""
