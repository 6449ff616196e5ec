"""Checks of the MRC store's invariants, one method per invariant (S3QL style).

``check(store)`` returns the problems found, one line each; an empty list means the store
is healthy. Read only: it repairs nothing. The tests run it after every namespace test.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Callable

from xfs.mrc import acl as acls
from xfs.mrc import inodes as rows
from xfs.mrc import policies
from xfs.mrc.sql import Cursor, MetaStore
from xfs.mrc.store import FORMAT_VERSION, counted_usage
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO

_IFMT = 0o170000
_DIR = f"mode & {_IFMT} = {stat.S_IFDIR}"


class Fsck:
    """Runs every ``check_*`` method over one read transaction."""

    def __init__(self, cur: Cursor) -> None:
        self.cur = cur
        self.problems: list[str] = []

    def _report(self, query: str, fmt: Callable[..., str], args: tuple[object, ...] = ()) -> None:
        for row in self.cur.execute(query, args).fetchall():
            self.problems.append(fmt(*row))

    def run(self) -> list[str]:
        for name in sorted(dir(self)):
            if name.startswith("check_"):
                getattr(self, name)()
        return self.problems

    def check_format_version(self) -> None:
        row = self.cur.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        if row is None or row[0] != FORMAT_VERSION:
            self.problems.append(f"format_version is {row and row[0]}, not {FORMAT_VERSION}")

    def check_roots(self) -> None:
        """Every volume has its root directory, ino 1."""
        self._report(
            f"SELECT v.name FROM volumes v LEFT JOIN inodes i ON i.volume = v.id "
            f"AND i.ino = {ROOT_INO} AND i.{_DIR} WHERE i.ino IS NULL",
            lambda name: f"volume {name!r}: no root directory (ino {ROOT_INO})",
        )

    def check_inode_volumes(self) -> None:
        self._report(
            "SELECT i.volume, i.ino FROM inodes i LEFT JOIN volumes v ON v.id = i.volume "
            "WHERE v.id IS NULL",
            lambda vid, ino: f"inode {vid}:{ino} belongs to no volume",
        )

    def check_dentry_targets(self) -> None:
        """Every entry names an inode of its own volume."""
        self._report(
            "SELECT d.volume, d.parent, d.name, d.ino FROM dentries d LEFT JOIN inodes i "
            "ON i.volume = d.volume AND i.ino = d.ino WHERE i.ino IS NULL",
            lambda vid, p, name, ino: f"entry {vid}:{p}/{name!r} names missing inode {ino}",
        )

    def check_dentry_parents(self) -> None:
        """Every entry is in a directory of its own volume."""
        self._report(
            f"SELECT d.volume, d.parent, d.name FROM dentries d LEFT JOIN inodes i "
            f"ON i.volume = d.volume AND i.ino = d.parent AND i.{_DIR} WHERE i.ino IS NULL",
            lambda vid, p, name: f"entry {vid}:{p}/{name!r}: parent is not a directory",
        )

    def check_file_nlink(self) -> None:
        """A non-directory's nlink is the number of entries naming it."""
        self._report(
            f"SELECT i.volume, i.ino, i.nlink, count(d.ino) FROM inodes i LEFT JOIN dentries d "
            f"ON d.volume = i.volume AND d.ino = i.ino WHERE NOT i.{_DIR} "
            "GROUP BY i.volume, i.ino HAVING i.nlink != count(d.ino)",
            lambda vid, ino, nlink, n: f"inode {vid}:{ino}: nlink {nlink}, {n} entries",
        )

    def check_dir_nlink(self) -> None:
        """A directory's nlink is 2 + its subdirectories."""
        self._report(
            f"SELECT i.volume, i.ino, i.nlink, 2 + count(c.ino) FROM inodes i "
            "LEFT JOIN dentries d ON d.volume = i.volume AND d.parent = i.ino "
            f"LEFT JOIN inodes c ON c.volume = d.volume AND c.ino = d.ino AND c.{_DIR} "
            f"WHERE i.{_DIR} GROUP BY i.volume, i.ino HAVING i.nlink != 2 + count(c.ino)",
            lambda vid, ino, nlink, n: f"directory {vid}:{ino}: nlink {nlink}, expected {n}",
        )

    def check_dir_entries(self) -> None:
        """A directory has exactly one entry naming it; the root has none."""
        self._report(
            f"SELECT i.volume, i.ino, count(d.ino) FROM inodes i LEFT JOIN dentries d "
            f"ON d.volume = i.volume AND d.ino = i.ino WHERE i.{_DIR} "
            f"GROUP BY i.volume, i.ino HAVING count(d.ino) "
            f"!= CASE WHEN i.ino = {ROOT_INO} THEN 0 ELSE 1 END",
            lambda vid, ino, n: f"directory {vid}:{ino} has {n} entries naming it",
        )

    def check_reachable(self) -> None:
        """Every inode can be reached from its volume's root."""
        self._report(
            f"""
            WITH RECURSIVE reach(volume, ino) AS (
                SELECT id, CAST({ROOT_INO} AS BIGINT) FROM volumes
                UNION
                SELECT d.volume, d.ino FROM dentries d
                JOIN reach r ON d.volume = r.volume AND d.parent = r.ino
            )
            SELECT i.volume, i.ino FROM inodes i LEFT JOIN reach r
            ON r.volume = i.volume AND r.ino = i.ino WHERE r.ino IS NULL AND i.nlink > 0
            """,
            lambda vid, ino: f"inode {vid}:{ino} is not reachable from the root",
        )

    def check_orphans(self) -> None:
        """An inode without names (nlink 0) is kept only while some client has it open."""
        self._report(
            "SELECT i.volume, i.ino FROM inodes i WHERE i.nlink = 0 AND NOT EXISTS "
            "(SELECT 1 FROM opens o WHERE o.volume = i.volume AND o.ino = i.ino)",
            lambda vid, ino: f"inode {vid}:{ino} has no name and is not open anywhere",
        )

    def check_opens(self) -> None:
        """Every open file is an inode that exists."""
        self._report(
            "SELECT o.volume, o.ino, o.client FROM opens o WHERE NOT EXISTS "
            "(SELECT 1 FROM inodes i WHERE i.volume = o.volume AND i.ino = o.ino)",
            lambda vid, ino, client: f"client {client} has {vid}:{ino} open, which is gone",
        )

    def check_append_leases(self) -> None:
        """An append lease is held by a writer, and by one client at most. (Another
        client may be registered as a writer beside it: its call waits for the recall.)"""
        self._report(
            "SELECT o.volume, o.ino, o.client FROM opens o WHERE o.append_lease = 1 AND "
            "(o.writable = 0 OR EXISTS (SELECT 1 FROM opens p WHERE p.volume = o.volume "
            "AND p.ino = o.ino AND p.client != o.client AND p.append_lease = 1))",
            lambda vid, ino, client: (
                f"append lease of {vid}:{ino} held by {client}, a reader, or beside another holder"
            ),
        )

    def check_dir_leases(self) -> None:
        """A directory lease is on a directory that exists."""
        self._report(
            f"SELECT l.volume, l.ino, l.client FROM dir_leases l WHERE NOT EXISTS "
            f"(SELECT 1 FROM inodes i WHERE i.volume = l.volume AND i.ino = l.ino AND i.{_DIR})",
            lambda vid, ino, client: f"lease of {vid}:{ino}, no directory, held by {client}",
        )

    def check_ino_ranges(self) -> None:
        """Reserved inode numbers are below next_ino, the unused ones used by no inode,
        and no number is reserved twice."""
        self._report(
            "SELECT r.volume, r.first, r.last FROM ino_ranges r LEFT JOIN volumes v "
            "ON v.id = r.volume WHERE v.id IS NULL OR r.last >= v.next_ino "
            "OR r.first < r.start OR r.first > r.last + 1 "
            "OR EXISTS (SELECT 1 FROM inodes i WHERE i.volume = r.volume "
            "AND i.ino BETWEEN r.first AND r.last) "
            "OR EXISTS (SELECT 1 FROM ino_ranges q WHERE q.volume = r.volume "
            "AND q.start != r.start AND q.start <= r.last AND r.start <= q.last)",
            lambda vid, first, last: f"reserved inode numbers {vid}:{first}..{last} are not valid",
        )

    def check_locks(self) -> None:
        """Locks are on inodes that their client has open, over sane ranges."""
        self._report(
            "SELECT l.volume, l.ino, l.client FROM locks l WHERE NOT EXISTS "
            "(SELECT 1 FROM opens o WHERE o.volume = l.volume AND o.ino = l.ino "
            "AND o.client = l.client) OR l.first < 0 OR l.last < l.first "
            "OR l.family NOT IN ('posix', 'flock') OR l.mode NOT IN ('read', 'write')",
            lambda vid, ino, client: f"lock on {vid}:{ino} of client {client} is not valid",
        )

    def check_next_ino(self) -> None:
        """Inode numbers are below the volume's next_ino (so never handed out again)."""
        self._report(
            "SELECT v.name, v.next_ino, max(i.ino) FROM volumes v JOIN inodes i "
            "ON i.volume = v.id GROUP BY v.id HAVING max(i.ino) >= v.next_ino",
            lambda name, nxt, ino: f"volume {name!r}: inode {ino} >= next_ino {nxt}",
        )

    def check_cursors(self) -> None:
        """Cursors are unique, positive and below meta.next_cursor."""
        self._report(
            "SELECT cursor, count(*) FROM dentries GROUP BY cursor HAVING count(*) > 1",
            lambda c, n: f"cursor {c} is used by {n} entries",
        )
        self._report(
            "SELECT d.cursor, m.value FROM dentries d, meta m WHERE m.key = 'next_cursor' "
            "AND (d.cursor >= m.value OR d.cursor <= 0)",
            lambda c, nxt: f"cursor {c} out of range (next_cursor {nxt})",
        )

    def check_xlocs(self) -> None:
        """Layouts decode as XLocSets, and only regular files have one."""
        found = self.cur.execute(
            "SELECT volume, ino, mode, xloc, 'inode' FROM inodes WHERE xloc IS NOT NULL "
            f"UNION ALL SELECT volume, ino, {stat.S_IFREG}, xloc, 'pending deletion' "
            "FROM pending_deletions"
        ).fetchall()
        for vid, ino, mode, blob, where in found:
            if not stat.S_ISREG(mode):
                self.problems.append(f"inode {vid}:{ino}: xloc on a non-regular file")
            try:
                rows.decode_xloc(blob)
            except Exception as e:
                self.problems.append(f"{where} {vid}:{ino}: bad xloc ({e})")

    def check_symlinks(self) -> None:
        """Symlinks, and only symlinks, have a target; their size is its length."""
        self._report(
            f"SELECT volume, ino FROM inodes WHERE (mode & {_IFMT} = {stat.S_IFLNK}) "
            "!= (target IS NOT NULL) OR (target IS NOT NULL AND size != length(target))",
            lambda vid, ino: f"inode {vid}:{ino}: symlink without target or target elsewhere",
        )

    def check_delegations(self) -> None:
        """Delegations are of a volume that exists, end after they begin, keep a 32-byte
        secret hash and the grantor's groups as a JSON list."""
        for id, groups, bad in self.cur.execute(
            "SELECT d.id, d.groups, v.id IS NULL OR d.expires_ns <= d.created_ns "
            "OR (d.revoked_ns IS NOT NULL AND d.revoked_ns < d.created_ns) "
            "OR length(d.secret) != 32 OR d.root < 1 "
            "FROM delegations d LEFT JOIN volumes v ON v.id = d.volume"
        ).fetchall():
            if bad or not _json_list(groups):
                self.problems.append(f"delegation {id} is not valid")

    def check_acls(self) -> None:
        """Stored ACLs decode as valid ACLs in canonical form; default ACLs are on
        directories only and nothing is on a symlink; an access ACL says more than the
        mode, and its owner, mask (or owning group) and other entries are the mode's."""
        found = self.cur.execute(
            "SELECT x.volume, x.ino, x.name, x.value, i.mode FROM xattrs x JOIN inodes i "
            "ON i.volume = x.volume AND i.ino = x.ino WHERE x.name IN (?, ?)",
            (acls.ACCESS, acls.DEFAULT),
        ).fetchall()
        for vid, ino, name, blob, mode in found:
            where = f"inode {vid}:{ino} {bytes(name).decode()}"
            try:
                acl = acls.decode(bytes(blob))
            except XfsError as e:
                self.problems.append(f"{where}: {e.message}")
                continue
            if acls.encode(acl) != bytes(blob):
                self.problems.append(f"{where}: not in canonical form")
            if stat.S_ISLNK(mode) or (bytes(name) == acls.DEFAULT and not stat.S_ISDIR(mode)):
                self.problems.append(f"{where}: on a {oct(stat.S_IFMT(mode))} inode")
            if bytes(name) == acls.ACCESS:
                if acl.is_minimal():
                    self.problems.append(f"{where}: says no more than the mode (not kept)")
                if acls.mode_bits(acl) != mode & 0o777:
                    self.problems.append(
                        f"{where}: gives {acls.mode_bits(acl):03o}, the mode {mode & 0o777:03o}"
                    )

    def check_policies(self) -> None:
        """Stored replication policies (``xfs.policy``) are valid, on directories only."""
        found = self.cur.execute(
            "SELECT x.volume, x.ino, i.mode FROM xattrs x JOIN inodes i "
            "ON i.volume = x.volume AND i.ino = x.ino WHERE x.name = ?",
            (policies.POLICY,),
        ).fetchall()
        for vid, ino, mode in found:
            where = f"inode {vid}:{ino} policy"
            if not stat.S_ISDIR(mode):
                self.problems.append(f"{where}: on a {oct(stat.S_IFMT(mode))} inode")
            try:
                policy = policies.read(self.cur, vid, ino)
                assert policy is not None
                if policies.check(policy) != policy:
                    self.problems.append(f"{where}: ronly does not seal on close")
            except XfsError as e:
                self.problems.append(f"{where}: {e.message}")

    def check_usage(self) -> None:
        """Each owner's usage of a volume is what its inodes hold (files, and bytes: size
        times replicas; docs/design/quotas.md)."""
        kept = {
            (v, p): (f, b)
            for v, p, f, b in self.cur.execute("SELECT volume, principal, files, bytes FROM usage")
            if (f, b) != (0, 0)
        }
        counted = counted_usage(self.cur)
        for key in sorted(kept.keys() | counted.keys()):
            if kept.get(key, (0, 0)) != counted.get(key, (0, 0)):
                files, nbytes = kept.get(key, (0, 0))
                really = counted.get(key, (0, 0))
                self.problems.append(
                    f"usage of {key[1]!r} in {key[0]}: {files} files, {nbytes} bytes kept, "
                    f"{really[0]} files, {really[1]} bytes held"
                )

    def check_quotas(self) -> None:
        self._report(
            "SELECT volume, principal, files, bytes FROM quotas "
            "WHERE files < 0 OR bytes < 0 OR (files IS NULL AND bytes IS NULL)",
            lambda v, p, f, b: f"quota of {p!r} on {v}: {f} files, {b} bytes is no limit",
        )

    def check_xcap_keys(self) -> None:
        """The XCap keys are raw 32-byte Ed25519 keys, one of them signing (if any)."""
        self._report(
            "SELECT id FROM xcap_keys WHERE length(private) != 32 OR signing NOT IN (0, 1)",
            lambda kid: f"XCap key {kid} is not a valid key",
        )
        keys, signing = self.cur.execute(
            "SELECT count(*), coalesce(sum(signing), 0) FROM xcap_keys"
        ).fetchone()
        if keys and signing != 1:
            self.problems.append(f"{signing} XCap keys sign, not one")

    def check_foreign_keys(self) -> None:
        """SQLite checks foreign keys when asked (PostgreSQL at every commit)."""
        if not isinstance(self.cur, sqlite3.Cursor):
            return
        self._report(
            "PRAGMA foreign_key_check",
            lambda table, rowid, parent, fk: f"{table} row {rowid}: dangling reference to {parent}",
        )


def _json_list(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False


def check(store: MetaStore) -> list[str]:
    """Every problem of ``store``, one line each (empty: healthy)."""
    with store.read() as cur:
        return Fsck(cur).run()
