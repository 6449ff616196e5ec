"""What the MRC's modules need of a metadata store, whichever engine keeps it.

Two stores implement :class:`MetaStore`: ``xfs.mrc.store.Store`` (SQLite, one file,
the embedded default) and ``xfs.mrc.pgstore.PgStore`` (PostgreSQL). Both create the
tables of ``xfs.mrc.store.SCHEMA``, and every query of the MRC is written once, in the
SQL both engines accept: ``?`` parameters, ``ON CONFLICT`` upserts, ``RETURNING``, no
engine's own functions (``greatest`` is the one added to SQLite). What each store
promises on commit is in docs/design/metadata-ha.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


class Cursor(Protocol):
    """The part of a DB-API cursor the MRC uses (``sqlite3.Cursor`` is one)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ..., /) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class MetaStore(Protocol):
    """A store of the MRC's tables: transactions on one connection, serialised."""

    clock: Callable[[], int]
    commits: int  # write transactions committed so far (the syncer's measure)

    @property
    def name(self) -> str:
        """Where the store is, for messages (a path, or a PostgreSQL address without
        its password)."""
        ...

    def transaction(self) -> AbstractContextManager[Cursor]: ...

    def batch(self) -> AbstractContextManager[None]: ...

    def read(self) -> AbstractContextManager[Cursor]: ...

    def sync(self) -> None: ...

    def checkpoint(self) -> None: ...

    def checkpoint_elsewhere(self) -> None: ...

    def close(self) -> None: ...

    def try_lead(self) -> bool:
        """Become the MRC that serves the store, unless another one does (then False)."""
        ...

    def after_copy(self) -> None:
        """After rows were copied in with their own ids (``xfs.mrc.migrate``): the
        next id the store gives is past them."""
        ...


def is_postgresql(spec: str | Path) -> bool:
    """Whether ``spec`` is a PostgreSQL address (else: an SQLite file)."""
    return str(spec).startswith(POSTGRESQL_SCHEMES)


def redacted(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(
    spec: str | Path, clock: Callable[[], int] = time.time_ns, application: str = "xfs"
) -> MetaStore:
    """The store ``spec`` names: a ``postgresql://`` connection string, else the path of
    an SQLite file. ``application``: who connects, for PostgreSQL (``"xfs-mrc"``: an MRC,
    which an offline repair waits for)."""
    if is_postgresql(spec):
        from xfs.mrc.pgstore import PgStore

        return PgStore.open(str(spec), clock, application)
    from xfs.mrc.store import Store

    return Store.open(Path(spec), clock)
