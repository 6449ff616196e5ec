"""RPC adapters of the MRC: decode, call the namespace, attach layouts and XCaps, encode.

Authority per method is declared in ``xfs.proto.methods`` and checked by the dispatcher;
per-object permissions are the namespace's. Before a namespace call, ``_as`` says who
the caller is on the volume (``roles.effective``: a super user of another VO is standard
there) and keeps a worker's delegated connection inside its directory (``delegations``).
Namespace calls are synchronous single transactions, and no await separates ``_as``, a
check or the mutation it guards.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import random
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from xfs.common import audit
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.rpc import Dispatcher
from xfs.mrc import locks, placement, policies, quotas, roles
from xfs.mrc.clients import Ended
from xfs.mrc.delegations import Delegated, Delegation, Delegations
from xfs.mrc.leases import APPEND, DIR, RECALL_WAIT, LockWaiters, Recaller
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.policies import Policies
from xfs.mrc.xcaps import Basis, XCapIssuer, rights_for_flags
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    Access,
    Append,
    ClientId,
    ClientLease,
    Close,
    CloseFiles,
    Create,
    CreateMany,
    Delegate,
    DelegationId,
    DelegationInfo,
    DelegationList,
    DelegationToken,
    DirEntries,
    DirLease,
    DirLeaseAsk,
    Empty,
    Heartbeat,
    HeartbeatReply,
    Ino,
    InoAsk,
    InoRange,
    LeaseReturn,
    Link,
    LockArgs,
    LockHolder,
    LockReply,
    Lookup,
    Made,
    MadeMany,
    Method,
    MkNod,
    MRCStatus,
    NewFile,
    Offset,
    Open,
    OSDList,
    QuotaInfo,
    QuotaList,
    QuotaSet,
    ReadDir,
    Recalls,
    ReleaseLocks,
    Remove,
    Removed,
    Rename,
    RepairStatus,
    ScrubStatus,
    SetAttr,
    SetAttrResult,
    Symlink,
    Target,
    UnlinkMany,
    UpdateSize,
    VolumeCreate,
    VolumeList,
    VolumeName,
    XattrGet,
    XattrNames,
    XattrSet,
    XattrValue,
)
from xfs.proto.records import (
    Attr,
    FileLayout,
    Identity,
    Replica,
    Rights,
    Role,
    StatFS,
    StripingPolicy,
    UpdatePolicy,
    VolumeInfo,
    XCap,
    XLocSet,
)

STATFS_BLOCK = 4096
MAX_LOCK_WAIT = 20.0  # seconds one F_SETLKW call is held before the client asks again
MAX_CLOSE_FILES = 1024  # inodes one close_files may close
MAX_CREATE_MANY = 1024  # files one create_many may make


class MRCHandlers:
    def __init__(
        self,
        ns: Namespace,
        registry: OSDRegistry,
        xcaps: XCapIssuer,
        on_deletion: Callable[[], None],
        uuid: str,
        rng: random.Random | None = None,
        *,
        waiters: LockWaiters | None = None,
        client_lease: float = 30.0,
        audit: Audit = NO_AUDIT,
        delegations: Delegations | None = None,
        osd_lease: float = 0.0,
        repair: Callable[[], RepairStatus | None] = lambda: None,
        scrub: Callable[[], ScrubStatus | None] = lambda: None,
        policies: Policies | None = None,
        on_xloc: Callable[[], None] = lambda: None,
        sync: Callable[[], Awaitable[None]] | None = None,
        append_lease_wait: float = RECALL_WAIT,
    ) -> None:
        self._ns = ns
        self._sync = sync  # group commit (xfs.mrc.syncer); None: mrc.sync is refused
        self._policies = policies
        self._on_xloc = on_xloc  # a replica set changed: wakes the healer
        self._osd_lease = osd_lease  # granted with every heartbeat (replication leases)
        self._repair = repair
        self._scrub = scrub
        self._audit = audit
        self._delegations = delegations
        self._waiters = waiters or LockWaiters()
        self._recaller = Recaller(self._waiters, append_lease_wait)
        self._lease_ns = int(client_lease * 1e9)
        self._registry = registry
        self._xcaps = xcaps
        self._on_deletion = on_deletion
        self._uuid = uuid
        self._rng = rng or random.Random()
        # name -> (id, default striping, owner): fixed once a volume exists, and asked for
        # on every request, where get_volume would also count the volume's files
        self._volumes: dict[str, tuple[str, StripingPolicy, str]] = {}
        self._vouchers = quotas.Vouchers(time.time)  # quota reservations of write XCaps

    def register(self, d: Dispatcher) -> None:
        for method, handler in [
            (MRC.volume_create, self.volume_create),
            (MRC.volume_delete, self.volume_delete),
            (MRC.volume_get, self.volume_get),
            (MRC.volume_list, self.volume_list),
            (MRC.lookup, self.lookup),
            (MRC.getattr, self.getattr),
            (MRC.setattr, self.setattr),
            (MRC.mknod, self.mknod),
            (MRC.mkdir, self.mkdir),
            (MRC.create, self.create),
            (MRC.open, self.open),
            (MRC.update_size, self.update_size),
            (MRC.client_open, self.client_open),
            (MRC.client_renew, self.client_renew),
            (MRC.client_close, self.client_close),
            (MRC.close, self.close),
            (MRC.close_files, self.close_files),
            (MRC.append, self.append),
            (MRC.lease_recalls, self.lease_recalls),
            (MRC.lease_return, self.lease_return),
            (MRC.dir_lease, self.dir_lease),
            (MRC.dir_lease_return, self.dir_lease_return),
            (MRC.reserve_inos, self.reserve_inos),
            (MRC.create_many, self.create_many),
            (MRC.unlink_many, self.unlink_many),
            (MRC.lock, self.lock),
            (MRC.test_lock, self.test_lock),
            (MRC.release_locks, self.release_locks),
            (MRC.unlink, self.unlink),
            (MRC.rmdir, self.rmdir),
            (MRC.rename, self.rename),
            (MRC.link, self.link),
            (MRC.symlink, self.symlink),
            (MRC.readlink, self.readlink),
            (MRC.readdir, self.readdir),
            (MRC.access, self.access),
            (MRC.statfs, self.statfs),
            (MRC.quota_set, self.quota_set),
            (MRC.quota_list, self.quota_list),
            (MRC.sync, self.sync),
            (MRC.getxattr, self.getxattr),
            (MRC.setxattr, self.setxattr),
            (MRC.listxattr, self.listxattr),
            (MRC.removexattr, self.removexattr),
            (MRC.osd_heartbeat, self.osd_heartbeat),
            (MRC.osd_list, self.osd_list),
            (MRC.status, self.status),
            (MRC.delegate, self.delegate),
            (MRC.delegation_revoke, self.delegation_revoke),
            (MRC.delegation_list, self.delegation_list),
        ]:
            d.register(method, handler)  # type: ignore[arg-type]
        d.register_assume(MRC.assume, self.assume)

    # ------------------------------------------------------------------ helpers
    def _volume(self, name: str) -> tuple[str, StripingPolicy, str]:
        known = self._volumes.get(name)
        if known is None:
            info = self._ns.get_volume(name)
            known = self._volumes[name] = (info.id, info.striping, info.owner)
        return known

    def _as(self, peer: Identity, volume: str, *inos: int, see: bool = False) -> Identity:
        """Who ``peer`` is for a request on ``volume`` that touches ``inos``: see
        ``roles.effective``; a delegated connection must stay in its volume and inside its
        directory (``see``: or on the path down to it), and every caller must reach each
        inode as a path walk would (``xfs.mrc.reach``), else EACCES."""
        vid, _, owner = self._volume(volume)
        if isinstance(peer, Delegated):
            assert self._delegations is not None
            self._delegations.confine(peer, vid, inos, see=see)
        who = roles.effective(peer, owner)
        if inos:
            self._ns.reach(who, volume, inos, vid)
        return who

    def _layout(
        self,
        peer: Identity,
        who: Identity,
        volume: str,
        attr: Attr,
        xloc: XLocSet,
        epoch: int,
        rights: Rights,
        basis: Basis = Basis.CHECKED,
        want: int = 0,
    ) -> FileLayout:
        """The file's layout with an XCap granted to ``peer`` (see ``XCapIssuer.grant``):
        every caller checked the path (``_as``) and, for ``CHECKED``, the namespace the
        mode, in the same request."""
        vid = self._volume(volume)[0]
        max_size = -1
        if rights & (Rights.WRITE | Rights.TRUNCATE):
            max_size = self._voucher(peer, vid, attr, max(1, xloc.factor), want)
        xcap = self._xcaps.grant(
            peer,
            who,
            vid,
            attr.ino,
            rights,
            epoch,
            xloc,
            basis,
            checked=True,
            max_size=max_size,
            volume=volume,
            **_via(peer),
        )
        osds = [u for r in xloc.replicas for u in r.osds]
        return FileLayout(attr, xloc, xcap, self._registry.addresses(osds))

    def _voucher(self, peer: Identity, vid: str, attr: Attr, replicas: int, want: int = 0) -> int:
        """The size ``peer`` may write the file up to under its owner's and its volume's
        bytes quotas (xfs.mrc.quotas; ``want``: the size it asked for), reserved until the
        XCap expires: -1, no limit."""
        limits, used = self._ns.quota_view(vid, attr.owner)
        if not any(limit.bytes is not None for limit in limits.values()):
            return -1
        key = (vid, attr.ino, peer.fingerprint)
        reserved = self._vouchers.reserved(vid, self._ns.sizes, but=key)
        rooms = [
            quotas.room(limit.bytes, used[p].bytes, reserved.get(p, 0))
            for p, limit in limits.items()
        ]
        max_size = quotas.voucher(attr.size, replicas, rooms, want)
        expires = time.time() + self._xcaps.lifetime
        self._vouchers.hold(key, attr.owner, max_size, replicas, expires)
        return max_size

    async def _settled(self) -> None:
        """Before placing a file: the OSDs known at the MRC's start have reported again
        (``OSDRegistry.settled``)."""
        if self._registry is not None:
            await self._registry.settled()

    def _place(self, volume: str, directory: int) -> XLocSet:
        """The layout of a new file in ``directory``, under the policy that applies there."""
        if self._policies is None:
            striping = self._volume(volume)[1]
            osds = placement.select(self._registry.all(), striping.width, self._rng)
            if not osds:
                raise XfsError(errno.ENOSPC, "no OSD is available to store new files")
            if len(osds) < striping.width:
                striping = StripingPolicy(striping.stripe_size, len(osds))
            return XLocSet(1, [Replica(osds, striping)], UpdatePolicy.NONE)
        return self._policies.place(volume, directory)

    # ------------------------------------------------------------------ volumes
    async def volume_create(self, peer: Identity, req: VolumeCreate) -> VolumeInfo:
        denial = roles.volume_create_denial(peer, req.owner, req.group)
        if denial is not None:
            raise XfsError(errno.EPERM, denial)
        if req.policy is not None and self._policies is not None:
            policies.check(req.policy)
        info = self._ns.create_volume(
            peer, req.name, req.owner or peer.principal, req.group, req.mode, req.striping
        )
        if req.policy is not None and self._policies is not None:
            self._policies.set_volume(req.name, req.policy)
        self._audit.record(
            audit.ADMIN, peer.principal, "volume_create", volume=req.name, owner=info.owner
        )
        return info

    async def volume_delete(self, peer: Identity, req: VolumeName) -> Empty:
        denial = roles.volume_delete_denial(peer, req.name, self._volume(req.name)[2])
        if denial is not None:
            raise XfsError(errno.EPERM, denial)
        self._ns.delete_volume(peer, req.name)
        self._volumes.pop(req.name, None)
        if self._delegations is not None:
            self._delegations.load()  # the volume's delegations went with it
        self._on_deletion()
        self._audit.record(audit.ADMIN, peer.principal, "volume_delete", volume=req.name)
        return Empty()

    async def volume_get(self, peer: Identity, req: VolumeName) -> VolumeInfo:
        self._as(peer, req.name)
        return self._ns.get_volume(req.name)

    async def volume_list(self, peer: Identity, req: Empty) -> VolumeList:
        return VolumeList(self._ns.list_volumes())

    # ------------------------------------------------------------------ inodes
    async def lookup(self, peer: Identity, req: Lookup) -> Attr:
        who = self._as(peer, req.volume)
        if isinstance(peer, Delegated):
            assert self._delegations is not None
            vid = self._volume(req.volume)[0]
            self._delegations.confine_lookup(peer, vid, req.parent, req.name)
        self._ns.reach(who, req.volume, (req.parent,), self._volume(req.volume)[0])
        await self._dir_recall(who, req.volume, req.parent, req.client)
        return self._ns.lookup(who, req.volume, req.parent, req.name)

    async def getattr(self, peer: Identity, req: Ino) -> Attr:
        who = self._as(peer, req.volume, req.ino, see=True)
        return self._ns.getattr(who, req.volume, req.ino)

    async def setattr(self, peer: Identity, req: SetAttr) -> SetAttrResult:
        who = self._as(peer, req.volume, req.ino)
        await self._dir_recall(who, req.volume, req.ino, None)  # (a directory's mode, say)
        writer = req.xcap is not None and req.size is not None and self._writes(peer, req)
        if req.size is not None:
            # a holder's appends land and are reported before the truncate moves the
            # truncate epoch (after it, the OSDs would refuse them); no await from the
            # end of the recall to the change, so no lease is granted in between
            await self._recall(who, req.volume, req.ino, None, may_write=writer)
        attr, xloc = self._ns.setattr(
            who,
            req.volume,
            req.ino,
            mode=req.mode,
            owner=req.owner,
            group=req.group,
            size=req.size,
            atime_ns=req.atime_ns,
            mtime_ns=req.mtime_ns,
            atime_now=req.atime_now,
            mtime_now=req.mtime_now,
            ctime_now=req.ctime_now,
            writer=writer,
        )
        if xloc is None:
            return SetAttrResult(attr)
        # W was needed, or the writer's XCap shown: then the new XCap (of the new truncate
        # epoch) grants what that one did, so the writer's descriptor carries on with it
        _, _, epoch = self._ns.open(who, req.volume, req.ino, os.O_WRONLY, check=not writer)
        rights = Rights.TRUNCATE | Rights.WRITE
        if writer:
            assert req.xcap is not None
            rights |= Rights(req.xcap.rights) & (Rights.READ | Rights.WRITE)
        basis = Basis.SHOWN if writer else Basis.CHECKED
        layout = self._layout(peer, who, req.volume, attr, xloc, epoch, rights, basis)
        return SetAttrResult(attr, layout)

    def _writes(self, peer: Identity, req: SetAttr) -> bool:
        """Whether ``req.xcap`` is a valid write XCap of this file held by ``peer``."""
        assert req.xcap is not None
        try:
            self._check_write_xcap(peer, req.volume, req.ino, req.xcap)
        except XfsError:
            return False  # then the mode bits decide, as for a truncate by path
        return True

    def _check_write_xcap(self, peer: Identity, volume: str, ino: int, xcap: XCap) -> None:
        """EACCES unless ``xcap`` is a valid write XCap of this file held by ``peer``."""
        self._xcaps.check(
            xcap,
            holder=peer.fingerprint,
            volume_id=self._volume(volume)[0],
            ino=ino,
            rights=Rights.WRITE,
        )

    async def access(self, peer: Identity, req: Access) -> Empty:
        who = self._as(peer, req.volume, req.ino, see=True)
        self._ns.access(who, req.volume, req.ino, req.mask)
        return Empty()

    async def update_size(self, peer: Identity, req: UpdateSize) -> Attr:
        # only a writer of this file, by the XCap it writes with; a size reported under
        # an older truncate epoch is ignored (the truncate superseded it)
        who = self._as(peer, req.volume, req.ino)
        self._check_write_xcap(peer, req.volume, req.ino, req.xcap)
        attr = self._ns.update_size(
            who, req.volume, req.ino, req.size, req.mtime_ns, epoch=req.xcap.truncate_epoch
        )
        if req.sync and self._sync is not None:  # fsync(2): one round trip, not two
            await self._sync()
        return attr

    # ------------------------------------------------------------------ entries
    async def mknod(self, peer: Identity, req: MkNod) -> Attr:
        if stat.S_ISREG(req.mode):
            await self._settled()  # it is placed
        who = self._as(peer, req.volume, req.parent)
        await self._dir_recall(who, req.volume, req.parent, req.client)
        if stat.S_ISREG(req.mode):
            flags = 0o100 | 0o200  # O_CREAT | O_EXCL: a new, empty regular file
            attr, _, _ = self._ns.create(
                who,
                req.volume,
                req.parent,
                req.name,
                req.mode,
                flags,
                req.umask,
                self._place(req.volume, req.parent),
            )
            return attr
        return self._ns.mknod(who, req.volume, req.parent, req.name, req.mode, req.rdev, req.umask)

    async def mkdir(self, peer: Identity, req: MkNod) -> Attr:
        who = self._as(peer, req.volume, req.parent)
        await self._dir_recall(who, req.volume, req.parent, req.client)
        attr = self._ns.mkdir(who, req.volume, req.parent, req.name, req.mode, req.umask)
        # its change number as made: the maker's listing of it (empty) starts there
        return dataclasses.replace(attr, seq=self._dirseq(req.volume, attr.ino))

    def _dirseq(self, volume: str, ino: int) -> int:
        return self._ns.dirseq.get(self._volume(volume)[0], ino)

    def _parent_after(self, who: Identity, volume: str, parent: int) -> Attr:
        """A directory's attributes and change number right after a change of ours."""
        attr = self._ns.getattr(who, volume, parent)
        return dataclasses.replace(attr, seq=self._dirseq(volume, parent))

    async def create(self, peer: Identity, req: Create) -> FileLayout:
        await self._settled()
        who = self._as(peer, req.volume, req.parent)
        if _writes(req.flags) and not req.flags & os.O_EXCL:  # may open an existing file
            try:
                existing = self._ns.lookup(who, req.volume, req.parent, req.name)
            except XfsError:
                pass  # (the create gives the answer)
            else:
                await self._recall(who, req.volume, existing.ino, req.client)  # as ``open``
        await self._dir_recall(who, req.volume, req.parent, req.client)
        was = self._dirseq(req.volume, req.parent)  # (no await from here to the reply)
        attr, xloc, epoch = self._ns.create(
            who,
            req.volume,
            req.parent,
            req.name,
            req.mode,
            req.flags,
            req.umask,
            self._place(req.volume, req.parent),
            req.client,
        )
        assert xloc is not None  # (placed above, or the existing file's)
        rights = rights_for_flags(req.flags)
        # a new entry moved the directory's change number; opening an existing file did not
        made = self._dirseq(req.volume, req.parent) != was
        basis = Basis.CREATED if made else Basis.CHECKED
        layout = self._layout(peer, who, req.volume, attr, xloc, epoch, rights, basis)
        parent = self._parent_after(who, req.volume, req.parent)
        return dataclasses.replace(layout, parent=parent, parent_was=was)

    async def open(self, peer: Identity, req: Open) -> FileLayout:
        await self._settled()  # a file made without a layout is placed here
        who = self._as(peer, req.volume, req.ino)
        if _writes(req.flags):
            # other clients' append leases back, their appends reported, before this
            # client is a writer (then none is granted) or truncates: no await from the
            # end of the recall to the registration
            await self._recall(who, req.volume, req.ino, req.client)
        attr, xloc, epoch = self._ns.open(who, req.volume, req.ino, req.flags, req.client)
        if xloc is None:
            if not stat.S_ISREG(attr.mode):
                raise XfsError(errno.EINVAL, f"inode {req.ino} has no data to open")
            # made by a create under a directory lease while no OSD was known: placed
            # now (ENOSPC if still none, as a write to a full file system)
            placed = self._place(req.volume, self._ns.file_dir(req.volume, req.ino))
            attr, xloc, epoch = self._ns.give_layout(req.volume, req.ino, placed)
        rights = rights_for_flags(req.flags)
        return self._layout(peer, who, req.volume, attr, xloc, epoch, rights, want=req.want)

    async def unlink(self, peer: Identity, req: Remove) -> Removed:
        who = self._as(peer, req.volume, req.parent)
        await self._dir_recall(who, req.volume, req.parent, req.client)
        was = self._dirseq(req.volume, req.parent)  # (no await from here to the reply)
        if self._ns.unlink(who, req.volume, req.parent, req.name) is not None:
            self._on_deletion()
        return Removed(self._parent_after(who, req.volume, req.parent), was)

    async def rmdir(self, peer: Identity, req: Remove) -> Empty:
        who = self._as(peer, req.volume, req.parent)
        # (the directory removed must be seen as it is, its queued creates in it)
        await self._dir_recalls(
            who, req.volume, [(req.parent, req.client)], [(req.parent, req.name)]
        )
        self._ns.rmdir(who, req.volume, req.parent, req.name)
        return Empty()

    async def rename(self, peer: Identity, req: Rename) -> Empty:
        who = self._as(peer, req.volume, req.parent, req.new_parent)
        await self._dir_recalls(
            who,
            req.volume,
            [(req.parent, req.client), (req.new_parent, req.client)],
            [(req.new_parent, req.new_name)],  # a directory replaced
        )
        if (
            self._ns.rename(
                who, req.volume, req.parent, req.name, req.new_parent, req.new_name, req.flags
            )
            is not None
        ):
            self._on_deletion()
        return Empty()

    async def link(self, peer: Identity, req: Link) -> Attr:
        who = self._as(peer, req.volume, req.ino, req.new_parent)
        await self._dir_recall(who, req.volume, req.new_parent, req.client)
        return self._ns.link(who, req.volume, req.ino, req.new_parent, req.new_name)

    async def symlink(self, peer: Identity, req: Symlink) -> Attr:
        who = self._as(peer, req.volume, req.parent)
        await self._dir_recall(who, req.volume, req.parent, req.client)
        return self._ns.symlink(who, req.volume, req.parent, req.name, req.target)

    async def readlink(self, peer: Identity, req: Ino) -> Target:
        who = self._as(peer, req.volume, req.ino)
        return Target(self._ns.readlink(who, req.volume, req.ino))

    async def readdir(self, peer: Identity, req: ReadDir) -> DirEntries:
        who = self._as(peer, req.volume, req.ino)
        await self._dir_recall(who, req.volume, req.ino, req.client)
        limit = max(1, min(req.limit, 4096))
        return DirEntries(self._ns.readdir(who, req.volume, req.ino, req.cursor, limit))

    async def sync(self, peer: Identity, req: VolumeName) -> Empty:
        self._as(peer, req.name)
        if self._sync is None:
            raise XfsError(errno.ENOSYS, "this MRC has no journal to sync")
        await self._sync()
        return Empty()

    async def statfs(self, peer: Identity, req: VolumeName) -> StatFS:
        who = self._as(peer, req.name)
        files, _ = self._ns.statfs_counts(req.name)
        osds = [o for o in self._registry.all() if o.alive]
        total = sum(o.total for o in osds)
        free = sum(o.free for o in osds)
        files_total, files_free = files + (1 << 32), 1 << 32
        # a quota on the caller's inodes or on the volume: df shows the tightest one
        limits, used = self._ns.quota_view(self._volume(req.name)[0], who.principal)
        tightest = quotas.tightest(limits, used, "bytes")
        if tightest is not None:
            total, free = min(total, tightest[0]), min(free, tightest[1])
        tightest = quotas.tightest(limits, used, "files")
        if tightest is not None:
            files_total, files_free = tightest
        return StatFS(
            STATFS_BLOCK, total // STATFS_BLOCK, free // STATFS_BLOCK, files_total, files_free
        )

    # ------------------------------------------------------------------ quotas
    async def quota_set(self, peer: Identity, req: QuotaSet) -> Empty:
        owner = self._volume(req.volume)[2]
        if not roles.is_super_of(peer, roles.vo_of(owner)):
            raise XfsError(
                errno.EPERM,
                f"{peer.principal} may not set quotas on volume {req.volume!r}: it needs role "
                f"super of VO {roles.vo_of(owner)!r}",
            )
        limit = quotas.Limit(req.files, req.bytes)
        self._ns.set_quota(req.volume, req.principal, limit)
        if req.files is not None:
            # creates made under a directory lease would pass the new limit unseen: the
            # leases it holds come back (and no new ones are granted, see dir_lease)
            who = self._as(peer, req.volume)
            for ino in self._ns.dir_leases_in(self._volume(req.volume)[0], req.principal):
                await self._dir_recall(who, req.volume, ino, None)
        self._audit.record(
            audit.ADMIN,
            peer.principal,
            "quota_set",
            volume=req.volume,
            principal=req.principal,
            files=req.files,
            bytes=req.bytes,
        )
        return Empty()

    async def quota_list(self, peer: Identity, req: VolumeName) -> QuotaList:
        """The volume's quotas: all of them for its VO's super users and advanced users,
        else the volume's own and the caller's."""
        who = self._as(peer, req.name)
        owner = self._volume(req.name)[2]
        sees_all = roles.is_super_of(who, roles.vo_of(owner)) or who.role is Role.ADVANCED
        return QuotaList(
            [
                _quota_info(*q)
                for q in self._ns.quotas_of(req.name)
                if sees_all or q[1] in (quotas.VOLUME, who.principal)
            ]
        )

    # ------------------------------------------------------------------ xattrs
    async def getxattr(self, peer: Identity, req: XattrGet) -> XattrValue:
        who = self._as(peer, req.volume, req.ino)
        if req.name in policies.NAMES and self._policies is not None:
            return XattrValue(self._policies.get(who, req.volume, req.ino, req.name))
        return XattrValue(self._ns.getxattr(who, req.volume, req.ino, req.name))

    async def setxattr(self, peer: Identity, req: XattrSet) -> Empty:
        who = self._as(peer, req.volume, req.ino)
        await self._dir_recall(who, req.volume, req.ino, None)  # (a default ACL, say)
        if req.name in policies.NAMES and self._policies is not None:
            self._policies.set(who, req.volume, req.ino, req.name, req.value, self._on_xloc)
            self._audit.record(
                audit.ADMIN,
                peer.principal,
                "policy_set",
                volume=req.volume,
                ino=req.ino,
                name=req.name.decode(errors="replace"),
                value=req.value[:512].decode(errors="replace"),
                **_via(peer),
            )
            return Empty()
        self._ns.setxattr(who, req.volume, req.ino, req.name, req.value, req.flags)
        return Empty()

    async def listxattr(self, peer: Identity, req: Ino) -> XattrNames:
        who = self._as(peer, req.volume, req.ino)
        return XattrNames(self._ns.listxattr(who, req.volume, req.ino))

    async def removexattr(self, peer: Identity, req: XattrGet) -> Empty:
        who = self._as(peer, req.volume, req.ino)
        await self._dir_recall(who, req.volume, req.ino, None)
        self._ns.removexattr(who, req.volume, req.ino, req.name)
        return Empty()

    # ------------------------------------------------------------------ OSDs
    async def osd_heartbeat(self, peer: Identity, req: Heartbeat) -> HeartbeatReply:
        if peer.principal != f"osd:{req.uuid}":
            raise XfsError(errno.EACCES, f"{peer.principal} may not report for OSD {req.uuid}")
        self._registry.heartbeat(req.uuid, req.address, req.free, req.total, req.labels)
        return HeartbeatReply(
            self._xcaps.ring.public_keys(), self._osd_lease, self._registry.all_addresses()
        )

    async def osd_list(self, peer: Identity, req: Empty) -> OSDList:
        return OSDList(self._registry.all())

    async def status(self, peer: Identity, req: Empty) -> MRCStatus:
        repair = self._repair()
        if repair is not None:  # (counted at the healer's last round: not an OSD undrained since)
            draining = self._registry.draining
            left = {u: n for u, n in repair.draining.items() if u in draining}
            repair = dataclasses.replace(repair, draining=left)
        return MRCStatus(
            self._uuid,
            self._ns.list_volumes(),
            self._registry.all(),
            self._ns.pending_count(),
            repair,
            self._scrub(),
            [_quota_info(*q) for q in self._ns.quotas_of()],
        )

    # ------------------------------------------------------------------ delegations
    def _delegations_of(self, peer: Identity) -> Delegations:
        if isinstance(peer, Delegated):
            raise XfsError(
                errno.EPERM,
                f"{peer.worker} acts under delegation {peer.delegation}: it may not manage "
                "delegations",
            )
        if self._delegations is None:
            raise XfsError(errno.EOPNOTSUPP, "this MRC keeps no delegations")
        return self._delegations

    async def delegate(self, peer: Identity, req: Delegate) -> DelegationInfo:
        delegations = self._delegations_of(peer)
        who = self._as(peer, req.volume, req.ino)
        attr = self._ns.getattr(who, req.volume, req.ino)
        if not stat.S_ISDIR(attr.mode):
            raise XfsError(errno.ENOTDIR, f"inode {req.ino} is not a directory")
        if attr.owner != who.principal:  # the owner may delegate; others need w and x
            self._ns.access(who, req.volume, req.ino, os.W_OK | os.X_OK)
        d, token = delegations.create(
            who, self._volume(req.volume)[0], req.ino, req.grantee, req.lifetime, req.path
        )
        self._audit.record(
            audit.ADMIN,
            peer.principal,
            "delegate",
            delegation=d.id,
            grantee=d.grantee,
            volume=req.volume,
            ino=d.root,
            expires=d.expires_ns / 1e9,
        )
        return dataclasses.replace(_info(d, req.volume), token=token)

    async def assume(
        self, peer: Identity, req: DelegationToken
    ) -> tuple[DelegationInfo, Callable[[], Identity]]:
        delegations = self._delegations_of(peer)
        d = delegations.assume(peer, req.token)
        self._audit.record(
            audit.ADMIN, peer.principal, "assume", delegation=d.id, grantor=d.grantor
        )
        return _info(d, delegations.volume_name(d)), delegations.acting(peer, d.id)

    async def delegation_revoke(self, peer: Identity, req: DelegationId) -> Empty:
        d = self._delegations_of(peer).revoke(peer, req.id)
        self._audit.record(
            audit.ADMIN, peer.principal, "delegation_revoke", delegation=d.id, grantor=d.grantor
        )
        return Empty()

    async def delegation_list(self, peer: Identity, req: Empty) -> DelegationList:
        visible = self._delegations_of(peer).visible(peer)
        return DelegationList([_info(d, volume) for d, volume in visible])

    # ------------------------------------------------------------------ clients, locks
    async def client_open(self, peer: Identity, req: Empty) -> ClientLease:
        client, _ = self._ns.client_open(peer, self._lease_ns)
        return ClientLease(client, self._lease_ns)

    async def client_renew(self, peer: Identity, req: ClientId) -> ClientLease:
        self._ns.client_renew(peer, req.client, self._lease_ns)
        return ClientLease(req.client, self._lease_ns)

    async def client_close(self, peer: Identity, req: ClientId) -> Empty:
        self._ended(self._ns.client_close(peer, req.client))
        self._recaller.forget(req.client)
        return Empty()

    def _ended(self, ended: Ended) -> None:
        self._waiters.changed(ended.unlocked)
        if ended.pending:
            self._on_deletion()

    async def close(self, peer: Identity, req: Close) -> Empty:
        # (no inode check: closing ends the caller's own registration, of an orphan too)
        self._close(self._as(peer, req.volume), req.volume, req.ino, req.client)
        return Empty()

    async def close_files(self, peer: Identity, req: CloseFiles) -> Empty:
        if len(req.inos) > MAX_CLOSE_FILES:
            raise XfsError(errno.EINVAL, f"more than {MAX_CLOSE_FILES} inodes in one close")
        who = self._as(peer, req.volume)
        for ino in req.inos:
            self._close(who, req.volume, ino, req.client)
        return Empty()

    def _close(self, who: Identity, volume: str, ino: int, client: str) -> None:
        self._vouchers.give_back(self._volume(volume)[0], ino, who.fingerprint)
        if self._ns.close(who, volume, ino, client) is not None:
            self._on_deletion()
        elif (
            self._policies is not None
            and not self._ns.is_open(volume, ino)
            and self._policies.seal_on_close(volume, ino)
        ):
            self._on_xloc()
        self._waiters.changed([(self._volume(volume)[0], ino)])

    async def append(self, peer: Identity, req: Append) -> Offset:
        who = self._as(peer, req.volume, req.ino)
        append = functools.partial(
            self._ns.append, who, req.volume, req.ino, req.client, req.length, req.lease
        )
        try:
            offset, leased = append()
        except XfsError as e:
            if e.code != errno.EAGAIN:
                raise
            # another client holds the lease; the store found the caller a writer (EBADF
            # before EAGAIN), so it may make it give the lease back
            await self._recall(who, req.volume, req.ino, req.client, may_write=True)
            offset, leased = append()  # (no await since the recall: no new holder)
        return Offset(offset, leased)

    async def _recall(
        self, who: Identity, volume: str, ino: int, but: str | None, *, may_write: bool = False
    ) -> None:
        """Get the inode's append leases back from every client but ``but``, before
        ``who`` becomes a writer of it or changes its size. Only a caller that may write
        the file makes holders give them back (``may_write``: already known; else its
        write permission is checked here), so nobody else can force recalls."""
        vid = self._volume(volume)[0]
        if not self._ns.append_lease_holders(vid, ino, but):
            return
        if not may_write:
            self._ns.access(who, volume, ino, os.W_OK)
        await self._recaller.recall(
            APPEND,
            volume,
            vid,
            ino,
            lambda: self._ns.append_lease_holders(vid, ino, but),
            lambda: self._ns.lease_revoke(vid, ino, but),
        )

    async def lease_recalls(self, peer: Identity, req: ClientId) -> Recalls:
        self._ns.check_client(peer, req.client)
        asked = await self._recaller.poll(req.client)
        return Recalls(
            [Ino(volume, ino) for kind, volume, ino in asked if kind == APPEND],
            [Ino(volume, ino) for kind, volume, ino in asked if kind == DIR],
        )

    async def lease_return(self, peer: Identity, req: LeaseReturn) -> Empty:
        self._as(peer, req.volume)
        vid = self._volume(req.volume)[0]
        self._ns.lease_return(peer, vid, req.ino, req.client)
        self._waiters.changed([(vid, req.ino)])
        return Empty()

    # ------------------------------------------------------------------ directory leases
    async def dir_lease(self, peer: Identity, req: DirLeaseAsk) -> DirLease:
        """Grant the lease of a directory (docs/design/leases.md, "Directory leases"), if
        nothing about it needs the MRC at each create: no other holder, no default ACL,
        files not sealed on close, no delegated caller."""
        who = self._as(peer, req.volume, req.ino)
        if isinstance(peer, Delegated):
            return DirLease(False)
        vid = self._volume(req.volume)[0]
        if self._ns.dir_lease_holders(vid, req.ino, req.client):
            return DirLease(False)
        if self._recaller.recalling(vid, req.ino):
            return DirLease(False)  # (a call waits to see the directory unleased)
        try:
            if self._place(req.volume, req.ino).seal_on_close:
                return DirLease(False)
        except XfsError:
            return DirLease(False)  # (no OSD for new files: each create says so)
        lease = self._ns.dir_lease_grant(who, req.volume, req.ino, req.client)
        if not lease.granted:
            return lease
        # (no await since the grant: the number is the one the lease starts from)
        return dataclasses.replace(lease, seq=self._dirseq(req.volume, req.ino))

    async def dir_lease_return(self, peer: Identity, req: LeaseReturn) -> Empty:
        self._as(peer, req.volume)
        vid = self._volume(req.volume)[0]
        self._ns.dir_lease_return(peer, vid, req.ino, req.client)
        self._waiters.changed([(vid, req.ino)])
        return Empty()

    async def reserve_inos(self, peer: Identity, req: InoAsk) -> InoRange:
        who = self._as(peer, req.volume)
        first, count = self._ns.reserve_inos(who, req.volume, req.client, req.count)
        return InoRange(first, count)

    async def create_many(self, peer: Identity, req: CreateMany) -> MadeMany:
        """Creates a client made under its directory leases, in order; each is made (or
        found made by an earlier sending) or refused on its own, as ``create`` would."""
        await self._settled()
        if len(req.files) > MAX_CREATE_MANY:
            raise XfsError(errno.EINVAL, f"{len(req.files)} files in one create_many")
        parents = {f.parent for f in req.files}
        if not any(self._recall_wanted(peer, req.volume, p, req.client) for p in parents):
            # the common case (the sender holds the leases): one transaction for all,
            # each create a savepoint of it, and no await until it is committed
            with self._ns.batch():
                return MadeMany([self._create_one(peer, req, f) for f in req.files])
        made: list[Made] = []
        for f in req.files:
            try:
                who = self._as(peer, req.volume, f.parent)
                await self._dir_recall(who, req.volume, f.parent, req.client)
            except XfsError as e:
                made.append(self._refused(peer, MRC.create_many, e))
                continue
            made.append(self._create_one(peer, req, f))
        return MadeMany(made)

    def _recall_wanted(self, peer: Identity, volume: str, parent: int, client: str) -> bool:
        """Whether a create in ``parent`` must first recall another client's lease."""
        try:
            who = self._as(peer, volume, parent)
        except XfsError:
            return False  # (refused when made)
        return self._recall_from(who, volume, parent, client) is not None

    def _create_one(self, peer: Identity, req: CreateMany, f: NewFile) -> Made:
        """One create of ``create_many`` (its directory's lease recalled before): made,
        found made by an earlier sending, or refused."""
        try:
            who = self._as(peer, req.volume, f.parent)
            if f.mode & ~0o777:
                raise XfsError(errno.EINVAL, f"mode {f.mode:#o} of a create under a lease")
            try:
                placed: XLocSet | None = self._place(req.volume, f.parent)
            except XfsError as e:
                if e.code != errno.ENOSPC:
                    raise
                # (no OSD known yet, after an MRC restart, say): the file was
                # acknowledged, so it is made without a layout; its first open
                # places it (xfs/client/dirleases.py)
                placed = None
            attr, xloc, epoch = self._ns.create(
                who,
                req.volume,
                f.parent,
                f.name,
                f.mode,
                f.flags | os.O_CREAT | os.O_EXCL,
                f.umask,
                placed,
                req.client,
                ino=f.ino,
                time_ns=f.time_ns,
            )
            if xloc is None:
                return Made()  # made, with no layout yet
            rights = rights_for_flags(f.flags)
            layout = self._layout(peer, who, req.volume, attr, xloc, epoch, rights, Basis.CREATED)
            return Made(layout)
        except XfsError as e:
            return self._refused(peer, MRC.create_many, e)

    async def unlink_many(self, peer: Identity, req: UnlinkMany) -> MadeMany:
        """Unlinks a client made under its directory leases, in order, each on its own
        as ``unlink`` would (an entry already gone: sent before, done)."""
        if len(req.files) > MAX_CREATE_MANY:
            raise XfsError(errno.EINVAL, f"{len(req.files)} files in one unlink_many")
        self._ns.check_client(peer, req.client)
        done: list[Made] = []
        deleted = False
        for f in req.files:
            try:
                who = self._as(peer, req.volume, f.parent)
                await self._dir_recall(who, req.volume, f.parent, req.client)
                if self._ns.unlink(who, req.volume, f.parent, f.name, f.ino) is not None:
                    deleted = True
                done.append(Made())
            except XfsError as e:
                done.append(self._refused(peer, MRC.unlink_many, e))
        if deleted:
            self._on_deletion()
        return MadeMany(done)

    def _refused(self, peer: Identity, method: Method[Any, Any], e: XfsError) -> Made:
        """One file of a batch refused: its answer, and the audit record the dispatcher
        writes for a refused call."""
        if e.code in (errno.EACCES, errno.EPERM):
            self._audit.record(
                audit.DENY,
                peer.principal,
                method.wire_name,
                errno.errorcode[e.code],
                why=e.message,
                **_via(peer),
            )
        return Made(error=e.code, message=str(e))

    async def _dir_recall(self, who: Identity, volume: str, ino: int, but: str | None) -> None:
        """Get the directory lease of ``ino`` back from its holder unless that is ``but``,
        before a call that reads or changes the directory's entries. Only a caller that
        may search or list the directory can make the holder give it back."""
        wanted = self._recall_from(who, volume, ino, but)
        if wanted is None:
            return
        vid, but = wanted
        await self._recaller.recall(
            DIR,
            volume,
            vid,
            ino,
            lambda: self._ns.dir_lease_holders(vid, ino, but),
            lambda: self._ns.dir_lease_revoke(vid, ino, but),
        )

    def _recall_from(
        self, who: Identity, volume: str, ino: int, but: str | None
    ) -> tuple[str, str | None] | None:
        """(volume id, the client spared) if ``_dir_recall`` must recall the lease of
        ``ino`` from another client; None if not (no await: see ``create_many``)."""
        vid = self._volume(volume)[0]
        held = self._ns.dir_lease_holders(vid, ino, None)
        if not held:
            return None
        if but is not None and but in held:
            try:
                self._ns.check_client(who, but)  # (only its own client spares the caller)
            except XfsError:
                but = None
            if held == [but]:
                return None
        try:
            self._ns.access(who, volume, ino, os.X_OK)
        except XfsError:
            try:
                self._ns.access(who, volume, ino, os.R_OK)
            except XfsError:
                return None  # (the call itself is refused)
        return vid, but

    async def _dir_recalls(
        self,
        who: Identity,
        volume: str,
        dirs: list[tuple[int, str | None]],
        entries: list[tuple[int, bytes]],
    ) -> None:
        """Recall the leases of several directories (``dirs``: ino and the caller's
        client) and of the directories ``entries`` lead to, from any holder (its own
        holder too: before such a directory is removed or replaced). A recall awaits, and
        meanwhile a directory recalled before may be leased again: so they are made again
        until none is held at once (no await from that test to the caller's change)."""
        vid = self._volume(volume)[0]
        for _ in range(8):
            wanted = list(dirs)
            for parent, name in entries:
                try:
                    attr = self._ns.lookup(who, volume, parent, name)
                except XfsError:
                    continue
                if stat.S_ISDIR(attr.mode):
                    wanted.append((attr.ino, None))
            held = [(i, but) for i, but in wanted if self._ns.dir_lease_holders(vid, i, but)]
            if not held:
                return
            for ino, but in held:
                await self._dir_recall(who, volume, ino, but)
        raise XfsError(errno.EAGAIN, "the directories' leases keep being taken: try again")

    async def lock(self, peer: Identity, req: LockArgs) -> LockReply:
        who = self._as(peer, req.volume, req.ino)
        request = _lock_request(req)
        key = (self._volume(req.volume)[0], req.ino)
        holder: locks.Held | None = None
        with trio.move_on_after(min(max(req.wait, 0.0), MAX_LOCK_WAIT)):
            while True:
                # take the event before testing: no await in between (see LockWaiters)
                changed = self._waiters.event(key)
                holder = self._ns.lock(who, req.volume, req.ino, request)
                if holder is None:
                    self._waiters.changed([key])
                    return LockReply(True)
                if req.wait <= 0:
                    break
                await changed.wait()
        return LockReply(False, None if holder is None else _holder(holder, req.client))

    async def test_lock(self, peer: Identity, req: LockArgs) -> LockReply:
        who = self._as(peer, req.volume, req.ino)
        holder = self._ns.test_lock(who, req.volume, req.ino, _lock_request(req))
        return LockReply(holder is None, None if holder is None else _holder(holder, req.client))

    async def release_locks(self, peer: Identity, req: ReleaseLocks) -> Empty:
        if req.family not in (locks.POSIX, locks.FLOCK):
            raise XfsError(errno.EINVAL, f"bad lock family {req.family!r}")
        who = self._as(peer, req.volume)  # (letting go of its own locks: no inode check)
        if self._ns.release_owner(who, req.volume, req.ino, req.client, req.owner, req.family):
            self._waiters.changed([(self._volume(req.volume)[0], req.ino)])
        return Empty()


