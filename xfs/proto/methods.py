"""Every RPC method of xfs, named and versioned in one place.

A method has a typed request and response record and declares the authority its caller
needs; the dispatcher checks that authority before the handler runs. The wire name is
``"<service>.<name>/<version>"``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from xfs.proto.codec import U64, Record
from xfs.proto.records import (
    Attr,
    DirEntry,
    FileLayout,
    FilePolicy,
    OSDInfo,
    StatFS,
    StripingPolicy,
    VolumeInfo,
    XCap,
    XLocSet,
)

Req = TypeVar("Req", bound=Record)
Resp = TypeVar("Resp", bound=Record)


class Authority(enum.Enum):
    """Who may call a method (checked on the identity a connection acts as: its verified
    certificate's, or after ``MRC.assume`` the grantor's of a delegation)."""

    # a user of role standard, advanced or super, or a worker's connection acting under a
    # delegation (as its grantor, role standard); per-object checks follow in the handler
    USER = "user"
    ADVANCED = "advanced"  # a user of role advanced or super: the operator's views
    ADMIN = "admin"  # a user of role super (the handler checks the VO of what it touches)
    WORKER = "worker"  # a user of role worker: to present a delegation
    HOLDER = "holder"  # any user certificate, workers included: the XCap carried decides
    OSD = "osd"  # an OSD service certificate
    MRC = "mrc"  # the MRC service certificate
    OPERATOR = "operator"  # a grid operator's certificate (kind admin, from the service CA)
    USER_OR_MRC = "user_or_mrc"  # any user certificate (as HOLDER) or the MRC
    ANY = "any"  # any verified peer


@dataclass(frozen=True)
class Method(Generic[Req, Resp]):
    service: str
    name: str
    version: int
    request: type[Req]
    response: type[Resp]
    authority: Authority
    idempotent: bool = False  # safe to send again after a connection broke mid-call
    # the server may hold the call open, waiting (a lock, a long poll): it does not count
    # against the connection's requests in progress but against its waits (xfs.common.rpc)
    waits: bool = False

    @property
    def wire_name(self) -> str:
        return f"{self.service}.{self.name}/{self.version}"


@dataclass(frozen=True)
class Empty(Record):
    pass


# ----------------------------------------------------------------------------- MRC records
@dataclass(frozen=True)
class VolumeCreate(Record):
    name: str
    owner: str = ""  # default: the caller
    group: str = ""
    mode: int = 0o755
    striping: StripingPolicy = field(default_factory=StripingPolicy)
    policy: FilePolicy | None = None  # replication and placement; None: none, factor 1


@dataclass(frozen=True)
class VolumeName(Record):
    name: str


@dataclass(frozen=True)
class VolumeList(Record):
    volumes: list[VolumeInfo]


@dataclass(frozen=True)
class QuotaSet(Record):
    """Set a quota (docs/design/quotas.md): on the whole volume (``principal`` '') or on
    one principal's inodes of it; a limit of None is none, both None remove the quota."""

    volume: str
    principal: str
    files: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class QuotaInfo(Record):
    volume: str
    principal: str  # '': the volume as a whole
    files_limit: int | None
    bytes_limit: int | None
    files: int  # what it limits holds now: inodes
    bytes: int  # and bytes (sizes times replicas)


@dataclass(frozen=True)
class QuotaList(Record):
    quotas: list[QuotaInfo]


@dataclass(frozen=True)
class Lookup(Record):
    volume: str
    parent: int
    name: bytes
    client: str | None = None  # the caller's client lease: its own directory lease stays


@dataclass(frozen=True)
class Ino(Record):
    volume: str
    ino: int


@dataclass(frozen=True)
class SetAttr(Record):
    volume: str
    ino: int
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    atime_now: bool = False
    mtime_now: bool = False
    ctime_now: bool = False  # chown(-1, -1): ctime alone
    # a truncate through a descriptor opened for writing: that open's XCap, which
    # authorises it in place of the mode bits (ftruncate(2))
    xcap: XCap | None = None


