"""Copy an MRC's store to another engine (SQLite ⇄ PostgreSQL): ``xfs store-migrate``.

Every table of ``SCHEMA`` is copied row by row, parents before children (the order
``SCHEMA`` creates them in), from one read snapshot of the source into one transaction
of the destination, which must be a new store (no volume, no row in any table but
``meta``). The MRC must be stopped: what it changed after the snapshot would not be in
the copy. The command checks both stores with fsck and compares every table's rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from xfs.mrc.sql import Cursor, MetaStore
from xfs.mrc.store import SCHEMA

BATCH = 5000  # rows read and written at a time


def tables() -> list[str]:
    """The store's tables, in the order SCHEMA creates them (parents first)."""
    return re.findall(r"CREATE TABLE (\w+)", SCHEMA)


class MigrateError(Exception):
    """The destination is not a new store."""


def copy(source: MetaStore, destination: MetaStore) -> dict[str, int]:
    """Copy every row of ``source`` into ``destination``; rows copied per table."""
    copied: dict[str, int] = {}
    with source.read() as src, destination.transaction() as dst:
        for table in tables():
            if table != "meta" and dst.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                raise MigrateError(f"{destination.name} is not a new store: {table} has rows")
        for key, value in src.execute("SELECT key, value FROM meta").fetchall():
            dst.execute("DELETE FROM meta WHERE key = ?", (key,))
            dst.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        copied["meta"] = len(src.execute("SELECT key FROM meta").fetchall())
        for table in tables()[1:]:
            copied[table] = 0
            for rows in _batches(src, table):
                marks = ", ".join("?" * len(rows[0]))
                dst.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
                copied[table] += len(rows)
    destination.after_copy()
    return copied


def _batches(cur: Cursor, table: str) -> Iterator[list[tuple[object, ...]]]:
    cur.execute(f"SELECT * FROM {table}")
    while rows := cur.fetchmany(BATCH):
        yield [tuple(r) for r in rows]


def differences(one: MetaStore, other: MetaStore) -> list[str]:
    """Tables whose rows differ between the two stores (empty: the same content)."""
    out = []
    with one.read() as a, other.read() as b:
        for table in tables():
            rows_a = sorted(map(tuple, a.execute(f"SELECT * FROM {table}").fetchall()), key=repr)
            rows_b = sorted(map(tuple, b.execute(f"SELECT * FROM {table}").fetchall()), key=repr)
            if rows_a != rows_b:
                out.append(
                    f"{table}: {len(rows_a)} rows in {one.name}, {len(rows_b)} in {other.name}"
                )
    return out