def _writes(flags: int) -> bool:
    return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & os.O_TRUNC)


def _via(peer: Identity) -> dict[str, str]:
    """Audit detail of a request made under a delegation: the worker that made it."""
    return {"via": peer.worker} if isinstance(peer, Delegated) else {}


def _info(d: Delegation, volume: str) -> DelegationInfo:
    return DelegationInfo(
        d.id,
        d.grantor,
        d.grantee,
        volume,
        d.root,
        d.path,
        d.created_ns / 1e9,
        d.expires_ns / 1e9,
        None if d.revoked_ns is None else d.revoked_ns / 1e9,
    )


def _lock_request(req: LockArgs) -> locks.Request:
    if req.family not in (locks.POSIX, locks.FLOCK):
        raise XfsError(errno.EINVAL, f"bad lock family {req.family!r}")
    if req.mode not in (locks.READ, locks.WRITE, locks.UNLOCK):
        raise XfsError(errno.EINVAL, f"bad lock mode {req.mode!r}")
    if not 0 <= req.owner < 2**64:
        raise XfsError(errno.EINVAL, f"bad lock owner {req.owner}")
    return locks.Request(req.client, req.owner, req.family, req.mode, req.start, req.end, req.pid)


def _holder(held: locks.Held, client: str) -> LockHolder:
    """The lock in the way; a pid means something only on the holder's own node."""
    return LockHolder(held.mode, held.start, held.end, held.pid if held.client == client else 0)


def _quota_info(volume: str, principal: str, limit: quotas.Limit, used: quotas.Use) -> QuotaInfo:
    return QuotaInfo(volume, principal, limit.files, limit.bytes, used.files, used.bytes)