@dataclass(frozen=True)
class Removed(Record):
    """The reply to unlink: the parent directory's attributes right after it, and its
    change number before it (0: not sent)."""

    parent: Attr | None = None
    parent_was: int = 0


@dataclass(frozen=True)
class SetAttrResult(Record):
    attr: Attr
    layout: FileLayout | None = None  # set when size changed: OSDs must be truncated


@dataclass(frozen=True)
class MkNod(Record):
    volume: str
    parent: int
    name: bytes
    mode: int
    rdev: int = 0
    umask: int = 0
    client: str | None = None  # (as ``Lookup.client``)


@dataclass(frozen=True)
class Create(Record):
    volume: str
    parent: int
    name: bytes
    mode: int
    flags: int
    umask: int = 0
    client: str | None = None  # register the open on this client lease


@dataclass(frozen=True)
class Open(Record):
    volume: str
    ino: int
    flags: int
    client: str | None = None  # register the open on this client lease
    want: int = 0  # quota: the size the writer's voucher must reach (0: the MRC's step)


@dataclass(frozen=True)
class UpdateSize(Record):
    """Sent by a writer after its data is on the OSDs (on flush, fsync and close), with
    its write XCap for the file (a size from before a newer truncate epoch is ignored)."""

    volume: str
    ino: int
    size: int
    xcap: XCap
    mtime_ns: int | None = None
    sync: bool = False  # and then durable, with every change before it (as mrc.sync)


@dataclass(frozen=True)
class Remove(Record):
    volume: str
    parent: int
    name: bytes
    client: str | None = None  # (as ``Lookup.client``)


@dataclass(frozen=True)
class Rename(Record):
    volume: str
    parent: int
    name: bytes
    new_parent: int
    new_name: bytes
    flags: int = 0  # RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2, RENAME_WHITEOUT = 4
    client: str | None = None  # (as ``Lookup.client``)


@dataclass(frozen=True)
class Link(Record):
    volume: str
    ino: int
    new_parent: int
    new_name: bytes
    client: str | None = None  # (as ``Lookup.client``)


@dataclass(frozen=True)
class Symlink(Record):
    volume: str
    parent: int
    name: bytes
    target: bytes
    client: str | None = None  # (as ``Lookup.client``)


@dataclass(frozen=True)
class Target(Record):
    target: bytes


@dataclass(frozen=True)
class ReadDir(Record):
    volume: str
    ino: int
    cursor: int = 0  # 0: from the start; else the cursor of the last entry seen
    limit: int = 1000
    client: str | None = None  # (as ``Lookup.client``)


@dataclass(frozen=True)
class DirEntries(Record):
    entries: list[DirEntry]


@dataclass(frozen=True)
class Access(Record):
    volume: str
    ino: int
    mask: int


@dataclass(frozen=True)
class XattrGet(Record):
    volume: str
    ino: int
    name: bytes


@dataclass(frozen=True)
class XattrSet(Record):
    volume: str
    ino: int
    name: bytes
    value: bytes
    flags: int = 0  # XATTR_CREATE = 1, XATTR_REPLACE = 2


@dataclass(frozen=True)
class XattrValue(Record):
    value: bytes


@dataclass(frozen=True)
class XattrNames(Record):
    names: list[bytes]


@dataclass(frozen=True)
class Heartbeat(Record):
    uuid: str
    address: str
    free: int
    total: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HeartbeatReply(Record):
    """The MRC's current XCap verification keys (key id -> raw Ed25519 public key), the
    lease this heartbeat grants (seconds from when it was sent during which the OSD may
    act as a primary; see docs/design/replication.md) and the addresses of the OSDs."""

    xcap_keys: dict[str, bytes]
    lease: float = 0.0
    osds: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OSDList(Record):
    osds: list[OSDInfo]


# ------------------------------------------------------------ client leases, opens, locks
@dataclass(frozen=True)
class ClientId(Record):
    client: str


@dataclass(frozen=True)
class ClientLease(Record):
    """A client lease and how long the MRC keeps it without a renewal."""

    client: str
    lease_ns: int


