"""The MRC's SQLite store: the one canonical description of every table, and connections.

Every table of the MRC is created by ``SCHEMA`` below and nowhere else; ``fsck`` checks
exactly the invariants written next to it. The file carries ``format_version`` in the
``meta`` table and a store of any other version is refused.

Durability (docs/design/metadata.md): WAL journal with ``synchronous=NORMAL``. A
transaction that ``COMMIT`` returned from is in the WAL file (written, not yet fsynced):
it survives a crash of the process. ``sync()`` fsyncs the WAL, which makes every commit
before it survive a crash of the machine too; ``xfs.mrc.syncer`` calls it for many
commits at once (group commit). Every mutation is one ``with store.transaction() as
cur:`` block, committed before the caller replies.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import msgpack

from xfs.mrc.sql import Cursor

FORMAT_VERSION = 7
CACHE_KIB = 256 << 10  # SQLite's page cache at most (filled as pages are read)
WAL_KEEP_BYTES = 64 << 20  # a WAL file past this is cut (see ``Store.checkpoint``)
BUSY_TIMEOUT_MS = 10_000  # a transaction waits this long for another process's lock
CUT_WAIT_MS = 50  # a cutting checkpoint waits this long for another process's reader

# Integers are nanoseconds since the epoch (``*_ns``) unless named otherwise. Names of
# entries and xattrs are BLOBs: POSIX names are bytes, not text.
# Format 5 (docs/design/leases.md, "Directory leases"). A directory lease lets one client
# create files in a directory it made without asking first; another client's call on the
# directory recalls it. The inode numbers of those files come from ranges reserved for
# the client, cut from the volume's next_ino. Both end with the client's lease.
DIR_LEASES_SCHEMA = """
CREATE TABLE dir_leases (
    client TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    volume TEXT NOT NULL,
    ino    INTEGER NOT NULL,                  -- the directory
    PRIMARY KEY (volume, ino)
) STRICT;
CREATE INDEX dir_leases_by_client ON dir_leases(client);

CREATE TABLE ino_ranges (
    client TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    volume TEXT NOT NULL,
    start  INTEGER NOT NULL,                  -- the range as reserved: start..last
    first  INTEGER NOT NULL,                  -- the first unused number (last + 1: all used)
    last   INTEGER NOT NULL,                  -- all below next_ino
    PRIMARY KEY (volume, start)
) STRICT;
CREATE INDEX ino_ranges_by_client ON ino_ranges(client, volume);
"""

# Format 6 (docs/design/quotas.md). usage: what each owner's inodes of a volume hold,
# kept by xfs.mrc.inodes in the transaction that changes an inode: files counts every
# inode, bytes the size of each regular file times the replicas its policy keeps. quotas: the
# limits set with ``xfs quota``; principal '' is the whole volume; NULL is no limit.
QUOTAS_SCHEMA = """
CREATE TABLE usage (
    volume    TEXT NOT NULL,
    principal TEXT NOT NULL,                  -- an owner of inodes of the volume
    files     INTEGER NOT NULL,               -- >= 0
    bytes     INTEGER NOT NULL,               -- >= 0
    PRIMARY KEY (volume, principal)
) STRICT;

CREATE TABLE quotas (
    volume    TEXT NOT NULL REFERENCES volumes(id),
    principal TEXT NOT NULL,                  -- '': the volume as a whole
    files     INTEGER,                        -- NULL: no limit
    bytes     INTEGER,
    PRIMARY KEY (volume, principal)
) STRICT;
"""

# Format 7 (docs/design/metadata-ha.md): what every MRC over one store shares, kept in
# the store instead of the MRC's data directory. xcap_keys: the XCap signing keys
# (xfs.common.xcap.KeyRing); since: unix seconds, when the key became current or was
# staged. draining: the OSDs `xfs osd drain` named (no new replicas go there).
SHARED_SCHEMA = """
CREATE TABLE xcap_keys (
    id      TEXT PRIMARY KEY,                 -- key_id of its public key
    private BLOB NOT NULL,                    -- raw Ed25519 private key (32 bytes)
    since   REAL NOT NULL,
    signing INTEGER NOT NULL                  -- 1: the current key (one row at most)
) STRICT;

CREATE TABLE draining (
    uuid TEXT PRIMARY KEY
) STRICT;
"""

SCHEMA = (
    """
