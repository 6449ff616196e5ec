"""The manifest of a checkpoint version, and the names in a checkpoint set (pure).

A version's directory holds its files and ``MANIFEST.json``: what the version is
(job, number, parent, backend, source node, what was checkpointed, when), every file
with its size, mode and tree digest (``xfs.common.digests``), whether the file came
unchanged from the parent (a hard link to the parent's, not stored again), and what
the durability barrier found. The format is documented in docs/checkpoints.md; a
manifest this code cannot read is an error that names the file, never a guess.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1
MANIFEST = "MANIFEST.json"
SETTINGS = ".xfs-checkpoint.json"  # in the set's directory: job name, retention
DRAFT_OWNER = ".draft.json"  # in a draft: who writes it (host, pid, started)
BACKENDS = ("app", "directory", "criu")

_VERSION = re.compile(r"v(\d{6,9})")
_DRAFT = re.compile(r"\.part-v(\d{6,9})-[0-9a-f]{8}")


class ManifestError(ValueError):
    """A manifest or settings file that is not what this format says."""


def version_name(number: int) -> str:
    return f"v{number:06d}"


def parse_version(name: str) -> int | None:
    """The number of a published version's directory name, else None."""
    m = _VERSION.fullmatch(name)
    return int(m.group(1)) if m else None


def draft_name(number: int, nonce: str) -> str:
    """A version being written: hidden, and never a version's name."""
    return f".part-{version_name(number)}-{nonce}"


def is_draft(name: str) -> bool:
    return _DRAFT.fullmatch(name) is not None


def safe_relative(path: str) -> str:
    """``path`` if it is a plain relative path inside a version (no ``..``, not
    absolute, not the manifest), else ManifestError."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"not a relative path inside a version: {path!r}")
    if path in (MANIFEST, DRAFT_OWNER):
        raise ManifestError(f"{path!r} is reserved")
    return path


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the version's directory, '/'-separated
    size: int
    mode: int  # permission bits
    digest: str  # tree digest (hex) with ``object_size``
    object_size: int
    from_parent: bool = False  # a hard link to the parent version's file


@dataclass(frozen=True)
class Barrier:
    kind: str  # "replicas": every replica complete at the file's policy; "local": fsync
    seconds: float  # how long the barrier waited
    replicas: int = 0  # the smallest number of complete replicas of any file


@dataclass(frozen=True)
class Manifest:
    job: str
    version: int
    parent: int | None
    backend: str
    node: str
    created: float  # seconds since the epoch
    source: dict[str, Any]  # what was checkpointed: pids, command, application, directory
    files: list[FileEntry]
    barrier: Barrier
    depends_on: list[int] = field(default_factory=list)  # versions this one needs
    format: int = FORMAT

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bytes_new(self) -> int:
        """Bytes this version stored (not shared with its parent)."""
        return sum(f.size for f in self.files if not f.from_parent)

    def entry(self, path: str) -> FileEntry | None:
        for f in self.files:
            if f.path == path:
                return f
        return None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: str = "manifest") -> Manifest:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise TypeError("not an object")
            if d.get("format") != FORMAT:
                raise ManifestError(f"{where}: format {d.get('format')!r}, this xfs reads {FORMAT}")
            files = [FileEntry(**f) for f in d.pop("files")]
            barrier = Barrier(**d.pop("barrier"))
            m = cls(files=files, barrier=barrier, **d)
            _check(m)
            return m
        except ManifestError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise ManifestError(f"{where}: not a valid manifest ({e})") from None


def _check(m: Manifest) -> None:
    if m.backend not in BACKENDS:
        raise ManifestError(f"unknown backend {m.backend!r}")
    if m.version < 1 or (m.parent is not None and not 1 <= m.parent < m.version):
        raise ManifestError(f"bad version {m.version} / parent {m.parent}")
    for f in m.files:
        safe_relative(f.path)
        if f.size < 0 or f.object_size <= 0 or len(f.digest) != 64:
            raise ManifestError(f"bad entry for {f.path!r}")
        if f.from_parent and m.parent is None:
            raise ManifestError(f"{f.path!r} is from a parent, but the version has none")


@dataclass(frozen=True)
class Settings:
    """A checkpoint set's own settings (``.xfs-checkpoint.json`` in its directory)."""

    job: str
    keep: int | None = None  # retention: versions kept after each commit (None: all)
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Settings:
        try:
            d = json.loads(raw)
            s = cls(**d)
        except (ValueError, TypeError) as e:
            raise ManifestError(f"{where}: not valid checkpoint settings ({e})") from None
        if s.format != FORMAT or (s.keep is not None and s.keep < 1):
            raise ManifestError(f"{where}: bad settings {d!r}")
        return s