@dataclass(frozen=True)
class Close(Record):
    """The client closed its last handle of an inode."""

    volume: str
    ino: int
    client: str


@dataclass(frozen=True)
class CloseFiles(Record):
    """The client closed its last handles of several inodes (sent together, later)."""

    volume: str
    inos: list[int]
    client: str


@dataclass(frozen=True)
class Append(Record):
    """Reserve ``length`` bytes at the end of a file for one O_APPEND write; with
    ``lease``, and take the file's append lease if no other client has it open for
    writing (docs/design/leases.md, "Append leases")."""

    volume: str
    ino: int
    client: str
    length: int
    lease: bool = False


@dataclass(frozen=True)
class Offset(Record):
    offset: int
    leased: bool = False  # the caller now holds the append lease


@dataclass(frozen=True)
class Recalls(Record):
    """Append and directory leases the MRC wants back from a client (both empty: none,
    ask again)."""

    files: list[Ino]
    dirs: list[Ino] = field(default_factory=list)


@dataclass(frozen=True)
class DirLeaseAsk(Record):
    """Ask for the lease of a directory the caller just made (docs/design/leases.md,
    "Directory leases")."""

    volume: str
    ino: int
    client: str


@dataclass(frozen=True)
class DirLease(Record):
    """The answer: granted or not; if so, the directory's change number then, and the
    owner, group and block size a regular file the caller creates there gets."""

    granted: bool
    seq: int = 0
    owner: str = ""
    group: str = ""
    blksize: int = 0


@dataclass(frozen=True)
class InoAsk(Record):
    """Reserve ``count`` inode numbers for the files a client creates under its
    directory leases."""

    volume: str
    client: str
    count: int


@dataclass(frozen=True)
class InoRange(Record):
    first: int
    count: int


@dataclass(frozen=True)
class NewFile(Record):
    """One create made under a directory lease: the inode number is the client's, from
    its reserved range, so sending it again changes nothing."""

    parent: int
    name: bytes
    ino: int
    mode: int  # permission bits (no setuid, setgid or sticky bit)
    flags: int
    umask: int
    time_ns: int  # the client's clock when it made the file


@dataclass(frozen=True)
class CreateMany(Record):
    volume: str
    client: str
    files: list[NewFile]


@dataclass(frozen=True)
class Gone(Record):
    """One unlink made under a directory lease: ``name`` led to ``ino`` when the client
    removed it, so sending it again finds it gone and changes nothing."""

    parent: int
    name: bytes
    ino: int


@dataclass(frozen=True)
class UnlinkMany(Record):
    volume: str
    client: str
    files: list[Gone]


@dataclass(frozen=True)
class Made(Record):
    """One ``NewFile``'s outcome: its layout, or the errno it was refused with."""

    layout: FileLayout | None = None
    error: int = 0
    message: str = ""


@dataclass(frozen=True)
class MadeMany(Record):
    files: list[Made]


@dataclass(frozen=True)
class LeaseReturn(Record):
    """A client gives back its append lease of a file, its appends reported."""

    volume: str
    ino: int
    client: str


# lock families and modes on the wire (the rules are xfs.mrc.locks)
POSIX = "posix"  # fcntl record locks and OFD locks: byte ranges
FLOCK = "flock"  # flock(2): whole file
READ = "read"
WRITE = "write"
UNLOCK = "unlock"
EOF = 2**63 - 1  # the end of a lock "to the end of the file"


@dataclass(frozen=True)
class LockArgs(Record):
    """Set, remove or test a lock (see xfs.mrc.locks): family "posix" or "flock", mode
    "read", "write" or "unlock", bytes start..end inclusive. ``wait``: F_SETLKW, the
    MRC holds the call until the lock is granted or ``wait`` seconds pass."""

    volume: str
    ino: int
    client: str
    owner: U64
    family: str
    mode: str
    start: int
    end: int
    pid: int = 0
    wait: float = 0.0


@dataclass(frozen=True)
class LockHolder(Record):
    mode: str
    start: int
    end: int
    pid: int


