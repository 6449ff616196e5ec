"""Permission decisions of the MRC, as Linux makes them. Pure: no I/O, no clock.

Each function answers one question about a caller (an ``Identity`` taken from a verified
certificate) and an inode's ``Attr``; the namespace turns a refusal into an ``XfsError``
naming the entry. A caller whose certificate carries role ``super`` plays root
(``Identity.is_super``); nobody else has any privilege.
"""

from __future__ import annotations

import errno
import os
import stat

from xfs.mrc import acl as acls
from xfs.proto.records import Attr, Identity

R_OK = os.R_OK  # 4
W_OK = os.W_OK  # 2
X_OK = os.X_OK  # 1

_EXEC_BITS = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
_ALL_PERMS = 0o7777


# ------------------------------------------------------------------------- mode bits
def may(caller: Identity, attr: Attr, mask: int, acl: acls.Acl | None = None) -> bool:
    """May ``caller`` access ``attr`` for every bit of ``mask`` (R_OK|W_OK|X_OK)?

    POSIX order: the owner class if the caller owns the inode, else the group class if
    the caller is in its group, else other; only that one class counts. With an access
    ``acl``, POSIX.1e order instead (``acl.permits``). A super caller may always read
    and write, and execute (search) if the inode is a directory or has any execute bit.
    """
    if mask & ~(R_OK | W_OK | X_OK):
        raise ValueError(f"bad access mask {mask:#o}")
    if caller.is_super:
        return not (mask & X_OK) or stat.S_ISDIR(attr.mode) or bool(attr.mode & _EXEC_BITS)
    if acl is not None:
        return acls.permits(
            acl, attr.mode, attr.owner, attr.group, caller.principal, caller.groups, mask
        )
    if caller.principal == attr.owner:
        bits = (attr.mode >> 6) & 7
    elif attr.group in caller.groups:
        bits = (attr.mode >> 3) & 7
    else:
        bits = attr.mode & 7
    return bits & mask == mask


def is_owner_or_super(caller: Identity, attr: Attr) -> bool:
    return caller.is_super or caller.principal == attr.owner


def in_group(caller: Identity, group: str) -> bool:
    return caller.is_super or group in caller.groups


def sticky_allows(caller: Identity, directory: Attr, entry: Attr) -> bool:
    """May ``caller`` remove or rename ``entry`` out of ``directory`` (restricted deletion)?

    Only checks the sticky rule; the W|X permission on the directory is separate.
    """
    if not directory.mode & stat.S_ISVTX:
        return True
    return caller.is_super or caller.principal in (entry.owner, directory.owner)


# --------------------------------------------------------------------- new entries
def default_group(caller: Identity) -> str:
    """The group of what the caller creates outside setgid directories."""
    if caller.groups:
        return caller.groups[0]
    return f"{caller.principal.split('@', 1)[0]}@{caller.vo}"


def new_entry(
    caller: Identity, parent: Attr, perm: int, umask: int, is_dir: bool
) -> tuple[str, str, int]:
    """(owner, group, permission bits) of an entry ``caller`` creates in ``parent``.

    ``perm`` is the requested mode (its type bits are ignored). In a setgid directory the
    entry takes the directory's group, and a new directory inherits the setgid bit; a
    file there keeps a requested group-executable setgid bit only if the caller is in
    that group (Linux ``mode_strip_sgid``).
    """
    bits = perm & ~umask & _ALL_PERMS
    if parent.mode & stat.S_ISGID:
        group = parent.group
        if is_dir:
            bits |= stat.S_ISGID
        elif bits & stat.S_ISGID and bits & stat.S_IXGRP and not in_group(caller, group):
            bits &= ~stat.S_ISGID
    else:
        group = default_group(caller)
    return caller.principal, group, bits


# ----------------------------------------------------------------------- setattr
def may_chmod(caller: Identity, attr: Attr) -> bool:
    return is_owner_or_super(caller, attr)


def chmod_result(caller: Identity, attr: Attr, perm: int, group: str) -> int:
    """The full mode after a permitted chmod to ``perm`` of an inode in ``group``.

    The type bits are kept; a non-super caller outside the (new) group loses S_ISGID.
    """
    bits = perm & _ALL_PERMS
    if not in_group(caller, group):
        bits &= ~stat.S_ISGID
    return stat.S_IFMT(attr.mode) | bits


def may_chown(caller: Identity, attr: Attr, owner: str | None, group: str | None) -> bool:
    """May ``caller`` set the owner and/or group (None: unchanged) of ``attr``?

    Only super gives a file away; the owner may "change" the owner to itself, and may
    set the group to the current one or to one of its own groups.
    """
    if caller.is_super:
        return True
    if caller.principal != attr.owner:
        return False
    if owner is not None and owner != attr.owner:
        return False
    return group is None or group == attr.group or group in caller.groups


def chown_result(caller: Identity, attr: Attr) -> int:
    """The mode after a permitted chown/chgrp, as Linux leaves it: anything but a
    directory loses S_ISUID (whoever the caller), and S_ISGID if it is group-executable
    or the caller is neither in the current group nor super (``setattr_should_drop_sgid``).
    """
    mode = attr.mode
    if stat.S_ISDIR(mode):
        return mode
    mode &= ~stat.S_ISUID
    if mode & stat.S_ISGID and (mode & stat.S_IXGRP or not in_group(caller, attr.group)):
        mode &= ~stat.S_ISGID
    return mode


