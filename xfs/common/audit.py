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
"""

from __future__ import annotations

import hashlib
import json
import os
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

    def __init__(self, path: Path, service: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.service = service
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seq = 0
        self._prev = GENESIS

    def open(self) -> AuditLog:
        """Open (creating it 0600) and continue the chain of an existing log."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        last = _last_record(self.path)
        if last is not None:
            self._seq, self._prev = int(last["seq"]), str(last["hash"])
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
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
            record: dict[str, Any] = {
                "seq": self._seq + 1,
                "time": round(self._clock(), 6),
                "service": self.service,
                "event": event,
                "actor": actor,
                "action": action,
                "outcome": outcome,
                "detail": {k: _plain(v) for k, v in detail.items()},
                "prev": self._prev,
            }
            record["hash"] = chain_hash(record)
            os.write(self._fd, _canonical(record) + b"\n")
            self._seq, self._prev = record["seq"], record["hash"]


def _plain(value: Any) -> Any:
    """Detail values as JSON keeps them: bytes as hex, everything else unknown as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


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
    """The result of :func:`verify`: ``bad_line`` is the first record that breaks the chain."""

    records: int
    last_hash: str
    bad_line: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_line is None


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a log, in order (for ``xfs audit show`` and tests)."""
    with open(path, "rb") as f:
        for line in f:
            yield json.loads(line)


def verify(path: Path) -> Verdict:
    """Check the whole chain; name the first record (1-based line) that does not follow."""
    prev, seq, count = GENESIS, 0, 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            reason = _check_line(line, prev, seq + 1)
            if reason:
                return Verdict(count, prev, number, reason)
            record = json.loads(line)
            prev, seq, count = record["hash"], record["seq"], count + 1
    return Verdict(count, prev)


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