@dataclass(frozen=True)
class LockReply(Record):
    """granted, or the lock that stands in the way."""

    granted: bool
    holder: LockHolder | None = None


@dataclass(frozen=True)
class ReleaseLocks(Record):
    """An owner lets go of all its locks of one family on an inode."""

    volume: str
    ino: int
    client: str
    owner: U64
    family: str


# ----------------------------------------------------------------------------- delegations
@dataclass(frozen=True)
class Delegate(Record):
    """Let ``grantee`` (a worker certificate's principal) act as the caller inside
    directory ``ino`` of ``volume`` for ``lifetime`` seconds (docs/design/delegation.md)."""

    volume: str
    ino: int
    grantee: str
    lifetime: float
    path: str = ""  # how the grantor names the directory (shown by delegation_list only)


@dataclass(frozen=True)
class DelegationInfo(Record):
    id: str
    grantor: str
    grantee: str
    volume: str
    ino: int
    path: str
    created: float  # unix seconds (MRC clock)
    expires: float
    revoked: float | None = None
    token: str = ""  # in the reply to delegate only: what the worker presents to assume


@dataclass(frozen=True)
class DelegationToken(Record):
    token: str


@dataclass(frozen=True)
class DelegationId(Record):
    id: str


@dataclass(frozen=True)
class DelegationList(Record):
    delegations: list[DelegationInfo]


@dataclass(frozen=True)
class MRCStatus(Record):
    uuid: str
    volumes: list[VolumeInfo]
    osds: list[OSDInfo]
    pending_deletions: int
    repair: RepairStatus | None = None
    scrub: ScrubStatus | None = None
    quotas: list[QuotaInfo] = field(default_factory=list)


@dataclass(frozen=True)
class ScrubStatus(Record):
    """The MRC's background scrubbing, as ``xfs status`` shows it."""

    passes: int  # whole passes over every file done since the MRC started
    files: int  # files scrubbed in the current (or last) pass
    objects: int  # objects checked in it, on every replica
    repaired: int  # corrupt objects repaired from another replica, since the MRC started
    unrepaired: int  # corrupt objects no replica could mend, since the MRC started
    running: bool = False  # a pass is under way


@dataclass(frozen=True)
class RepairStatus(Record):
    """Self-healing and draining, as ``xfs status`` shows them."""

    replicated_files: int  # files with a replication policy
    below_factor: int  # of them, below their factor (XLocSet.below_factor)
    filling: int  # replicas being filled in the background
    dead: list[str]  # OSDs declared dead (their replicas are being replaced)
    draining: dict[str, int]  # OSD uuid -> replicas still on it


@dataclass(frozen=True)
class ReplicaFailed(Record):
    """``osd`` did not answer for a file at XLocSet ``version`` (from a client or OSD)."""

    xcap: XCap
    version: int
    osd: str


@dataclass(frozen=True)
class ReplicaFilled(Record):
    """An OSD now holds every object of its column of the file at XLocSet ``version``."""

    xcap: XCap
    version: int
    osd: str


@dataclass(frozen=True)
class XLocReply(Record):
    """The file's current replica set, with an XCap for it and the OSDs' addresses."""

    xloc: XLocSet
    xcap: XCap
    addresses: dict[str, str]


@dataclass(frozen=True)
class OSDName(Record):
    uuid: str


# ----------------------------------------------------------------------------- OSD records
@dataclass(frozen=True)
class ObjRead(Record):
    xcap: XCap
    xloc: XLocSet
    objno: int
    offset: int
    length: int


@dataclass(frozen=True)
class LocalOpen(Record):
    """To an OSD's local socket (``xfs.common.local``): a descriptor of the directory
    of a file's objects on that OSD, for a mount on its host that reads them itself."""

    xcap: XCap
    xloc: XLocSet


@dataclass(frozen=True)
class LocalOpened(Record):
    code: int  # 0: the descriptor comes with this reply (SCM_RIGHTS); else an errno
    message: str = ""


@dataclass(frozen=True)
class ObjData(Record):
    data: bytes  # short (or empty) past the end of what the OSD holds; the client pads
    held: bool = True  # osd.fetch: whether the OSD holds the object at all