-- format_version: the on-disk format (FORMAT_VERSION); next_cursor: the next readdir
-- cursor, one counter for the whole store, only ever increases.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

-- A volume: one POSIX namespace. next_ino is the next inode number; numbers are never
-- reused (the root directory is ino 1, so next_ino starts at 2).
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY,             -- uuid4, what XCaps and OSDs name
    name        TEXT NOT NULL UNIQUE,
    owner       TEXT NOT NULL,
    grp         TEXT NOT NULL,
    mode        INTEGER NOT NULL,             -- permission bits of the root at creation
    stripe_size INTEGER NOT NULL,             -- default StripingPolicy of new files
    width       INTEGER NOT NULL,
    next_ino    INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL
) STRICT;

-- An inode. nlink: for a directory 2 + its subdirectories, else its number of dentries.
-- size: bytes for regular files (as reported by writers), len(target) for symlinks.
-- xloc: msgpack of XLocSet.to_wire(), regular files with a layout only.
-- target: symlinks only. truncate_epoch: +1 on every truncate (XCaps carry it).
CREATE TABLE inodes (
    volume         TEXT NOT NULL REFERENCES volumes(id),
    ino            INTEGER NOT NULL,
    mode           INTEGER NOT NULL,          -- full st_mode, file type included
    nlink          INTEGER NOT NULL,
    owner          TEXT NOT NULL,             -- grid principal
    grp            TEXT NOT NULL,             -- VO-scoped group
    size           INTEGER NOT NULL,
    atime_ns       INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    ctime_ns       INTEGER NOT NULL,
    rdev           INTEGER NOT NULL,
    truncate_epoch INTEGER NOT NULL,
    xloc           BLOB,
    target         BLOB,
    PRIMARY KEY (volume, ino)
) STRICT;

-- A directory entry. cursor: unique over the store, taken from meta.next_cursor when
-- the entry is made (or renamed) and kept until it is removed; readdir continues after
-- a cursor, so listings stay stable while entries come and go.
CREATE TABLE dentries (
    volume TEXT NOT NULL,
    parent INTEGER NOT NULL,
    name   BLOB NOT NULL,
    ino    INTEGER NOT NULL,
    cursor INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (volume, parent, name),
    FOREIGN KEY (volume, parent) REFERENCES inodes(volume, ino) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (volume, ino) REFERENCES inodes(volume, ino) DEFERRABLE INITIALLY DEFERRED
) STRICT;
CREATE INDEX dentries_by_ino ON dentries(volume, ino);
CREATE INDEX dentries_by_cursor ON dentries(volume, parent, cursor);

CREATE TABLE xattrs (
    volume TEXT NOT NULL,
    ino    INTEGER NOT NULL,
    name   BLOB NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (volume, ino, name),
    FOREIGN KEY (volume, ino) REFERENCES inodes(volume, ino) DEFERRABLE INITIALLY DEFERRED
) STRICT;

-- Files whose last link went (or whose volume was deleted): their objects are still on
-- the OSDs named by xloc. Deliberately no foreign keys: a row outlives its inode and
-- its volume until the OSDs have deleted the objects.
CREATE TABLE pending_deletions (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    volume TEXT NOT NULL,                     -- volume id
    ino    INTEGER NOT NULL,
    xloc   BLOB NOT NULL
) STRICT;

-- A client lease: one mount's session for one credential (principal). The files it has
-- open and the locks it holds last as long as the lease; a lease not renewed before
-- expires_ns (MRC clock) ends, and with it its opens and locks.
CREATE TABLE clients (
    id         TEXT PRIMARY KEY,              -- random, chosen by the MRC
    principal  TEXT NOT NULL,                 -- only this principal may use the lease
    expires_ns INTEGER NOT NULL
) STRICT;

-- Files open on a client. An inode whose last link went stays (nlink 0 and no entry:
-- an orphan) while some client has it open; the last close or lease end frees it.
CREATE TABLE opens (
    client TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    volume TEXT NOT NULL,
    ino    INTEGER NOT NULL,
    writable INTEGER NOT NULL,                -- 1: opened for writing at least once
    append_lease INTEGER NOT NULL DEFAULT 0,  -- 1: the client appends without asking
    PRIMARY KEY (client, volume, ino)
) STRICT;
CREATE INDEX opens_by_inode ON opens(volume, ino);

