"""Quotas (docs/design/quotas.md): what each owner's inodes of a volume hold, the limits
set on a volume and on its principals, and the vouchers that let a writer grow a file
without asking the MRC for every byte.

- **Usage** (the ``usage`` table) changes in the transaction that changes an inode
  (``xfs.mrc.inodes`` calls :func:`use`): ``files`` counts every inode of an owner,
  ``bytes`` the size of each regular file times the replicas its policy keeps (its
  factor), so replicas count; the extra ones healing or draining add for a while do not.
- **Limits** (the ``quotas`` table): for the whole volume (principal ``''``) and per
  principal, on files and on bytes; the owner of an inode is who it is charged to.
- **Files** are checked when an inode is made: EDQUOT if the owner's or the volume's
  limit would be passed. A client held by a files quota gets no directory leases (creates
  made under one are acknowledged before the MRC sees them), and setting a files quota
  recalls the leases it would hold.
- **Bytes** are checked through **vouchers**: an XCap for writing carries ``max_size``,
  the size its holder may write up to; OSDs refuse bytes past it with EDQUOT. A voucher
  is the file's size plus what the limits leave (at most ``VOUCHER`` bytes more), and it
  reserves (max_size - size) x replicas bytes until it expires or its holder closes the
  file; a holder that needs more reports its size and asks for a new XCap.

The pure rules are :func:`charge`, :func:`room` and :func:`voucher`; the rest reads and
writes rows inside the caller's transaction.
"""

from __future__ import annotations

import errno
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from xfs.mrc.sql import Cursor
from xfs.mrc.store import copies
from xfs.proto.errors import XfsError

VOLUME = ""  # the principal of a quota on the whole volume
VOUCHER = 64 << 20  # bytes a voucher lets a file grow at most past its size


@dataclass(frozen=True)
class Limit:
    """A quota: None is no limit."""

    files: int | None = None
    bytes: int | None = None

    @property
    def empty(self) -> bool:
        return self.files is None and self.bytes is None


@dataclass(frozen=True)
class Use:
    files: int = 0
    bytes: int = 0


# ------------------------------------------------------------------ the pure rules
def charge(mode: int, size: int, xloc: bytes | None) -> int:
    """The bytes an inode counts for: a regular file's size times the replicas its
    policy keeps (its factor)."""
    if not stat.S_ISREG(mode):
        return 0
    return size * (1 if xloc is None else copies(xloc))


def room(limit: int | None, used: int, reserved: int = 0) -> int | None:
    """What a limit leaves (never below 0); None without a limit."""
    return None if limit is None else max(0, limit - used - reserved)


def tightest(limits: dict[str, Limit], used: dict[str, Use], what: str) -> tuple[int, int] | None:
    """(limit, what is left) of the quota that leaves the least ``what`` ("files" or
    "bytes"), or None if none limits it."""
    found = [
        (limit, max(0, limit - getattr(used[p], what)))
        for p, quota in limits.items()
        if (limit := getattr(quota, what)) is not None
    ]
    return min(found, key=lambda pair: pair[1]) if found else None


