"""The records of the xfs protocol: attributes, layouts, capabilities, registry entries.

Names follow XtreemFS: ``StripingPolicy``, ``XLocSet`` (the replica set of a file, with a
version that is the fencing epoch), ``XCap`` (the capability the MRC signs and the OSDs
check). Every record is a frozen dataclass and travels as a msgpack map (see codec).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

import msgpack

from xfs.proto.codec import Record

ROOT_INO = 1
NAME_MAX = 255
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536


class Role(enum.StrEnum):
    """XWHEP usage levels carried in a user certificate."""

    SUPER = "super"
    ADVANCED = "advanced"
    STANDARD = "standard"
    WORKER = "worker"


class Kind(enum.StrEnum):
    """What a certificate's holder is."""

    USER = "user"
    MRC = "mrc"
    OSD = "osd"
    ADMIN = "admin"


class Rights(enum.IntFlag):
    """Rights an XCap grants on one file's objects."""

    READ = 1
    WRITE = 2
    TRUNCATE = 4
    DELETE = 8


class UpdatePolicy(enum.StrEnum):
    """How a file's replicas are kept (docs/design/replication.md)."""

    NONE = "none"  # one replica, writable
    RONLY = "ronly"  # sealed: immutable, any complete replica serves reads
    RW = "rw"  # writable: a primary orders writes and forwards them to every replica


class Fill(enum.StrEnum):
    """How a new read-only replica gets its objects."""

    FULL = "full"  # all of them, in the background
    PARTIAL = "partial"  # each on its first read, from a complete replica


@dataclass(frozen=True)
class Identity(Record):
    """Who is on the other end of a connection, taken from its verified certificate."""

    principal: str  # "alice@physics", "osd:<uuid>", "mrc"
    vo: str
    kind: Kind
    role: Role
    groups: tuple[str, ...]  # VO-scoped: "users@physics"
    fingerprint: bytes  # SHA-256 of the DER certificate

    @property
    def is_super(self) -> bool:
        return self.kind is Kind.USER and self.role is Role.SUPER


@dataclass(frozen=True)
class StripingPolicy(Record):
    stripe_size: int = 1 << 20
    width: int = 1


@dataclass(frozen=True)
class Replica(Record):
    """One full copy of a file, striped RAID0 over ``osds`` (column i on osds[i]).

    ``incomplete`` names the OSDs (columns) of this replica that do not yet hold every
    object: a new replica is filled from a complete one before it may serve reads or
    become primary.
    """

    osds: list[str]
    striping: StripingPolicy
    incomplete: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.incomplete


@dataclass(frozen=True)
class XLocSet(Record):
    """The replica set of a file. ``version`` rises with every change: the fencing epoch.

    For ``rw`` files ``replicas[0]`` is the primary (its OSD of each stripe column orders
    the writes of that column); the MRC keeps a complete replica first. ``factor`` is how
    many replicas the file should have: the MRC heals toward it. ``fill`` says how new
    read-only replicas are filled, ``seal_on_close`` that the file is sealed (becomes
    ``ronly``) when its last writer closes it.
    """

    version: int
    replicas: list[Replica]
    update_policy: UpdatePolicy = UpdatePolicy.NONE
    factor: int = 1
    fill: Fill = Fill.FULL
    seal_on_close: bool = False

    @property
    def replicated(self) -> bool:
        return self.update_policy is not UpdatePolicy.NONE

    @property
    def background_fill(self) -> bool:
        """Whether incomplete replicas are filled in the background (by the primary);
        else they are partial and fill object by object as they serve reads."""
        return self.update_policy is UpdatePolicy.RW or self.fill is Fill.FULL

    @property
    def below_factor(self) -> bool:
        """Fewer replicas than the factor, counting partial ones (they serve reads)
        but not those still to be filled in the background."""
        if not self.replicated:
            return False
        counted = sum(r.complete or not self.background_fill for r in self.replicas)
        return counted < self.factor

    @property
    def filling(self) -> list[str]:
        """The OSDs of incomplete replicas that are being filled in the background."""
        if not self.background_fill:
            return []
        return [u for r in self.replicas for u in r.incomplete]

    def group(self, column: int) -> list[str]:
        """The OSDs holding stripe column ``column``, one per replica, primary first."""
        return [r.osds[column] for r in self.replicas if column < len(r.osds)]

    def digest(self) -> bytes:
        """The hash an XCap carries, so that an OSD can refuse a forged XLocSet."""
        return hashlib.sha256(msgpack.packb(self.to_wire(), use_bin_type=True)).digest()