-- Locks held (the rules are xfs.mrc.locks): by an owner of a client, on one inode,
-- covering bytes first..last inclusive. owner is the kernel's 64-bit lock owner, stored
-- as a signed integer.
CREATE TABLE locks (
    volume TEXT NOT NULL,
    ino    INTEGER NOT NULL,
    client TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    owner  INTEGER NOT NULL,
    family TEXT NOT NULL,                     -- 'posix' | 'flock'
    mode   TEXT NOT NULL,                     -- 'read' | 'write'
    first  INTEGER NOT NULL,
    last   INTEGER NOT NULL,
    pid    INTEGER NOT NULL
) STRICT;
CREATE INDEX locks_by_inode ON locks(volume, ino);

-- The OSD registry (filled by heartbeats).
CREATE TABLE osds (
    uuid      TEXT PRIMARY KEY,
    address   TEXT NOT NULL,                  -- "host:port"
    free      INTEGER NOT NULL,
    total     INTEGER NOT NULL,
    labels    TEXT NOT NULL,                  -- JSON object of str -> str
    last_seen REAL NOT NULL                   -- unix seconds
) STRICT;

-- A delegation (docs/design/delegation.md): the worker certificate named grantee may
-- act as the grantor (its principal, VO and these groups; role standard) inside directory
-- root of the volume, until expires_ns or revoked_ns. The token's secret is kept only
-- as its SHA-256. Rows go with their volume; the directory may go before them (nothing
-- is then inside the delegation). Times are the MRC clock's.
CREATE TABLE delegations (
    id         TEXT PRIMARY KEY,              -- random, public: names it in list and revoke
    secret     BLOB NOT NULL,                 -- SHA-256 of the token's secret (32 bytes)
    grantor    TEXT NOT NULL,                 -- principal
    vo         TEXT NOT NULL,                 -- the grantor's VO
    groups     TEXT NOT NULL,                 -- JSON list: the grantor's groups when it delegated
    grantee    TEXT NOT NULL,                 -- principal of the worker certificate
    volume     TEXT NOT NULL REFERENCES volumes(id),
    root       INTEGER NOT NULL,              -- ino of the delegated directory
    path       TEXT NOT NULL,                 -- how the grantor named it (for display only)
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,              -- > created_ns
    revoked_ns INTEGER                        -- NULL while not revoked
) STRICT;
"""
    + DIR_LEASES_SCHEMA
    + QUOTAS_SCHEMA
    + SHARED_SCHEMA
)


def copies(xloc: bytes) -> int:
    """How many copies of a file a quota counts, from its stored XLocSet (msgpack of
    ``XLocSet.to_wire()``): the replicas its policy keeps (``factor``), not the ones it
    has this moment (healing and draining add some for a while); 1 for a blob that is none
    (fsck reports those)."""
    try:
        return max(1, int(msgpack.unpackb(xloc, raw=False).get("factor", 1)))
    except (ValueError, TypeError, AttributeError, msgpack.ExtraData):
        return 1


def add_functions(conn: sqlite3.Connection) -> None:
    """The functions of PostgreSQL that the MRC's queries use and SQLite lacks."""
    conn.create_function("greatest", -1, max, deterministic=True)


class StoreError(Exception):
    """The file is not an MRC store this code can open (another format, not SQLite)."""