def voucher(size: int, replicas: int, rooms: Iterable[int | None], want: int = 0) -> int:
    """``max_size`` for a writer of a file of ``size`` with ``replicas`` replicas, under
    limits that leave ``rooms`` bytes: ``VOUCHER`` bytes past the size, or up to ``want``
    if that is further, as far as the rooms allow; -1 (no limit) when none applies."""
    left = [r for r in rooms if r is not None]
    if not left:
        return -1
    grow = max(VOUCHER, want - size)
    return size + min(grow, min(left) // max(1, replicas))


def _exceeded(what: str, principal: str, limit: int, unit: str) -> XfsError:
    whose = "the volume's" if principal == VOLUME else f"{principal}'s"
    return XfsError(errno.EDQUOT, f"{what}: {whose} quota of {limit} {unit} is used up")


# ------------------------------------------------------------------ rows
def use(cur: Cursor, vid: str, owner: str, files: int, nbytes: int) -> None:
    """``owner``'s usage of volume ``vid`` moves by ``files`` and ``nbytes``."""
    if files or nbytes:
        cur.execute(
            "INSERT INTO usage (volume, principal, files, bytes) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (volume, principal) DO UPDATE "
            "SET files = usage.files + excluded.files, bytes = usage.bytes + excluded.bytes",
            (vid, owner, files, nbytes),
        )


def usage(cur: Cursor, vid: str, principal: str) -> Use:
    """What ``principal``'s inodes hold in volume ``vid`` (``VOLUME``: all of them)."""
    if principal == VOLUME:
        sql, args = "SELECT sum(files), sum(bytes) FROM usage WHERE volume = ?", (vid,)
    else:
        sql = "SELECT files, bytes FROM usage WHERE volume = ? AND principal = ?"
        args = (vid, principal)  # type: ignore[assignment]
    row = cur.execute(sql, args).fetchone()
    return Use(int(row[0] or 0), int(row[1] or 0)) if row else Use()


def limits(cur: Cursor, vid: str, owner: str) -> dict[str, Limit]:
    """The quotas that apply to ``owner``'s inodes of volume ``vid``, by principal."""
    return {
        p: Limit(f, b)
        for p, f, b in cur.execute(
            "SELECT principal, files, bytes FROM quotas WHERE volume = ? AND principal IN (?, ?)",
            (vid, VOLUME, owner),
        )
    }


def all_quotas(cur: Cursor, vid: str) -> dict[str, tuple[Limit, Use]]:
    """Every quota of volume ``vid`` with its principal's (or the volume's) usage."""
    found = cur.execute(
        "SELECT principal, files, bytes FROM quotas WHERE volume = ? ORDER BY principal",
        (vid,),
    ).fetchall()
    return {p: (Limit(f, b), usage(cur, vid, p)) for p, f, b in found}


def set_quota(cur: Cursor, vid: str, principal: str, limit: Limit) -> None:
    """Set (or, with an empty ``limit``, remove) the quota of ``principal`` on ``vid``."""
    for name, value in (("files", limit.files), ("bytes", limit.bytes)):
        if value is not None and value < 0:
            raise XfsError(errno.EINVAL, f"a quota of {value} {name}: not below 0")
    if limit.empty:
        cur.execute("DELETE FROM quotas WHERE volume = ? AND principal = ?", (vid, principal))
        return
    cur.execute(
        "INSERT INTO quotas (volume, principal, files, bytes) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (volume, principal) "
        "DO UPDATE SET files = excluded.files, bytes = excluded.bytes",
        (vid, principal, limit.files, limit.bytes),
    )


def _applying(cur: Cursor, vid: str, owner: str, moving: bool) -> Iterable[tuple[str, Limit]]:
    """The quotas that take ``owner``'s new inodes; ``moving``: inodes that only change
    owner inside the volume, which the volume's quota holds already."""
    for principal, limit in limits(cur, vid, owner).items():
        if not (moving and principal == VOLUME):
            yield principal, limit


def check_files(
    cur: Cursor, vid: str, owner: str, what: str, more: int = 1, *, moving: bool = False
) -> None:
    """EDQUOT unless ``more`` inodes of ``owner`` fit ``vid``'s quotas (``what``: the
    operation, for the message)."""
    for principal, limit in _applying(cur, vid, owner, moving):
        if limit.files is None:
            continue
        if usage(cur, vid, principal).files + more > limit.files:
            raise _exceeded(what, principal, limit.files, "files")


def files_limited(cur: Cursor, vid: str, owner: str) -> bool:
    """Whether a files quota holds ``owner``'s new inodes of ``vid`` (then its clients
    get no directory leases: every create is checked at the MRC)."""
    return any(limit.files is not None for limit in limits(cur, vid, owner).values())


def check_bytes(
    cur: Cursor, vid: str, owner: str, what: str, more: int, *, moving: bool = False
) -> None:
    """EDQUOT unless ``more`` bytes of ``owner`` fit ``vid``'s quotas (a truncate that
    grows a file, a chown; writes are held to their vouchers instead)."""
    if more <= 0:
        return
    for principal, limit in _applying(cur, vid, owner, moving):
        if limit.bytes is not None and usage(cur, vid, principal).bytes + more > limit.bytes:
            raise _exceeded(what, principal, limit.bytes, "bytes")


# ------------------------------------------------------------------ vouchers
@dataclass(frozen=True)
class _Held:
    owner: str
    max_size: int
    replicas: int
    expires: float


# sizes(volume id, inos) -> {ino: size as the MRC knows it}
Sizes = Callable[[str, list[int]], dict[int, int]]


class Vouchers:
    """The vouchers handed out and not yet expired or given back, in this MRC's memory
    (after a restart, outstanding ones are not reserved until they expire: a bounded
    overrun, see docs/design/quotas.md)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._held: dict[tuple[str, int, bytes], _Held] = {}
        self._lock = threading.Lock()

    def reserved(self, vid: str, sizes: Sizes, but: tuple[str, int, bytes]) -> dict[str, int]:
        """Bytes reserved in volume ``vid`` by vouchers other than ``but``, by owner and
        in all (``VOLUME``)."""
        now = self._clock()
        with self._lock:
            for key in [k for k, h in self._held.items() if h.expires <= now]:
                del self._held[key]
            mine = [(k[1], h) for k, h in self._held.items() if k[0] == vid and k != but]
        if not mine:
            return {}
        known = sizes(vid, sorted({ino for ino, _ in mine}))
        out: dict[str, int] = {}
        for ino, h in mine:
            held = max(0, h.max_size - known.get(ino, h.max_size)) * h.replicas
            out[h.owner] = out.get(h.owner, 0) + held
            out[VOLUME] = out.get(VOLUME, 0) + held
        return out

    def hold(
        self, key: tuple[str, int, bytes], owner: str, max_size: int, replicas: int, expires: float
    ) -> None:
        with self._lock:
            self._held[key] = _Held(owner, max_size, replicas, expires)

    def give_back(self, vid: str, ino: int, holder: bytes) -> None:
        """The holder closed the file: its voucher reserves nothing any more."""
        with self._lock:
            self._held.pop((vid, ino, holder), None)

    def __len__(self) -> int:
        return len(self._held)
