"""POSIX ACLs as the mount shows them: the xattrs that getfacl/setfacl and ``xfs acl`` use.

The MRC keeps ACLs keyed on grid names (``xfs.mrc.acl``); a node shows them two ways:

- ``system.posix_acl_access`` and ``system.posix_acl_default``, in Linux's binary form
  (a version-2 header, then entries of tag u16, perm u16, id u32, little-endian), whose
  ids are local: named entries go through the node's ``IdentityMap``. A principal or
  group this node cannot show gets the overflow id; several grid names on one local id
  show as one entry with the union of their permissions. When such an ACL is written
  back (setfacl reads, edits and writes the whole ACL), an overflow-id entry stands for
  the stored entries of grid names that show as the overflow id, which are kept as they
  are (if there are none, it is the overflow id's own account, ``nobody``); a local id
  that names no grid principal or group is refused (EINVAL).
- ``system.xfs.acl`` and ``system.xfs.acl_default`` (not listed), in getfacl's text
  form with grid names (``user:alice@physics:rw-``). Read, the access one always has an
  ACL (the mode's if no ACL is stored) after ``# owner:`` and ``# group:`` comments;
  written, the text replaces the whole ACL (no entries: removes it).

The translations are pure functions; the coroutines at the end do the MRC calls.
"""

from __future__ import annotations

import errno
import struct

from xfs.client.idmap import OVERFLOW_ID, IdentityMap
from xfs.client.session import Session
from xfs.mrc import acl as acls
from xfs.mrc.acl import Acl, Entry, Tag
from xfs.proto.errors import XfsError

LINUX_VERSION = 2
UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_OVERFLOW = struct.pack("<I", OVERFLOW_ID)  # (a cheap test before reading the stored ACL)

TEXT_ACCESS = b"system.xfs.acl"
TEXT_DEFAULT = b"system.xfs.acl_default"
_STORED = {
    acls.ACCESS: acls.ACCESS,
    acls.DEFAULT: acls.DEFAULT,
    TEXT_ACCESS: acls.ACCESS,
    TEXT_DEFAULT: acls.DEFAULT,
}
NAMES = frozenset(_STORED)
"""The xattr names this module serves (the others go to the MRC as they are)."""


# ------------------------------------------------------------------ Linux's form
def _local_id(idmap: IdentityMap, e: Entry) -> int:
    if e.tag == Tag.USER:
        return idmap.uid(e.name)
    if e.tag == Tag.GROUP:
        return idmap.gid(e.name)
    return UNDEFINED_ID


def to_linux(acl: Acl, idmap: IdentityMap) -> bytes:
    """Linux's xattr value of ``acl``, ids local, entries sorted as the kernel wants."""
    perms: dict[tuple[int, int], int] = {}
    for e in acl.entries:
        key = (int(e.tag), _local_id(idmap, e))
        perms[key] = perms.get(key, 0) | e.perm
    body = b"".join(_ENTRY.pack(tag, perm, lid) for (tag, lid), perm in sorted(perms.items()))
    return _HEADER.pack(LINUX_VERSION) + body


def _grid_name(idmap: IdentityMap, tag: Tag, lid: int) -> str:
    """The grid name of a local id in a named entry (EINVAL if it names none)."""
    if tag == Tag.USER:
        name = idmap.principal(lid)
        back = idmap.uid(name)
    else:
        name = idmap.group(lid)
        back = idmap.gid(name)
    if back != lid:
        what = "uid" if tag == Tag.USER else "gid"
        raise XfsError(errno.EINVAL, f"local {what} {lid} names no grid {tag.name.lower()}")
    return name


def from_linux(value: bytes, idmap: IdentityMap, current: Acl | None) -> Acl | None:
    """The ACL (grid names) of Linux's xattr ``value``; None if it has no entries (a
    removal). ``current`` is the stored ACL, whose entries an overflow-id entry keeps."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise XfsError(errno.EINVAL, f"POSIX ACL xattr of {len(value)} bytes")
    (version,) = _HEADER.unpack_from(value)
    if version != LINUX_VERSION:
        raise XfsError(errno.EOPNOTSUPP, f"POSIX ACL xattr version {version}")
    entries: list[Entry] = []
    for tag_value, perm, lid in _ENTRY.iter_unpack(value[_HEADER.size :]):
        try:
            tag = Tag(tag_value)
        except ValueError:
            raise XfsError(errno.EINVAL, f"POSIX ACL entry tag {tag_value:#x}") from None
        if tag not in (Tag.USER, Tag.GROUP):
            entries.append(Entry(tag, "", perm))
        elif lid == OVERFLOW_ID:
            kept = [
                e
                for e in (current.entries if current is not None else ())
                if e.tag == tag and _local_id(idmap, e) == OVERFLOW_ID
            ]
            if kept:
                entries.extend(kept)
            else:
                entries.append(Entry(tag, _grid_name(idmap, tag, lid), perm))
        else:
            entries.append(Entry(tag, _grid_name(idmap, tag, lid), perm))
    return Acl.of(entries) if entries else None


# ------------------------------------------------------------------ text form
def text_of(acl: Acl, owner: str | None = None, group: str | None = None) -> bytes:
    header = ""
    if owner is not None:
        header += f"# owner: {owner}\n"
    if group is not None:
        header += f"# group: {group}\n"
    return (header + acls.to_text(acl)).encode()


def from_text(value: bytes) -> Acl | None:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        raise XfsError(errno.EINVAL, "ACL text is not UTF-8") from None
    return acls.parse(text)


# ------------------------------------------------------------------ with a session
async def _stored(session: Session, ino: int, name: bytes) -> Acl | None:
    try:
        return acls.decode(await session.getxattr(ino, name))
    except XfsError as e:
        if e.code == errno.ENODATA:
            return None
        raise


async def getxattr(session: Session, idmap: IdentityMap, ino: int, name: bytes) -> bytes:
    stored = _STORED[name]
    acl = await _stored(session, ino, stored)
    if name == TEXT_ACCESS:
        attr = await session.getattr(ino)
        return text_of(acl or acls.from_mode(attr.mode), attr.owner, attr.group)
    if acl is None:
        raise XfsError(errno.ENODATA, f"no ACL {name.decode()} on inode {ino}")
    return text_of(acl) if name == TEXT_DEFAULT else to_linux(acl, idmap)


async def setxattr(
    session: Session, idmap: IdentityMap, ino: int, name: bytes, value: bytes
) -> None:
    """Set (or, with no entries, remove) an ACL. The overflow-id rule of Linux's form
    reads the stored ACL first: a concurrent change of the entries it keeps may be lost,
    as with any read-modify-write of an ACL by setfacl."""
    stored = _STORED[name]
    if name in (TEXT_ACCESS, TEXT_DEFAULT):
        acl = from_text(value)
    else:
        current = await _stored(session, ino, stored) if _OVERFLOW in value else None
        acl = from_linux(value, idmap, current)
    if acl is None:
        await session.removexattr(ino, stored)
    else:
        await session.setxattr(ino, stored, acls.encode(acl))


async def removexattr(session: Session, ino: int, name: bytes) -> None:
    await session.removexattr(ino, _STORED[name])