class Store:
    """One SQLite database. Construct with ``Store.open(path)``; close with ``close()``.

    The API is synchronous: it is called from the trio thread and blocks only for the
    short time a transaction (and its fsync) takes. A lock serialises transactions, so
    calling from worker threads is safe too.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Callable[[], int]) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self._batch = False  # transactions are savepoints of one (see ``batch``)
        self._checkpointer: sqlite3.Connection | None = None  # used by ``checkpoint`` only
        self.path = path
        self.clock = clock
        self.commits = 0  # write transactions committed so far (see ``sync``)

    @property
    def name(self) -> str:
        return str(self.path)

    @classmethod
    def open(cls, path: Path, clock: Callable[[], int] = time.time_ns) -> Store:
        """Open (creating if the file is new) the store at ``path``."""
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open MRC store {path}: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"MRC store {path}: cannot use WAL journal (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")  # + sync(): group commit
            # SQLite's own page cache, kept across transactions (this is the only
            # writer): a namespace served from memory, not from the kernel's cache
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # the WAL file back to this size when a checkpoint lets it start over
            conn.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")
            conn.execute("PRAGMA foreign_keys = ON")
            add_functions(conn)
            _init_or_check(conn, path)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{path} is not an MRC store: {e}") from e
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, clock)

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._conn.close()

    def try_lead(self) -> bool:
        """One MRC serves an SQLite store: its own."""
        return True

    def after_copy(self) -> None:
        """SQLite's AUTOINCREMENT keeps past the largest id inserted."""

    def checkpoint_elsewhere(self) -> None:
        """From now on no COMMIT checkpoints the WAL (which fsyncs it and the database,
        stalling whoever commits); the caller runs :meth:`checkpoint` instead."""
        with self._lock:
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")

    def checkpoint(self) -> None:
        """Copy the WAL into the database file, PASSIVE: it neither waits for nor holds
        up transactions. Blocking, from one worker thread at a time, on a connection of
        its own.

        Under a steady stream of commits a passive checkpoint never catches up with the
        end of the WAL, so the WAL never starts over and its file grows without bound
        (1 GiB for 15,000 creates, measured). Once the file is past ``WAL_KEEP_BYTES``,
        a TRUNCATE checkpoint follows, on the store's own connection with its lock held:
        commits wait while it copies what the passive one left (a second's commits at
        most) and cuts the file."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return
        if size > WAL_KEEP_BYTES:
            with self._lock:  # no commit meanwhile: it would be a writer in the way
                # a reader elsewhere (an `xfs fsck` of the live store) holds it up only
                # this long; then it is tried again at the next checkpoint
                self._conn.execute(f"PRAGMA busy_timeout = {CUT_WAIT_MS}")
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, committed when the block ends, rolled back on error
        (inside ``batch``: a savepoint, committed with the batch, which counts it)."""
        with self._lock:
            batched = self._batch
            with self._begin("BEGIN IMMEDIATE") as cur:
                yield cur
            if not batched:
                self.commits += 1

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the transactions inside as savepoints of one transaction, committed when
        the block ends: each still succeeds or fails on its own (a failed one is rolled
        back to its savepoint), but the pages they share are written to the WAL once,
        not once each. Whoever calls it must let nothing else use the store until the
        block ends (no await inside): they would join the batch."""
        with self._lock:
            if self._batch:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._batch = True
            try:
                yield
            except BaseException:
                self._batch = False
                self._conn.execute("ROLLBACK")
                raise
            self._batch = False
            self._conn.execute("COMMIT")
            self.commits += 1

    def sync(self) -> None:
        """Make every transaction committed before this call durable against a crash of
        the machine: fsync the WAL file (SQLite syncs it before each checkpoint, and the
        database file after). Blocking; safe to call from a worker thread while
        transactions go on."""
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no WAL: everything is in the (synced) database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        """One read transaction: a consistent snapshot for a group of queries."""
        with self._begin("BEGIN DEFERRED") as cur:
            yield cur

    @contextmanager
    def _begin(self, begin: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            if self._batch:
                with self._savepoint() as cur:
                    yield cur
                return
            cur = self._conn.cursor()
            cur.execute(begin)
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Cursor]:
        """One transaction of a batch (the lock held)."""
        cur = self._conn.cursor()
        cur.execute("SAVEPOINT part")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK TO part")
            cur.execute("RELEASE part")
            raise
        else:
            cur.execute("RELEASE part")
        finally:
            cur.close()


def _init_or_check(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in an empty database, or check the format of an existing one."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        conn.executescript(
            "BEGIN IMMEDIATE;\n"
            + SCHEMA
            + f"INSERT INTO meta VALUES ('format_version', {FORMAT_VERSION});\n"
            "INSERT INTO meta VALUES ('next_cursor', 1);\n"
            "COMMIT;"
        )
        return
    if "meta" not in tables:
        raise StoreError(f"{path} is an SQLite database but not an MRC store (no meta table)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    if row is None:
        raise StoreError(f"{path}: MRC store without a format_version")
    if row[0] == 1:
        _upgrade_from_1(conn)
        row = (2,)
    if row[0] == 2:
        _upgrade_from_2(conn)
        row = (3,)
    if row[0] == 3:
        _upgrade_from_3(conn)
        row = (4,)
    if row[0] == 4:
        _upgrade_from_4(conn)
        row = (5,)
    if row[0] == 5:
        _upgrade_from_5(conn)
        row = (6,)
    if row[0] == 6:
        _upgrade_from_6(conn)
        return
    if row[0] != FORMAT_VERSION:
        raise StoreError(
            f"{path}: MRC store format version {row[0]}, this xfs reads version "
            f"{FORMAT_VERSION} only"
        )


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Format 1 lacked the tables of client leases, opens and locks: add them."""
    start = SCHEMA.index("CREATE TABLE clients")
    end = SCHEMA.index("-- The OSD registry")
    conn.executescript(
        "BEGIN IMMEDIATE;\n"
        + SCHEMA[start:end]
        + "UPDATE meta SET value = 2 WHERE key = 'format_version';\n"
        "COMMIT;"
    )


