"""Volume operations of the namespace: create, delete, list, counts; pending deletions."""

from __future__ import annotations

import errno
import re
import stat
import uuid

from xfs.mrc import inodes as rows
from xfs.mrc import quotas
from xfs.mrc.sql import Cursor, MetaStore
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO, Identity, StripingPolicy, VolumeInfo, XLocSet

VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_STRIPE = 4096
MAX_STRIPE = 64 << 20
MAX_WIDTH = 1024

# files: every inode of a volume (the root included), as statfs counts them;
# bytes used: the sizes of its regular files.
_IFMT = 0o170000
_COUNTS = (
    f"SELECT volume, count(*), coalesce(sum(CASE WHEN mode & {_IFMT} = {stat.S_IFREG} "
    "THEN size ELSE 0 END), 0) FROM inodes"
)


def check_striping(striping: StripingPolicy) -> None:
    size, width = striping.stripe_size, striping.width
    if not (MIN_STRIPE <= size <= MAX_STRIPE and size % MIN_STRIPE == 0):
        raise XfsError(
            errno.EINVAL,
            f"stripe size {size}: a multiple of {MIN_STRIPE} up to {MAX_STRIPE} bytes",
        )
    if not 1 <= width <= MAX_WIDTH:
        raise XfsError(errno.EINVAL, f"stripe width {width}: 1 to {MAX_WIDTH}")


