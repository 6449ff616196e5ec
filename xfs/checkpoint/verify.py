"""``xfs checkpoint verify``: every file of a version against its manifest, every replica.

For each file, on an xfs mount, first every replica: the mount asks each replica's OSDs
for the SHA-256 of the objects they hold (the ``xfs.replica.digest`` xattr; nothing is
repaired on the way), and the replica's tree digest must equal the manifest's. Then the
file's bytes as a reader gets them, and whether it is still stored at its policy. The
replicas come first because a read repairs a corrupt copy at the primary it goes to:
verify reports that copy before the read mends it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from xfs.checkpoint import barrier as barriers
from xfs.checkpoint.manifest import DRAFT_OWNER, MANIFEST, FileEntry
from xfs.checkpoint.sets import CheckpointSet, digest_file


def verify(
    ckpt: CheckpointSet, number: int, progress: Callable[[int], None] | None = None
) -> list[str]:
    """What is wrong with version ``number`` (nothing: an empty list). ``progress`` gets
    the bytes read."""
    m = ckpt.manifest(number)
    root = ckpt.version_path(number)
    xfs = barriers.on_xfs(root)
    problems: list[str] = []
    listed = {f.path for f in m.files}
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = str((Path(dirpath) / name).relative_to(root))
            if rel not in listed and rel not in (MANIFEST, DRAFT_OWNER):
                problems.append(f"{rel}: not in the manifest")
    for entry in m.files:
        problems += [
            f"{entry.path}: {p}" for p in check_file(root / entry.path, entry, xfs, progress)
        ]
    return problems


def check_file(
    path: Path, entry: FileEntry, xfs: bool, progress: Callable[[int], None] | None = None
) -> list[str]:
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return [f"cannot stat: {e.strerror}"]
    if size != entry.size:
        return [f"{size} bytes, the manifest says {entry.size}"]
    problems = []
    if xfs:
        problems += _replicas(path, entry)
    try:
        got = digest_file(path, entry.object_size, progress or (lambda _: None)).hexdigest()
    except OSError as e:
        return [*problems, f"cannot read: {e.strerror}"]
    if got != entry.digest:
        problems.append("its bytes differ from the manifest's digest")
    if xfs:
        ok, _, missing = barriers.at_policy(barriers.replicas(path))
        if not ok:
            problems.append(f"not stored at its policy: {missing}")
    return problems


def _replicas(path: Path, entry: FileEntry) -> list[str]:
    try:
        info = json.loads(os.getxattr(path, barriers.DIGESTS))
    except OSError as e:
        return [f"cannot ask its replicas: {e.strerror}"]
    if info["object_size"] != entry.object_size:
        return [f"object size {info['object_size']}, the manifest used {entry.object_size}"]
    problems = []
    for i, r in enumerate(info["replicas"], 1):
        where = f"replica {i} (OSD {', '.join(r['osds'])})"
        if r["tree"] is None:
            more = r["problem_count"] - len(r["problems"])
            problems.append(
                f"{where}: " + "; ".join(r["problems"]) + (f"; {more} more" if more else "")
            )
        elif r["tree"] != entry.digest:
            problems.append(f"{where}: holds other bytes than the manifest's")
    return problems