def _upgrade_from_2(conn: sqlite3.Connection) -> None:
    """Format 2 lacked the table of delegations: add it."""
    start = SCHEMA.index("-- A delegation")
    conn.executescript(
        "BEGIN IMMEDIATE;\n"
        + SCHEMA[start : SCHEMA.index(DIR_LEASES_SCHEMA)]
        + "UPDATE meta SET value = 3 WHERE key = 'format_version';\n"
        "COMMIT;"
    )


def _upgrade_from_3(conn: sqlite3.Connection) -> None:
    """Format 3 lacked append leases: add their column (no open holds one), unless the
    opens table was made by an upgrade from format 1 just now."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(opens)")}
    add = (
        ""
        if "append_lease" in columns
        else ("ALTER TABLE opens ADD COLUMN append_lease INTEGER NOT NULL DEFAULT 0;\n")
    )
    conn.executescript(
        "BEGIN IMMEDIATE;\n" + add + "UPDATE meta SET value = 4 WHERE key = 'format_version';\n"
        "COMMIT;"
    )


def _upgrade_from_4(conn: sqlite3.Connection) -> None:
    """Format 4 lacked directory leases and reserved inode ranges: add their tables."""
    conn.executescript(
        "BEGIN IMMEDIATE;\n"
        + DIR_LEASES_SCHEMA
        + "UPDATE meta SET value = 5 WHERE key = 'format_version';\n"
        "COMMIT;"
    )


def counted_usage(cur: Cursor) -> dict[tuple[str, str], tuple[int, int]]:
    """The usage of every owner of every volume, counted from the inodes: (volume,
    owner) -> (files, bytes) (format 6; fsck compares it with the usage table). Counted
    here, not in SQL: the copies a file counts for are inside its msgpack XLocSet."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for vid, owner, mode, size, xloc in cur.execute(
        "SELECT volume, owner, mode, size, xloc FROM inodes"
    ).fetchall():
        files, nbytes = out.get((vid, owner), (0, 0))
        if stat.S_ISREG(mode):
            nbytes += size * (1 if xloc is None else copies(xloc))
        out[(vid, owner)] = (files + 1, nbytes)
    return out


def insert_usage(cur: Cursor, usage: dict[tuple[str, str], tuple[int, int]]) -> None:
    cur.executemany(
        "INSERT INTO usage (volume, principal, files, bytes) VALUES (?, ?, ?, ?)",
        [(vid, owner, files, nbytes) for (vid, owner), (files, nbytes) in usage.items()],
    )


def _upgrade_from_5(conn: sqlite3.Connection) -> None:
    """Format 5 lacked usage and quotas: add their tables, usage counted from the inodes."""
    conn.executescript("BEGIN IMMEDIATE;\n" + QUOTAS_SCHEMA)
    try:
        cur = conn.cursor()
        insert_usage(cur, counted_usage(cur))
        conn.execute("UPDATE meta SET value = 6 WHERE key = 'format_version'")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _upgrade_from_6(conn: sqlite3.Connection) -> None:
    """Format 6 kept the XCap keys and the draining OSDs in the MRC's data directory:
    add their tables (the MRC moves them in when it starts: xfs.mrc.shared)."""
    conn.executescript(
        "BEGIN IMMEDIATE;\n"
        + SHARED_SCHEMA
        + "UPDATE meta SET value = 7 WHERE key = 'format_version';\n"
        "COMMIT;"
    )