class VolumeOps:
    """Mixed into ``Namespace``. Who may create or delete volumes is the RPC layer's check."""

    _store: MetaStore

    def create_volume(
        self,
        caller: Identity,
        name: str,
        owner: str | None = None,
        group: str | None = None,
        mode: int = 0o755,
        striping: StripingPolicy | None = None,
    ) -> VolumeInfo:
        """Create volume ``name`` with its root directory (ino 1) of permission ``mode``.

        ``owner`` defaults to the caller, ``group`` to the caller's first group (or the
        owner's name if the caller has none); empty strings mean the default too.
        """
        if not VOLUME_NAME.fullmatch(name):
            raise XfsError(
                errno.EINVAL, f"invalid volume name {name!r}: [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}"
            )
        striping = striping or StripingPolicy()
        check_striping(striping)
        owner = owner or caller.principal
        group = group or (caller.groups[0] if caller.groups else owner)
        now = self._store.clock()
        vol = rows.Vol(str(uuid.uuid4()), name, owner, group, mode & 0o7777, striping)
        with self._store.transaction() as cur:
            if cur.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                raise XfsError(errno.EEXIST, f"volume {name!r} exists")
            cur.execute(
                "INSERT INTO volumes (id, name, owner, grp, mode, stripe_size, width, "
                "next_ino, created_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    vol.id,
                    name,
                    owner,
                    group,
                    vol.mode,
                    striping.stripe_size,
                    striping.width,
                    ROOT_INO + 1,
                    now,
                ),
            )
            rows.new_inode(
                cur,
                vol,
                ino=ROOT_INO,
                mode=stat.S_IFDIR | vol.mode,
                nlink=2,
                owner=owner,
                group=group,
                now=now,
            )
        return vol.info(files=1)

    def delete_volume(self, caller: Identity, name: str) -> None:
        """Remove volume ``name`` and everything in it; its files' objects are queued
        for deletion on the OSDs."""
        with self._store.transaction() as cur:
            vol = rows.volume(cur, name)
            cur.execute(
                "INSERT INTO pending_deletions (volume, ino, xloc) SELECT volume, ino, xloc "
                "FROM inodes WHERE volume = ? AND xloc IS NOT NULL ORDER BY ino",
                (vol.id,),
            )
            for table in (
                "dentries",
                "xattrs",
                "locks",
                "opens",
                "inodes",
                "delegations",
                "dir_leases",
                "ino_ranges",
                "usage",
                "quotas",
            ):
                cur.execute(f"DELETE FROM {table} WHERE volume = ?", (vol.id,))
            cur.execute("DELETE FROM volumes WHERE id = ?", (vol.id,))
            rows.forget_volume(cur, vol.name)

    def get_volume(self, name: str) -> VolumeInfo:
        with self._store.read() as cur:
            vol = rows.volume(cur, name)
            files, used = _counts(cur, vol.id)
        return vol.info(files, used)

    def list_volumes(self) -> list[VolumeInfo]:
        """Every volume, by name, with its file count and bytes used."""
        with self._store.read() as cur:
            counts = {r[0]: (r[1], r[2]) for r in cur.execute(_COUNTS + " GROUP BY volume")}
            vols = [
                rows.row_to_volume(r)
                for r in cur.execute(f"SELECT {rows.VOLUME_COLS} FROM volumes ORDER BY name")
            ]
        return [v.info(*counts.get(v.id, (0, 0))) for v in vols]

    def statfs_counts(self, vol: str) -> tuple[int, int]:
        """(files, bytes used) of volume ``vol``."""
        with self._store.read() as cur:
            return _counts(cur, rows.volume(cur, vol).id)

    # -------------------------------------------------------------- quotas
    def set_quota(self, vol: str, principal: str, limit: quotas.Limit) -> None:
        """Set ``principal``'s quota on ``vol`` (``quotas.VOLUME``: the volume's); an
        empty ``limit`` removes it."""
        with self._store.transaction() as cur:
            quotas.set_quota(cur, rows.volume(cur, vol).id, principal, limit)

    def quotas_of(self, vol: str | None = None) -> list[tuple[str, str, quotas.Limit, quotas.Use]]:
        """Every quota of ``vol`` (None: of every volume) with what it limits holds now:
        (volume name, principal, limit, usage)."""
        with self._store.read() as cur:
            if vol is None:
                vols = cur.execute("SELECT id, name FROM volumes ORDER BY name").fetchall()
            else:
                v = rows.volume(cur, vol)
                vols = [(v.id, v.name)]
            return [
                (name, p, limit, used)
                for vid, name in vols
                for p, (limit, used) in quotas.all_quotas(cur, vid).items()
            ]

    def quota_view(
        self, vid: str, principal: str
    ) -> tuple[dict[str, quotas.Limit], dict[str, quotas.Use]]:
        """The quotas that apply to ``principal``'s inodes of volume ``vid`` (its own and
        the volume's) and the usage each of them limits."""
        with self._store.read() as cur:
            found = quotas.limits(cur, vid, principal)
            return found, {p: quotas.usage(cur, vid, p) for p in found}

    def sizes(self, vid: str, inos: list[int]) -> dict[int, int]:
        """The sizes of files ``inos`` of volume ``vid`` (the ones that exist)."""
        with self._store.read() as cur:
            marks = ", ".join("?" * len(inos))
            return dict(
                cur.execute(
                    f"SELECT ino, size FROM inodes WHERE volume = ? AND ino IN ({marks})",
                    (vid, *inos),
                ).fetchall()
            )

    # -------------------------------------------------------------- pending deletions
    def pending_count(self) -> int:
        with self._store.read() as cur:
            (n,) = cur.execute("SELECT COUNT(*) FROM pending_deletions").fetchone()
        return int(n)

    def pending_deletions(self, limit: int) -> list[tuple[int, str, int, XLocSet]]:
        """The oldest ``limit`` files whose objects wait to be deleted:
        (id, volume id, ino, xloc)."""
        with self._store.read() as cur:
            found = cur.execute(
                "SELECT id, volume, ino, xloc FROM pending_deletions ORDER BY id LIMIT ?",
                (max(limit, 0),),
            ).fetchall()
        return [(i, v, ino, rows.decode_xloc(x)) for i, v, ino, x in found]

    def deletions_done(self, ids: list[int]) -> None:
        """The objects of the pending deletions ``ids`` are gone (idempotent)."""
        if not ids:
            return
        with self._store.transaction() as cur:
            cur.executemany("DELETE FROM pending_deletions WHERE id = ?", [(i,) for i in ids])


def _counts(cur: Cursor, vid: str) -> tuple[int, int]:
    row = cur.execute(_COUNTS + " WHERE volume = ? GROUP BY volume", (vid,)).fetchone()
    return (int(row[1]), int(row[2])) if row else (0, 0)