@dataclass(frozen=True)
class ObjWrite(Record):
    """``data`` written at ``offset`` of an object; with ``extents``, several ranges of
    it at once: (offset, length) of each, ascending and disjoint, ``data`` their bytes
    one after another and ``offset`` the first one's (xfs/common/extents.py)."""

    xcap: XCap
    xloc: XLocSet
    objno: int
    offset: int
    data: bytes
    sync: bool = False
    extents: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class FileOp(Record):
    """Truncate, fsync, size or delete of the part of a file one OSD holds."""

    xcap: XCap
    xloc: XLocSet
    size: int = 0  # truncate only


@dataclass(frozen=True)
class FileOps(Record):
    """Several files' ``FileOp``s in one request (the MRC's deleter)."""

    ops: list[FileOp]


@dataclass(frozen=True)
class Failed(Record):
    """The positions in a ``FileOps`` request of the operations that failed."""

    failed: list[int]


@dataclass(frozen=True)
class Synced(Record):
    """The file is durable on this OSD, which holds ``allocated`` bytes of its data."""

    allocated: int


@dataclass(frozen=True)
class SizeReply(Record):
    size: int  # the file size implied by the objects this OSD holds
    allocated: int = 0  # bytes of object data this OSD holds for the file (holes excluded)


@dataclass(frozen=True)
class ObjSum(Record):
    """What an OSD holds of one object: enough to tell two copies apart."""

    objno: int
    crc: int
    length: int


@dataclass(frozen=True)
class ObjDigest(Record):
    """``osd.digest``: the SHA-256 of one object as this replica holds it, zero-padded
    to ``length`` (the object's share of the file), read without repair or fill."""

    xcap: XCap
    xloc: XLocSet
    objno: int
    length: int


@dataclass(frozen=True)
class Digest(Record):
    sha256: bytes  # empty when ``problem`` says why there is none
    held: int  # bytes this replica holds of the object
    problem: str = ""  # "corrupt: …", "not filled yet"; empty when the object is sound


@dataclass(frozen=True)
class Scrubbed(Record):
    """``osd.scrub``: what one OSD found of one file's objects."""

    checked: int
    repaired: list[int]  # object numbers found corrupt and repaired from another replica
    unrepaired: list[int]  # found corrupt, and no replica could mend them


@dataclass(frozen=True)
class ObjSums(Record):
    objects: list[ObjSum]


@dataclass(frozen=True)
class ObjPut(Record):
    """Replace one object whole (``data`` None: remove it): reconciliation and repair."""

    xcap: XCap
    xloc: XLocSet
    objno: int
    data: bytes | None


@dataclass(frozen=True)
class OSDStatus(Record):
    uuid: str
    free: int
    total: int
    objects: int


