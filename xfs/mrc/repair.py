"""Offline repair of an MRC's store (``xfs fsck --repair``): what fsck finds and a rule
can set right without guessing, in one transaction, the MRC stopped.

Repaired, in this order:

1. entries that name a missing inode, or sit in a directory that does not exist, are
   removed;
2. open registrations of gone inodes and locks that are not valid are removed;
3. a file's nlink is set to the number of entries naming it, a directory's to 2 + its
   subdirectories;
4. inodes with no name and open nowhere are freed (their objects queued for deletion,
   as an unlink would);
5. a volume's ``next_ino`` is raised above its largest inode number.

Left alone, because a rule would have to guess: inodes unreachable from the root
through names (a directory cycle or a lost subtree), directories named more than once,
bad XLocSets, ACLs, policies, delegations. fsck still reports those after the repair.
"""

from __future__ import annotations

import sqlite3
import stat

from xfs.mrc import inodes as rows
from xfs.mrc.fsck import Fsck
from xfs.mrc.sql import Cursor
from xfs.mrc.store import counted_usage, insert_usage

_DIR = f"mode & {stat.S_IFMT(0o170000)} = {stat.S_IFDIR}"  # (as fsck writes it)


def repair(conn: sqlite3.Connection) -> list[str]:
    """Repair the store of ``conn`` in one transaction; what was done, a line each."""
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        done = repair_in(cur)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return done


def repair_in(cur: Cursor) -> list[str]:
    """Repair inside the caller's transaction; what was done, a line each."""
    done: list[str] = []
    _entries(cur, done)
    _registrations(cur, done)
    _nlinks(cur, done)
    _orphans(cur, done)
    _next_ino(cur, done)
    _usage(cur, done)
    return done


def _entries(cur: Cursor, done: list[str]) -> None:
    gone = cur.execute(
        "SELECT d.volume, d.parent, d.name FROM dentries d WHERE NOT EXISTS "
        "(SELECT 1 FROM inodes i WHERE i.volume = d.volume AND i.ino = d.ino) OR NOT EXISTS "
        f"(SELECT 1 FROM inodes p WHERE p.volume = d.volume AND p.ino = d.parent AND p.{_DIR})"
    ).fetchall()
    for vid, parent, name in gone:
        cur.execute(
            "DELETE FROM dentries WHERE volume = ? AND parent = ? AND name = ?",
            (vid, parent, name),
        )
        done.append(f"removed entry {vid}:{parent}/{name!r}")


def _registrations(cur: Cursor, done: list[str]) -> None:
    n = cur.execute(
        "DELETE FROM opens WHERE NOT EXISTS "
        "(SELECT 1 FROM inodes i WHERE i.volume = opens.volume AND i.ino = opens.ino)"
    ).rowcount
    if n:
        done.append(f"removed {n} open registration(s) of gone inodes")
    n = cur.execute(
        "DELETE FROM locks WHERE NOT EXISTS (SELECT 1 FROM opens o WHERE o.volume = "
        "locks.volume AND o.ino = locks.ino AND o.client = locks.client) OR first < 0 "
        "OR last < first OR family NOT IN ('posix', 'flock') OR mode NOT IN ('read', 'write')"
    ).rowcount
    if n:
        done.append(f"removed {n} lock(s) that were not valid")


def _nlinks(cur: Cursor, done: list[str]) -> None:
    files = cur.execute(
        "SELECT i.volume, i.ino, count(d.ino) FROM inodes i LEFT JOIN dentries d "
        f"ON d.volume = i.volume AND d.ino = i.ino WHERE NOT i.{_DIR} "
        "GROUP BY i.volume, i.ino HAVING i.nlink != count(d.ino)"
    ).fetchall()
    dirs = cur.execute(
        "SELECT i.volume, i.ino, 2 + count(c.ino) FROM inodes i "
        "LEFT JOIN dentries d ON d.volume = i.volume AND d.parent = i.ino "
        f"LEFT JOIN inodes c ON c.volume = d.volume AND c.ino = d.ino AND c.{_DIR} "
        f"WHERE i.{_DIR} GROUP BY i.volume, i.ino HAVING i.nlink != 2 + count(c.ino)"
    ).fetchall()
    for vid, ino, n in files + dirs:
        cur.execute("UPDATE inodes SET nlink = ? WHERE volume = ? AND ino = ?", (n, vid, ino))
        done.append(f"set nlink of {vid}:{ino} to {n}")


def _orphans(cur: Cursor, done: list[str]) -> None:
    orphans = cur.execute(
        "SELECT i.volume, i.ino, i.xloc FROM inodes i WHERE i.nlink = 0 AND NOT EXISTS "
        "(SELECT 1 FROM opens o WHERE o.volume = i.volume AND o.ino = i.ino)"
    ).fetchall()
    for vid, ino, xloc in orphans:
        rows.drop_inode_of(cur, vid, ino, xloc)
        done.append(f"freed {vid}:{ino}, which had no name and was open nowhere")


def _next_ino(cur: Cursor, done: list[str]) -> None:
    for vid, name, top in cur.execute(
        "SELECT v.id, v.name, max(i.ino) FROM volumes v JOIN inodes i ON i.volume = v.id "
        "GROUP BY v.id HAVING max(i.ino) >= v.next_ino"
    ).fetchall():
        cur.execute("UPDATE volumes SET next_ino = ? WHERE id = ?", (top + 1, vid))
        done.append(f"raised next_ino of volume {name!r} to {top + 1}")


def _usage(cur: Cursor, done: list[str]) -> None:
    checker = Fsck(cur)
    checker.check_usage()
    problems = checker.problems
    if problems:
        cur.execute("DELETE FROM usage")
        insert_usage(cur, counted_usage(cur))
        done.append(f"counted the usage of every owner again ({len(problems)} were wrong)")


def check(conn: sqlite3.Connection) -> list[str]:
    """fsck over one read transaction of ``conn``."""
    cur = conn.cursor()
    cur.execute("BEGIN")
    try:
        return Fsck(cur).run()
    finally:
        cur.execute("ROLLBACK")
