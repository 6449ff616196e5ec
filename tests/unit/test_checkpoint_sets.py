"""Checkpoint sets on a local directory (the ``local`` barrier): versions, drafts, links,
retention, restore. The same code on a mounted volume: tests/system/test_checkpoints.py."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xfs.checkpoint import CheckpointError, CheckpointSet, Manifest, ManifestError
from xfs.checkpoint.barrier import at_policy
from xfs.checkpoint.manifest import MANIFEST, draft_name, is_draft, parse_version
from xfs.common.digests import TreeDigest, tree

MiB = 1 << 20


def _version(ckpt: CheckpointSet, files: dict[str, bytes]) -> Manifest:
    with ckpt.begin("app", {"application": "test"}) as draft:
        for name, data in files.items():
            with draft.open(name) as f:
                f.write(data)
        return draft.commit()


def test_tree_digest_is_the_digest_of_the_objects_digests() -> None:
    data = os.urandom(3 * 1000 + 17)
    d = TreeDigest(1000)
    for at in range(0, len(data), 333):  # fed in pieces that straddle objects
        d.update(data[at : at + 333])
    objects = [hashlib.sha256(data[i : i + 1000]).digest() for i in range(0, len(data), 1000)]
    assert d.hexdigest() == tree(objects) and d.size == len(data)
    assert TreeDigest(1000).hexdigest() == hashlib.sha256(b"").hexdigest()  # empty file


def test_names_of_versions_and_drafts() -> None:
    assert parse_version("v000012") == 12 and parse_version("v12") is None
    assert parse_version(draft_name(3, "0a1b2c3d")) is None and is_draft(draft_name(3, "0a1b2c3d"))
    assert not is_draft("v000003") and not is_draft(".part-v000003-xyz")


def test_a_version_is_published_with_its_manifest(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    assert ckpt.versions() == [] and ckpt.settings.job == "job"
    m = _version(ckpt, {"state.bin": b"x" * 5000, "sub/params.json": b"{}"})
    assert (m.version, m.parent, m.backend, m.barrier.kind) == (1, None, "app", "local")
    assert ckpt.versions() == [1] and ckpt.manifest(1) == m
    assert (ckpt.version_path(1) / "sub/params.json").read_bytes() == b"{}"
    assert not os.stat(ckpt.version_path(1) / "state.bin").st_mode & 0o222  # read-only
    assert [d.name for d in ckpt.drafts()] == []
    with pytest.raises(CheckpointError) as e:
        CheckpointSet.open(tmp_path / "nothing")
    assert e.value.errno == errno.ENOENT and "not a checkpoint set" in str(e.value)


def test_unchanged_files_are_links_to_the_parents(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "big").write_bytes(os.urandom(3 * MiB + 5))
    (local / "small").write_bytes(b"one")
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    with ckpt.begin("directory", {"directory": str(local)}) as draft:
        draft.add_tree(local)
        first = draft.commit()
    (local / "small").write_bytes(b"two")
    with ckpt.begin("directory", {"directory": str(local)}) as draft:
        draft.add_tree(local)
        with draft.open("written") as f:
            f.write(b"w")
        second = draft.commit()
    assert second.parent == 1
    big, before = second.entry("big"), first.entry("big")
    assert big is not None and before is not None
    assert big.from_parent and big == dataclasses.replace(before, from_parent=True)
    inodes = {os.stat(ckpt.version_path(n) / "big").st_ino for n in (1, 2)}
    assert len(inodes) == 1
    small = second.entry("small")
    assert small is not None and not small.from_parent
    assert second.bytes_new == 4 and second.bytes_total == 3 * MiB + 5 + 4
    # a file written again with the same bytes is shared too
    with ckpt.begin("app", {}) as draft:
        with draft.open("written") as f:
            f.write(b"w")
        draft.keep("big")
        third = draft.commit()
    assert all(f.from_parent for f in third.files) and third.bytes_new == 0
    # --full: nothing shared
    with ckpt.begin("app", {}, incremental=False) as draft:
        draft.add(local / "big")
        fourth = draft.commit()
    assert fourth.parent is None and fourth.bytes_new == 3 * MiB + 5


def test_a_version_left_by_a_killed_writer_is_never_a_version(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    _version(ckpt, {"state": b"good"})
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from xfs.checkpoint import CheckpointSet
        ckpt = CheckpointSet.open({str(ckpt.path)!r})
        draft = ckpt.begin("app", {{}})
        with draft.open("state") as f:
            f.write(b"half")
            Path({str(ready)!r}).write_text("x")
            time.sleep(60)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert [d.stale for d in ckpt.drafts()] == [False]  # its writer lives
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert ckpt.versions() == [1] and ckpt.manifest().files[0].size == 4
    assert [d.stale for d in ckpt.drafts()] == [True]
    # the next version's parent is the good one, and prune removes the draft
    assert _version(ckpt, {"state": b"next"}).parent == 1
    assert ckpt.prune(keep=5) == [] and ckpt.drafts() == []


def test_prune_keeps_exactly_the_newest(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    for i in range(5):
        _version(ckpt, {"state": bytes([i]) * 100, "same": b"s"})
    assert ckpt.prune(keep=2) == [1, 2, 3]
    assert ckpt.versions() == [4, 5]
    assert (ckpt.version_path(4) / "same").read_bytes() == b"s"  # its link outlived v1
    ckpt.configure(keep=3)
    for i in range(3):
        _version(ckpt, {"state": bytes([9]) * i})
    assert ckpt.versions() == [6, 7, 8]  # retention applied at every commit
    with pytest.raises(CheckpointError):
        ckpt.prune(keep=0)


def test_delete_refuses_a_version_others_depend_on(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    _version(ckpt, {"pages": b"p"})
    with ckpt.begin("app", {}) as draft:
        draft.depends_on.append(1)
        draft.keep("pages")
        draft.commit()
    with pytest.raises(CheckpointError) as e:
        ckpt.delete(1)
    assert e.value.errno == errno.EBUSY and "needed by version(s) [2]" in str(e.value)
    assert ckpt.prune(keep=1) == [] and ckpt.versions() == [1, 2]  # kept for v2
    ckpt.delete(2)
    ckpt.delete(1)
    assert ckpt.versions() == []


def test_two_writers_of_one_number_both_publish(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    a = ckpt.begin("app", {})
    b = ckpt.begin("app", {})
    assert a.number == b.number == 1
    with a.open("f") as f:
        f.write(b"a")
    with b.open("f") as f:
        f.write(b"b")
    assert a.commit().version == 1 and b.commit().version == 2
    assert (ckpt.version_path(2) / "f").read_bytes() == b"b"


def test_restore_checks_every_byte(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    _version(ckpt, {"state": b"abc" * 1000, "d/e": b"x"})
    ckpt.restore_to(1, tmp_path / "out")
    assert (tmp_path / "out/state").read_bytes() == b"abc" * 1000
    victim = ckpt.version_path(1) / "state"
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.write(b"X")
    with pytest.raises(CheckpointError) as e:
        ckpt.restore_to(1, tmp_path / "again")
    assert e.value.errno == errno.EIO and "does not match" in str(e.value)


def test_a_bad_manifest_is_named(tmp_path: Path) -> None:
    ckpt = CheckpointSet.open(tmp_path / "job", create=True)
    _version(ckpt, {"state": b"s"})
    where = ckpt.version_path(1) / MANIFEST
    body = json.loads(where.read_bytes())
    body["files"][0]["path"] = "../../etc/passwd"
    where.write_text(json.dumps(body))
    with pytest.raises(ManifestError) as e:
        ckpt.manifest(1)
    assert str(where) in str(e.value) or "relative path" in str(e.value)
    where.write_text("{}")
    with pytest.raises(ManifestError, match="format"):
        ckpt.manifest(1)


def test_at_policy_counts_complete_replicas() -> None:
    def info(factor: int, *complete: bool) -> dict[str, object]:
        return {"factor": factor, "replicas": [{"complete": c} for c in complete]}

    assert at_policy(info(3, True, True, True)) == (True, 3, "")
    ok, n, missing = at_policy(info(3, True, True, False))
    assert not ok and n == 2 and missing == "2 of 3 replicas complete (1 filling)"
    assert at_policy(info(2, True))[0] is False  # a replica short (an OSD lost)
    assert at_policy(info(1, True))[0] is True
