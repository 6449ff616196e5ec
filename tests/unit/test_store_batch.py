"""Store.batch: transactions as savepoints of one, each succeeding or failing alone
(on both stores; on PostgreSQL in pipeline mode, where a statement's error comes back
only where the transaction next waits)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from xfs.mrc import store as store_mod
from xfs.mrc.sql import MetaStore, open_store
from xfs.mrc.store import Store

DB_ERRORS = (sqlite3.Error, psycopg.Error)


def keys(store: MetaStore) -> set[str]:
    with store.read() as cur:
        return {k for (k,) in cur.execute("SELECT key FROM meta WHERE key LIKE 't%'")}


def put(store: MetaStore, key: str, *, fail: bool = False) -> None:
    with store.transaction() as cur:
        cur.execute("INSERT INTO meta VALUES (?, 1)", (key,))
        if fail:
            raise ValueError("refused")


def put_twice(store: MetaStore, key: str, then: Any = None) -> None:
    """A transaction whose second statement breaks the table's key; nothing reads its
    result (on PostgreSQL it goes out without waiting)."""
    with store.transaction() as cur:
        cur.execute("INSERT INTO meta VALUES (?, 1)", (key,))
        cur.execute("INSERT INTO meta VALUES (?, 2)", (key,))
        if then is not None:
            then(cur)


def test_a_failed_transaction_of_a_batch_is_undone_alone(store_spec: str | Path) -> None:
    store = open_store(store_spec)
    commits = store.commits
    with store.batch():
        put(store, "t1")
        with pytest.raises(ValueError):
            put(store, "t2", fail=True)
        with pytest.raises(DB_ERRORS):
            put_twice(store, "t2b")
        put(store, "t3")
        assert keys(store) == {"t1", "t3"}  # (read inside: the batch's own view)
    assert keys(store) == {"t1", "t3"}
    assert store.commits > commits
    other = open_store(store_spec)  # committed: another connection sees it
    assert keys(other) == {"t1", "t3"}
    other.close()
    store.close()


def test_an_error_out_of_the_batch_undoes_all_of_it(store_spec: str | Path) -> None:
    store = open_store(store_spec)
    with pytest.raises(RuntimeError), store.batch():
        put(store, "t1")
        raise RuntimeError("the batch fails")
    assert keys(store) == set()
    put(store, "t4")  # and the store goes on as before
    with store.batch(), store.batch():  # nested: one batch
        put(store, "t5")
    assert keys(store) == {"t4", "t5"}
    store.close()


def test_a_statement_error_fails_its_transaction_wherever_it_comes_back(
    store_spec: str | Path,
) -> None:
    """Outside a batch: at the commit, or at a read that follows; either way the whole
    transaction is undone, and the store goes on."""
    store = open_store(store_spec)
    with pytest.raises(DB_ERRORS):
        put_twice(store, "t1")
    with pytest.raises(DB_ERRORS):
        put_twice(store, "t2", then=lambda cur: cur.execute("SELECT 1").fetchone())
    with pytest.raises(DB_ERRORS):
        put_twice(store, "t3", then=lambda cur: cur.rowcount)
    assert keys(store) == set()
    put(store, "t4")
    with store.transaction() as cur:  # rowcount and fetches see their own statement
        assert cur.execute("UPDATE meta SET value = 5 WHERE key = 't4'").rowcount == 1
        assert cur.execute("UPDATE meta SET value = 5 WHERE key = 'none'").rowcount == 0
        assert cur.execute("SELECT value FROM meta WHERE key = 't4'").fetchone() == (5,)
        assert cur.execute("DELETE FROM meta WHERE key = 'none'").fetchone() is None
    assert keys(store) == {"t4"}
    store.close()


def test_the_wal_is_cut_under_a_steady_stream_of_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits never stop while the checkpoints run (in a thread, as the Syncer runs
    them), so a passive checkpoint never reaches the WAL's end and the WAL never starts
    over: past WAL_KEEP_BYTES the checkpoint cuts the file, else it grows without bound."""
    monkeypatch.setattr(store_mod, "WAL_KEEP_BYTES", 256 << 10)
    store = Store.open(tmp_path / "mrc.db")
    store.checkpoint_elsewhere()
    wal = tmp_path / "mrc.db-wal"
    done = threading.Event()
    sizes: list[int] = []

    def checkpoints() -> None:
        while not done.is_set():
            store.checkpoint()
            sizes.append(wal.stat().st_size)
            time.sleep(0.005)

    checkpointer = threading.Thread(target=checkpoints)
    checkpointer.start()
    try:
        i = 0
        while i < 3000 or (len(sizes) < 20 and i < 100_000):
            with store.transaction() as cur:
                cur.execute("INSERT INTO meta VALUES (?, ?)", (f"t{i}", i))
            i += 1
    finally:
        done.set()
        checkpointer.join(30)
    assert len(sizes) >= 20
    assert max(sizes[len(sizes) // 2 :]) < 2 << 20  # (without the cut: tens of MiB)
    assert len(keys(store)) == i
    store.close()


def test_a_reader_elsewhere_holds_the_cut_up_only_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read transaction of another connection (an `xfs fsck` of the live store) keeps
    the WAL from being cut; the checkpoint gives up at once instead of stalling commits."""
    monkeypatch.setattr(store_mod, "WAL_KEEP_BYTES", 16 << 10)
    store = Store.open(tmp_path / "mrc.db")
    store.checkpoint_elsewhere()
    reader = sqlite3.connect(tmp_path / "mrc.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM meta").fetchall()
    for i in range(200):
        put(store, f"t{i}")
    started = time.monotonic()
    store.checkpoint()
    assert time.monotonic() - started < 2  # (busy_timeout of commits: 10 s)
    put(store, "t-after")  # commits go on
    reader.execute("COMMIT")
    reader.close()
    store.checkpoint()
    assert (tmp_path / "mrc.db-wal").stat().st_size == 0  # cut once the reader left
    store.close()
