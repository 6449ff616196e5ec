"""A checkpoint set: one job's versions in one directory of a mounted volume.

Layout (docs/checkpoints.md)::

    <set>/.xfs-checkpoint.json      the job's name and retention (keep N)
    <set>/v000001/MANIFEST.json     a published version: its manifest and files
    <set>/v000001/...
    <set>/.part-v000002-1a2b3c4d/   a version being written (a draft): never a version

A version is written into a draft, every file fsynced, the durability barrier passed
(every file at its replication policy), the manifest written and fsynced, and only then
the draft renamed to its version's name: the rename is the commit. A crash at any point
before leaves a draft, which nothing lists as a version and ``prune`` removes once its
writer is gone; the versions before are untouched. Two writers that pick the same number
race on the rename; the loser takes the next number.

A file unchanged since the parent version is not stored again: it is a hard link to the
parent's file (``from_parent`` in the manifest). Published files lose their write bits,
since a link shares them with every version that holds it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from xfs.checkpoint import barrier as barriers
from xfs.checkpoint.manifest import (
    DRAFT_OWNER,
    MANIFEST,
    SETTINGS,
    FileEntry,
    Manifest,
    ManifestError,
    Settings,
    draft_name,
    is_draft,
    parse_version,
    safe_relative,
    version_name,
)
from xfs.common.digests import TreeDigest

CHUNK = 1 << 20
STALE_AFTER = 24 * 3600.0  # a draft whose writer cannot be checked is stale after this
DELETING = ".deleting-"

Progress = Callable[[int], None]  # bytes (or files) done since the last call


class CheckpointError(OSError):
    """A refused or failed checkpoint operation, with the errno that says why."""


def _no_progress(_: int) -> None:
    return None


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY if path.is_dir() else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` durably, old or new content and nothing between."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    fsync_path(path.parent)


def digest_file(path: Path, object_size: int, progress: Progress = _no_progress) -> TreeDigest:
    d = TreeDigest(object_size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            d.update(chunk)
            progress(len(chunk))
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same(path: Path, size: int, entry: FileEntry) -> bool:
    """Whether local file ``path`` (of ``size`` bytes) holds what ``entry`` describes."""
    return size == entry.size and digest_file(path, entry.object_size).hexdigest() == entry.digest


@dataclass(frozen=True)
class DraftInfo:
    name: str
    owner: dict[str, Any]
    stale: bool


class CheckpointSet:
    """The versions of one job in directory ``path``."""

    def __init__(self, path: Path, settings: Settings, barrier_timeout: float) -> None:
        self.path = path
        self.settings = settings
        self.on_xfs = barriers.on_xfs(path)  # (read once: /proc/mounts)
        self.barrier: barriers.ReplicaBarrier | barriers.LocalBarrier = (
            barriers.ReplicaBarrier(barrier_timeout) if self.on_xfs else barriers.LocalBarrier()
        )

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        create: bool = False,
        job: str | None = None,
        barrier_timeout: float = barriers.TIMEOUT,
    ) -> CheckpointSet:
        """The set in ``path``; with ``create``, made if it is not one yet (the job's name
        defaults to the directory's)."""
        path = Path(path).absolute()
        where = path / SETTINGS
        try:
            settings = Settings.from_json(where.read_bytes(), str(where))
        except FileNotFoundError:
            if not create:
                raise CheckpointError(
                    errno.ENOENT, f"{path} is not a checkpoint set (no {SETTINGS})"
                ) from None
            if not path.is_dir():  # (a delegated worker may not mkdir what exists)
                path.mkdir(parents=True, exist_ok=True)
            settings = Settings(job or path.name)
            write_file_atomically(where, settings.to_json())
        return cls(path, settings, barrier_timeout)

    def configure(self, keep: int | None) -> None:
        """Retention: keep the newest ``keep`` versions after each commit (None: all)."""
        if keep is not None and keep < 1:
            raise CheckpointError(errno.EINVAL, f"keep must be at least 1, not {keep}")
        self.settings = replace(self.settings, keep=keep)
        write_file_atomically(self.path / SETTINGS, self.settings.to_json())

    # ------------------------------------------------------------------ reading
    def versions(self) -> list[int]:
        """The published versions, oldest first."""
        found = []
        for name in os.listdir(self.path):
            number = parse_version(name)
            if number is not None and (self.path / name / MANIFEST).is_file():
                found.append(number)
        return sorted(found)

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_path(self, number: int) -> Path:
        return self.path / version_name(number)

    def manifest(self, number: int | None = None) -> Manifest:
        """The manifest of version ``number`` (the newest by default)."""
        if number is None:
            number = self.latest()
            if number is None:
                raise CheckpointError(errno.ENOENT, f"{self.path} has no version yet")
        where = self.version_path(number) / MANIFEST
        try:
            raw = where.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(errno.ENOENT, f"no version {number} in {self.path}") from None
        return Manifest.from_json(raw, str(where))

    def drafts(self) -> list[DraftInfo]:
        """Versions being written, or left by a writer that died."""
        out = []
        now = time.time()
        for name in sorted(os.listdir(self.path)):
            if not (is_draft(name) or name.startswith(DELETING)):
                continue
            owner: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                owner = dict(json.loads((self.path / name / DRAFT_OWNER).read_bytes()))
            if name.startswith(DELETING):
                stale = True
            elif owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
                stale = not _alive(owner["pid"])
            else:
                started = float(owner.get("started", 0.0)) or (self.path / name).stat().st_mtime
                stale = now - started > STALE_AFTER
            out.append(DraftInfo(name, owner, stale))
        return out

    # ------------------------------------------------------------------ writing
    def begin(
        self,
        backend: str,
        source: dict[str, Any],
        *,
        incremental: bool = True,
        progress: Progress = _no_progress,
    ) -> Draft:
        """A new version, in a draft, with the newest version as its parent (unless not
        ``incremental``); ``progress`` is told the bytes the draft writes or reads."""
        latest = self.latest()
        parent = self.manifest(latest) if incremental and latest is not None else None
        number = (latest or 0) + 1
        path = self.path / draft_name(number, secrets.token_hex(4))
        path.mkdir()
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        (path / DRAFT_OWNER).write_bytes(json.dumps(owner).encode())
        return Draft(self, number, path, parent, backend, source, progress)

    def clean_drafts(self) -> list[str]:
        """Remove the drafts whose writer is gone; their names."""
        removed = []
        for d in self.drafts():
            if d.stale:
                shutil.rmtree(self.path / d.name, ignore_errors=True)
                removed.append(d.name)
        return removed

    def delete(self, number: int, *, force: bool = False) -> None:
        """Remove version ``number``: first its name (atomically), then its files."""
        self.manifest(number)  # ENOENT if there is no such version
        needed_by = [] if force else self._needing(number)
        if needed_by:
            raise CheckpointError(
                errno.EBUSY,
                f"version {number} is needed by version(s) {needed_by} (their images refer to "
                "it); delete those first",
            )
        gone = self.path / f"{DELETING}{version_name(number)}-{secrets.token_hex(4)}"
        os.rename(self.version_path(number), gone)
        fsync_path(self.path)
        shutil.rmtree(gone)

    def _needing(self, number: int) -> list[int]:
        """The versions whose images refer to version ``number``."""
        return [v for v in self.versions() if v != number and number in self.manifest(v).depends_on]

    def prune(self, keep: int | None = None) -> list[int]:
        """Keep the newest ``keep`` versions (default: the set's retention) and those
        they depend on; delete the others, oldest first, and stale drafts. The deleted."""
        keep = keep if keep is not None else self.settings.keep
        if keep is None:
            raise CheckpointError(errno.EINVAL, "how many to keep? (--keep N, or set retention)")
        if keep < 1:
            raise CheckpointError(errno.EINVAL, f"keep must be at least 1, not {keep}")
        versions = self.versions()
        kept = set(versions[-keep:])
        todo = list(kept)
        while todo:
            for needed in self.manifest(todo.pop()).depends_on:
                if needed not in kept:
                    kept.add(needed)
                    todo.append(needed)
        deleted = []
        for number in versions:
            if number not in kept:
                self.delete(number, force=True)
                deleted.append(number)
        self.clean_drafts()
        return deleted

    def restore_to(self, number: int, target: Path, progress: Progress = _no_progress) -> Manifest:
        """Copy version ``number``'s files into ``target``, each checked against its digest
        while it is copied (EIO naming the file if one differs)."""
        m = self.manifest(number)
        source = self.version_path(number)
        target.mkdir(parents=True, exist_ok=True)
        for entry in m.files:
            dst = target / entry.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            d = TreeDigest(entry.object_size)
            with open(source / entry.path, "rb") as f, open(dst, "wb") as out:
                while chunk := f.read(CHUNK):
                    d.update(chunk)
                    out.write(chunk)
                    progress(len(chunk))
            if d.hexdigest() != entry.digest or d.size != entry.size:
                raise CheckpointError(
                    errno.EIO, f"{source / entry.path} does not match the manifest's digest"
                )
            os.chmod(dst, entry.mode)
        return m


class Draft:
    """A version being written. Files go in with :meth:`add`, :meth:`open` or
    :meth:`keep`, or straight into :attr:`path` (a checkpointer's images; :meth:`commit`
    finds them); :meth:`commit` publishes it, :meth:`abort` removes it."""

    def __init__(
        self,
        owner: CheckpointSet,
        number: int,
        path: Path,
        parent: Manifest | None,
        backend: str,
        source: dict[str, Any],
        progress: Progress = _no_progress,
    ) -> None:
        self.set = owner
        self.number = number
        self.path = path
        self.parent = parent
        self.backend = backend
        self.source = dict(source)
        self.depends_on: list[int] = []
        self.entries: dict[str, FileEntry] = {}
        self.progress = progress

    def __enter__(self) -> Draft:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None and self.path.exists():
            self.abort()

    def _parent_entry(self, rel: str) -> FileEntry | None:
        return None if self.parent is None else self.parent.entry(rel)

    def _parent_file(self, rel: str) -> Path:
        assert self.parent is not None
        return self.set.version_path(self.parent.version) / rel

    def _destination(self, name: str) -> tuple[str, Path]:
        rel = safe_relative(name)
        if rel in self.entries:
            raise CheckpointError(errno.EEXIST, f"{rel} is in this version already")
        dst = self.path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        return rel, dst

    def keep(self, name: str) -> FileEntry:
        """``name`` as it is in the parent version, not stored again."""
        rel, dst = self._destination(name)
        before = self._parent_entry(rel)
        if before is None:
            raise CheckpointError(errno.ENOENT, f"the parent version has no {rel}")
        os.link(self._parent_file(rel), dst)
        entry = self.entries[rel] = replace(before, from_parent=True)
        return entry

    def add(self, src: Path, name: str | None = None) -> FileEntry:
        """Copy local file ``src`` in as ``name``; a file equal to the parent's is linked."""
        rel, dst = self._destination(name if name is not None else src.name)
        st = os.stat(src)
        before = self._parent_entry(rel)
        if before is not None and _same(src, st.st_size, before):
            os.link(self._parent_file(rel), dst)
            self.progress(st.st_size)
            entry = self.entries[rel] = replace(before, from_parent=True)
            return entry
        with open(src, "rb") as f, self._writer(rel, dst, st.st_mode) as out:
            while chunk := f.read(CHUNK):
                out.write(chunk)
        return self.entries[rel]

    def add_tree(self, src: Path) -> list[FileEntry]:
        """Every regular file under directory ``src``, at its path below it (symbolic
        links, devices and empty directories are not captured)."""
        added = []
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                if path.is_file() and not path.is_symlink():
                    added.append(self.add(path, str(path.relative_to(src))))
        return added

    @contextlib.contextmanager
    def open(self, name: str, mode: int = 0o644) -> Iterator[VersionFile]:
        """A new file ``name`` to write (binary); a file equal to the parent's is linked
        to it instead when it is closed."""
        rel, dst = self._destination(name)
        with self._writer(rel, dst, mode) as out:
            yield out

    @contextlib.contextmanager
    def _writer(self, rel: str, dst: Path, mode: int) -> Iterator[VersionFile]:
        f = open(dst, "xb")  # noqa: SIM115 (closed below)
        try:
            digest = TreeDigest(barriers.object_size(dst, self.set.on_xfs))
            yield VersionFile(f, digest, self.progress)
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        self.entries[rel] = self._entry(
            rel, dst, digest.size, digest.hexdigest(), digest.object_size, mode
        )

    def _entry(
        self, rel: str, dst: Path, size: int, digest: str, object_size: int, mode: int
    ) -> FileEntry:
        entry = FileEntry(rel, size, mode & 0o7777, digest, object_size)
        before = self._parent_entry(rel)
        if before is not None and (before.digest, before.size) == (entry.digest, entry.size):
            os.unlink(dst)  # the same bytes as the parent's: share its file
            os.link(self._parent_file(rel), dst)
            entry = replace(before, from_parent=True)
        return entry

    def _found(self) -> list[str]:
        """Files in the draft that were not written through this object."""
        found = []
        for root, _, files in os.walk(self.path):
            for name in files:
                rel = str((Path(root) / name).relative_to(self.path))
                if rel not in self.entries and rel != DRAFT_OWNER:
                    found.append(rel)
        return sorted(found)

    def commit(self) -> Manifest:
        """Publish the version: files fsynced, the barrier passed, the manifest written,
        the draft renamed. The manifest as published."""
        for rel in self._found():
            dst = self.path / rel
            if dst.is_symlink() or not dst.is_file():
                raise CheckpointError(errno.EINVAL, f"{dst} is not a regular file")
            mode = os.stat(dst).st_mode
            # read back once (asking the OSDs for the digests of all three replicas
            # instead was slower: 37 against 47 MiB/s for a 200 MiB image at factor 3)
            d = digest_file(dst, barriers.object_size(dst, self.set.on_xfs), self.progress)
            fsync_path(dst)
            self.entries[rel] = self._entry(rel, dst, d.size, d.hexdigest(), d.object_size, mode)
        files = [self.entries[rel] for rel in sorted(self.entries)]
        for entry in files:
            if not entry.from_parent:
                os.chmod(self.path / entry.path, entry.mode & ~0o222)
        state = self.set.barrier.wait([self.path / f.path for f in files])
        number = self.number
        for _ in range(1000):
            m = Manifest(
                job=self.set.settings.job,
                version=number,
                parent=None if self.parent is None else self.parent.version,
                backend=self.backend,
                node=socket.gethostname(),
                created=time.time(),
                source=self.source,
                files=files,
                barrier=state,
                depends_on=sorted(self.depends_on),
            )
            write_file_atomically(self.path / MANIFEST, m.to_json())
            self.set.barrier.wait([self.path / MANIFEST])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / DRAFT_OWNER)  # (a published version has none)
            for root, dirs, _ in os.walk(self.path):
                for name in dirs:
                    fsync_path(Path(root) / name)
            try:
                os.rename(self.path, self.set.version_path(number))
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                number += 1  # another writer published this number first
                continue
            fsync_path(self.set.path)
            self.path = self.set.version_path(number)
            if self.set.settings.keep is not None:
                self.set.prune()
            return m
        raise CheckpointError(errno.EEXIST, "no free version number")

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class VersionFile:
    """A binary file that feeds what is written to a digest."""

    def __init__(self, f: BinaryIO, digest: TreeDigest, progress: Progress) -> None:
        self._f = f
        self._digest = digest
        self._progress = progress

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self._f.write(data)
        self._digest.update(memoryview(data)[:n])
        self._progress(n)
        return n

    def fileno(self) -> int:
        return self._f.fileno()


__all__ = ["CheckpointError", "CheckpointSet", "Draft", "DraftInfo", "ManifestError", "VersionFile"]