class MRC:
    """The MRC's methods."""

    volume_create = Method("mrc", "volume_create", 1, VolumeCreate, VolumeInfo, Authority.ADMIN)
    volume_delete = Method("mrc", "volume_delete", 1, VolumeName, Empty, Authority.ADMIN)
    volume_get = Method(
        "mrc", "volume_get", 1, VolumeName, VolumeInfo, Authority.USER, idempotent=True
    )
    volume_list = Method(
        "mrc", "volume_list", 1, Empty, VolumeList, Authority.USER, idempotent=True
    )
    lookup = Method("mrc", "lookup", 1, Lookup, Attr, Authority.USER, idempotent=True)
    getattr = Method("mrc", "getattr", 1, Ino, Attr, Authority.USER, idempotent=True)
    setattr = Method("mrc", "setattr", 1, SetAttr, SetAttrResult, Authority.USER)
    mknod = Method("mrc", "mknod", 1, MkNod, Attr, Authority.USER)
    mkdir = Method("mrc", "mkdir", 1, MkNod, Attr, Authority.USER)
    create = Method("mrc", "create", 1, Create, FileLayout, Authority.USER)
    open = Method("mrc", "open", 1, Open, FileLayout, Authority.USER)
    update_size = Method("mrc", "update_size", 2, UpdateSize, Attr, Authority.USER)
    unlink = Method("mrc", "unlink", 1, Remove, Removed, Authority.USER)
    rmdir = Method("mrc", "rmdir", 1, Remove, Empty, Authority.USER)
    rename = Method("mrc", "rename", 1, Rename, Empty, Authority.USER)
    link = Method("mrc", "link", 1, Link, Attr, Authority.USER)
    symlink = Method("mrc", "symlink", 1, Symlink, Attr, Authority.USER)
    readlink = Method("mrc", "readlink", 1, Ino, Target, Authority.USER, idempotent=True)
    readdir = Method("mrc", "readdir", 1, ReadDir, DirEntries, Authority.USER, idempotent=True)
    access = Method("mrc", "access", 1, Access, Empty, Authority.USER, idempotent=True)
    statfs = Method("mrc", "statfs", 1, VolumeName, StatFS, Authority.USER, idempotent=True)
    # every change acknowledged before it durable against a crash of the machine too
    # (fsync(2) of a file or a directory: docs/design/metadata.md)
    sync = Method("mrc", "sync", 1, VolumeName, Empty, Authority.USER, idempotent=True)
    getxattr = Method("mrc", "getxattr", 1, XattrGet, XattrValue, Authority.USER, idempotent=True)
    setxattr = Method("mrc", "setxattr", 1, XattrSet, Empty, Authority.USER)
    listxattr = Method("mrc", "listxattr", 1, Ino, XattrNames, Authority.USER, idempotent=True)
    removexattr = Method("mrc", "removexattr", 1, XattrGet, Empty, Authority.USER)
    osd_heartbeat = Method(
        "mrc", "osd_heartbeat", 1, Heartbeat, HeartbeatReply, Authority.OSD, idempotent=True
    )
    osd_list = Method("mrc", "osd_list", 1, Empty, OSDList, Authority.ADVANCED, idempotent=True)
    status = Method("mrc", "status", 1, Empty, MRCStatus, Authority.ADVANCED, idempotent=True)
    quota_set = Method("mrc", "quota_set", 1, QuotaSet, Empty, Authority.ADMIN, idempotent=True)
    quota_list = Method(
        "mrc", "quota_list", 1, VolumeName, QuotaList, Authority.USER, idempotent=True
    )
    client_open = Method("mrc", "client_open", 1, Empty, ClientLease, Authority.USER)
    client_renew = Method(
        "mrc", "client_renew", 1, ClientId, ClientLease, Authority.USER, idempotent=True
    )
    client_close = Method(
        "mrc", "client_close", 1, ClientId, Empty, Authority.USER, idempotent=True
    )
    close = Method("mrc", "close", 1, Close, Empty, Authority.USER, idempotent=True)
    close_files = Method(
        "mrc", "close_files", 1, CloseFiles, Empty, Authority.USER, idempotent=True
    )
    append = Method("mrc", "append", 1, Append, Offset, Authority.USER)
    lease_recalls = Method(
        "mrc", "lease_recalls", 1, ClientId, Recalls, Authority.USER, idempotent=True, waits=True
    )
    lease_return = Method(
        "mrc", "lease_return", 1, LeaseReturn, Empty, Authority.USER, idempotent=True
    )
    dir_lease = Method("mrc", "dir_lease", 1, DirLeaseAsk, DirLease, Authority.USER)
    dir_lease_return = Method(
        "mrc", "dir_lease_return", 1, LeaseReturn, Empty, Authority.USER, idempotent=True
    )
    reserve_inos = Method("mrc", "reserve_inos", 1, InoAsk, InoRange, Authority.USER)
    create_many = Method(
        "mrc", "create_many", 1, CreateMany, MadeMany, Authority.USER, idempotent=True
    )
    unlink_many = Method(
        "mrc", "unlink_many", 1, UnlinkMany, MadeMany, Authority.USER, idempotent=True
    )
    lock = Method(
        "mrc", "lock", 1, LockArgs, LockReply, Authority.USER, idempotent=True, waits=True
    )
    test_lock = Method("mrc", "test_lock", 1, LockArgs, LockReply, Authority.USER, idempotent=True)
    release_locks = Method(
        "mrc", "release_locks", 1, ReleaseLocks, Empty, Authority.USER, idempotent=True
    )
    delegate = Method("mrc", "delegate", 1, Delegate, DelegationInfo, Authority.USER)
    assume = Method("mrc", "assume", 1, DelegationToken, DelegationInfo, Authority.WORKER)
    delegation_revoke = Method(
        "mrc", "delegation_revoke", 1, DelegationId, Empty, Authority.USER, idempotent=True
    )
    delegation_list = Method(
        "mrc", "delegation_list", 1, Empty, DelegationList, Authority.USER, idempotent=True
    )
    # replication: failures and fills reported by clients and OSDs (see the handlers)
    replica_failed = Method(
        "mrc", "replica_failed", 1, ReplicaFailed, XLocReply, Authority.ANY, idempotent=True
    )
    replica_filled = Method(
        "mrc", "replica_filled", 1, ReplicaFilled, XLocReply, Authority.OSD, idempotent=True
    )
    osd_drain = Method("mrc", "osd_drain", 1, OSDName, Empty, Authority.OPERATOR, idempotent=True)
    osd_undrain = Method(
        "mrc", "osd_undrain", 1, OSDName, Empty, Authority.OPERATOR, idempotent=True
    )


