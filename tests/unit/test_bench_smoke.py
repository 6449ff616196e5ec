"""Smoke test of bench/workloads.py: tiny sizes, no mounts, no global cache drop."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

WORKLOADS = Path(__file__).resolve().parents[2] / "bench" / "workloads.py"


@pytest.fixture(scope="module")
def workloads():
    spec = importlib.util.spec_from_file_location("bench_workloads", WORKLOADS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_seq_write_then_read(workloads, tmp_path: Path) -> None:
    size = 4 * workloads.MiB
    w = workloads.seq_write(tmp_path, size, block=workloads.MiB)
    assert _positive(w)
    assert (tmp_path / workloads.SEQ_FILE).stat().st_size == size

    r = workloads.seq_read(tmp_path, block=workloads.MiB, drop=False)
    assert _positive(r.mib_s)
    assert r.caches_dropped is False
    assert isinstance(r.fadvised, bool)



def test_random_reads(workloads, tmp_path: Path) -> None:
    workloads.seq_write(tmp_path, 64 * 4096, block=workloads.MiB)
    assert workloads.random_reads(tmp_path, 50, drop=False) > 0
    assert _positive(workloads.random_writes(tmp_path, 50))

def test_seq_write_partial_block(workloads, tmp_path: Path) -> None:
    size = 3 * workloads.MiB + 12345
    assert _positive(workloads.seq_write(tmp_path, size, block=workloads.MiB))
    assert (tmp_path / workloads.SEQ_FILE).stat().st_size == size


def test_metadata(workloads, tmp_path: Path) -> None:
    calls = []
    fig = workloads.metadata(tmp_path, n=50, between=lambda: calls.append(1))
    assert set(fig) == {"create", "stat", "readdir", "unlink"} and calls == [1]
    assert all(_positive(v) for v in fig.values())
    assert list(tmp_path.iterdir()) == []  # cleaned up after itself


def test_stat_twice(workloads, tmp_path: Path) -> None:
    st = workloads.stat_twice(tmp_path, n=50, drop=False)
    assert _positive(st.first) and _positive(st.second) and _positive(st.first_s)
    assert st.caches_dropped is False
    assert list(tmp_path.iterdir()) == []  # cleaned up after itself


def test_small_files(workloads, tmp_path: Path) -> None:
    r = workloads.small_files(tmp_path, n=20, drop=False)
    assert _positive(r.write) and _positive(r.read)
    assert list(tmp_path.iterdir()) == []


def test_appends(workloads, tmp_path: Path) -> None:
    assert _positive(workloads.appends(tmp_path, n=100))
    assert list(tmp_path.iterdir()) == []


def test_criu_image(workloads, tmp_path: Path) -> None:
    sizes = workloads.criu_pattern(8 * workloads.MiB)
    assert sum(sizes) == 8 * workloads.MiB and {4096, workloads.MiB} <= set(sizes)
    r = workloads.criu_image(tmp_path, 8 * workloads.MiB)
    assert _positive(r.mib_s)
    assert (tmp_path / workloads.CRIU_FILE).stat().st_size == 8 * workloads.MiB


def test_checkpoint_versions(workloads, tmp_path: Path) -> None:
    assert _positive(workloads.checkpoint_version(tmp_path, 3 * workloads.MiB + 5))
    assert _positive(workloads.checkpoint_image(tmp_path, 2 * workloads.MiB))
    assert list(tmp_path.iterdir()) == []  # the sets are removed