def may_drop_setid(caller: Identity, attr: Attr, perm: int, acl: acls.Acl | None = None) -> bool:
    """Is the chmod of a non-directory to ``perm`` only the kernel clearing S_ISUID and/or
    S_ISGID for a writer (it does so on write and truncate without CAP_FSETID), by a
    caller who may write the file? Such a chmod is allowed to non-owners."""
    if stat.S_ISDIR(attr.mode):
        return False
    old = attr.mode & _ALL_PERMS
    dropped = old & ~perm
    return (
        perm & ~old == 0
        and dropped != 0
        and dropped & ~(stat.S_ISUID | stat.S_ISGID) == 0
        and may(caller, attr, W_OK, acl)
    )


def link_denial(caller: Identity, attr: Attr, acl: acls.Acl | None = None) -> int | None:
    """None if ``caller`` may make a new hard link to ``attr``, else errno.

    Directories: EPERM. Others' files: Linux's ``protected_hardlinks`` rule, which xfs
    always applies: only a regular file that is not set-user-ID nor set-group-ID and
    executable, and that the caller may read and write (EPERM otherwise).
    """
    if stat.S_ISDIR(attr.mode):
        return errno.EPERM
    if is_owner_or_super(caller, attr):
        return None
    mode = attr.mode
    if (
        not stat.S_ISREG(mode)
        or mode & stat.S_ISUID
        or (mode & (stat.S_ISGID | stat.S_IXGRP)) == (stat.S_ISGID | stat.S_IXGRP)
        or not may(caller, attr, R_OK | W_OK, acl)
    ):
        return errno.EPERM
    return None


def utimens_denial(
    caller: Identity, attr: Attr, explicit: bool, now: bool, acl: acls.Acl | None = None
) -> int | None:
    """None if ``caller`` may set times (``explicit`` values and/or ``now``), else errno.

    Explicit times need the owner or super (EPERM); setting both to the current time (a
    touch: ``now``) needs the owner, super or write permission (EACCES). As in Linux,
    setting only one of them to the current time counts as explicit.
    """
    if is_owner_or_super(caller, attr):
        return None
    if explicit:
        return errno.EPERM
    if now and not may(caller, attr, W_OK, acl):
        return errno.EACCES
    return None


# ----------------------------------------------------------------------- xattrs
USER = b"user."
TRUSTED = b"trusted."
SECURITY = b"security."
SYSTEM = b"system."
_PRIVILEGED = (TRUSTED, SECURITY)


def xattr_namespace(name: bytes) -> bytes | None:
    """The namespace prefix of an xattr name, or None if it names no supported one."""
    for prefix in (USER, *_PRIVILEGED, SYSTEM):
        if name.startswith(prefix):
            return prefix
    return None


def xattr_visible(caller: Identity, name: bytes) -> bool:
    """Is ``name`` listed to ``caller`` (privileged namespaces are hidden from others)?"""
    return caller.is_super or not name.startswith(_PRIVILEGED)


def xattr_denial(
    caller: Identity, attr: Attr, name: bytes, write: bool, acl: acls.Acl | None = None
) -> int | None:
    """None if ``caller`` may read (or ``write``) xattr ``name`` of ``attr``, else errno.

    ``system.*`` (the ACLs have their own rules, in ``xattrs``) and unknown namespaces:
    EOPNOTSUPP. ``trusted.*`` and
    ``security.*``: super only, EPERM on write and ENODATA on read (they look absent).
    ``user.*``: only on regular files and directories (EPERM on write, ENODATA on read
    elsewhere), write needs W and, in a sticky directory, the owner; read needs R.
    """
    prefix = xattr_namespace(name)
    if prefix is None or prefix == SYSTEM:
        return errno.EOPNOTSUPP
    if prefix in _PRIVILEGED:
        if caller.is_super:
            return None
        return errno.EPERM if write else errno.ENODATA
    if not (stat.S_ISREG(attr.mode) or stat.S_ISDIR(attr.mode)):
        return errno.EPERM if write else errno.ENODATA
    if write:
        if (
            stat.S_ISDIR(attr.mode)
            and attr.mode & stat.S_ISVTX
            and not is_owner_or_super(caller, attr)
        ):
            return errno.EPERM
        return None if may(caller, attr, W_OK, acl) else errno.EACCES
    return None if may(caller, attr, R_OK, acl) else errno.EACCES


# ------------------------------------------------------------------------- open
def open_mask(flags: int) -> int | None:
    """The access an open with ``flags`` needs (O_TRUNC implies write), None if invalid."""
    acc = flags & os.O_ACCMODE
    if acc == os.O_RDONLY:
        mask = R_OK
    elif acc == os.O_WRONLY:
        mask = W_OK
    elif acc == os.O_RDWR:
        mask = R_OK | W_OK
    else:
        return None
    if flags & os.O_TRUNC:
        mask |= W_OK
    return mask