class OSD:
    """An OSD's methods. Each carries an XCap, verified before anything is touched."""

    read = Method("osd", "read", 1, ObjRead, ObjData, Authority.HOLDER, idempotent=True)
    write = Method("osd", "write", 1, ObjWrite, Empty, Authority.HOLDER, idempotent=True)
    truncate = Method("osd", "truncate", 1, FileOp, Empty, Authority.HOLDER, idempotent=True)
    fsync = Method("osd", "fsync", 2, FileOp, Synced, Authority.HOLDER, idempotent=True)
    size = Method("osd", "size", 1, FileOp, SizeReply, Authority.HOLDER, idempotent=True)
    # any replica of the file, for `xfs checkpoint verify` (no repair, no fill)
    digest = Method("osd", "digest", 1, ObjDigest, Digest, Authority.HOLDER, idempotent=True)
    delete = Method("osd", "delete", 1, FileOp, Empty, Authority.USER_OR_MRC, idempotent=True)
    delete_many = Method("osd", "delete_many", 1, FileOps, Failed, Authority.MRC, idempotent=True)
    status = Method("osd", "status", 1, Empty, OSDStatus, Authority.ANY, idempotent=True)
    # between the OSDs of one file's replicas (the XCap is verified, the holder is not:
    # the peer must be an OSD of the XLocSet); see xfs.osd.replication
    fwd_write = Method("osd", "fwd_write", 1, ObjWrite, Empty, Authority.OSD, idempotent=True)
    fwd_truncate = Method("osd", "fwd_truncate", 1, FileOp, Empty, Authority.OSD, idempotent=True)
    fwd_fsync = Method("osd", "fwd_fsync", 1, FileOp, Synced, Authority.OSD, idempotent=True)
    sums = Method("osd", "sums", 1, FileOp, ObjSums, Authority.OSD, idempotent=True)
    put = Method("osd", "put", 1, ObjPut, Empty, Authority.OSD, idempotent=True)
    fetch = Method("osd", "fetch", 1, ObjRead, ObjData, Authority.OSD, idempotent=True)
    # the MRC asks a file's primary to fill its new replicas now
    sync = Method("osd", "sync", 1, FileOp, Empty, Authority.MRC, idempotent=True)
    # the MRC's scrubber: check every object of a file held here, repair what is corrupt
    scrub = Method("osd", "scrub", 1, FileOp, Scrubbed, Authority.MRC, idempotent=True)


def all_methods() -> list[Method[Any, Any]]:
    return [m for holder in (MRC, OSD) for m in vars(holder).values() if isinstance(m, Method)]


__all__ = ["MRC", "OSD", "Authority", "Empty", "Method", "all_methods"]