@dataclass(frozen=True)
class PlacementPolicy(Record):
    """How the MRC picks OSDs for new replicas: filter -> group -> sort (xfs.mrc.placement).

    ``require``: label values an OSD must carry (filter). ``spread``: the label whose
    values are failure domains; replicas of a file go to different ones while there are
    enough (group). ``sort``: ``free`` (most free space first), ``random``, or
    ``prefer:<label>=<value>`` (those first, then by free space).
    """

    require: dict[str, str] = field(default_factory=dict)
    spread: str = "host"
    sort: str = "free"


@dataclass(frozen=True)
class FilePolicy(Record):
    """The policy of a volume or directory (inherited by what is created in it) or file."""

    replication: UpdatePolicy = UpdatePolicy.NONE
    factor: int = 1
    fill: Fill = Fill.FULL
    seal_on_close: bool = False
    striping: StripingPolicy = field(default_factory=StripingPolicy)
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)


@dataclass(frozen=True)
class Attr(Record):
    ino: int
    mode: int  # full st_mode, file type included
    nlink: int
    owner: str  # grid principal
    group: str  # VO-scoped group
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int = 0
    blksize: int = 1 << 20
    acl: bool = False  # has an access ACL: the mode bits alone do not decide permissions
    # a directory's change number (xfs/mrc/dirseq.py) in the replies that change it or
    # make it (create, unlink, mkdir); 0 elsewhere
    seq: int = 0


@dataclass(frozen=True)
class DirEntry(Record):
    name: bytes
    attr: Attr
    cursor: int  # pass back to readdir to continue after this entry


@dataclass(frozen=True)
class XCap(Record):
    """A signed capability for one file. ``signature`` covers every other field."""

    volume: str  # volume id
    ino: int
    rights: int  # Rights bits actually granted
    truncate_epoch: int
    xloc_version: int
    xloc_hash: bytes
    not_before: int  # unix seconds
    expires: int
    holder: bytes  # SHA-256 fingerprint of the holder's certificate
    key_id: str
    signature: bytes = b""
    # quota voucher (docs/design/quotas.md): writes may reach this size, OSDs refuse
    # bytes past it with EDQUOT; -1: no limit
    max_size: int = -1

    @property
    def file_id(self) -> str:
        return f"{self.volume}:{self.ino}"


@dataclass(frozen=True)
class OSDInfo(Record):
    uuid: str
    address: str  # "host:port"
    free: int
    total: int
    last_seen: float
    alive: bool
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeInfo(Record):
    id: str
    name: str
    owner: str
    group: str
    mode: int
    striping: StripingPolicy
    files: int = 0
    bytes_used: int = 0


@dataclass(frozen=True)
class StatFS(Record):
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int = NAME_MAX


@dataclass(frozen=True)
class FileLayout(Record):
    """What a client needs to do I/O on an open file."""

    attr: Attr
    xloc: XLocSet
    xcap: XCap
    addresses: dict[str, str]  # OSD uuid -> "host:port"
    # in the reply to create: the parent directory's attributes right after it, which
    # the kernel asks for next (its cached ones are dropped by the change)
    parent: Attr | None = None
    parent_was: int = 0  # the parent's change number before this create (0: not sent)
