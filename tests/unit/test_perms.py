"""Exhaustive tests of the pure permission logic (xfs.mrc.perms)."""

from __future__ import annotations

import errno
import itertools
import os
import stat

import pytest

from xfs.mrc import perms
from xfs.mrc.perms import R_OK, W_OK, X_OK
from xfs.proto.records import Attr, Identity, Kind, Role


def ident(
    principal: str, *groups: str, role: Role = Role.STANDARD, kind: Kind = Kind.USER
) -> Identity:
    return Identity(principal, "physics", kind, role, tuple(groups), b"\0" * 32)


ALICE = ident("alice@physics", "users@physics", "alice@physics")
BOB = ident("bob@physics", "users@physics")  # in the file's group
CAROL = ident("carol@physics", "others@physics")  # other
ROOT = ident("root@physics", "admins@physics", role=Role.SUPER)
ADMIN_CERT = ident("admin@physics", role=Role.SUPER, kind=Kind.ADMIN)  # not a user: no power
NOGROUPS = ident("dave@physics")

FILE, DIR, LNK, FIFO = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO


def attr(mode: int, owner: str = "alice@physics", group: str = "users@physics") -> Attr:
    return Attr(
        ino=2,
        mode=mode,
        nlink=1,
        owner=owner,
        group=group,
        size=0,
        atime_ns=0,
        mtime_ns=0,
        ctime_ns=0,
    )


def letters(mode: int, cls: int) -> str:
    """'rwx' letters of class 0 (owner), 1 (group), 2 (other) from stat.filemode."""
    return stat.filemode(stat.S_IFREG | (mode & 0o777))[1 + 3 * cls : 4 + 3 * cls]


def wanted(mask: int) -> str:
    return "".join(c for bit, c in ((R_OK, "r"), (W_OK, "w"), (X_OK, "x")) if mask & bit)


# ------------------------------------------------------------------------------- may
@pytest.mark.parametrize(
    ("who", "cls"), [(ALICE, 0), (BOB, 1), (CAROL, 2), (NOGROUPS, 2), (ADMIN_CERT, 2)]
)
def test_may_uses_exactly_one_class(who: Identity, cls: int) -> None:
    for mode, mask in itertools.product(range(0o1000), range(8)):
        expected = all(c in letters(mode, cls) for c in wanted(mask))
        assert perms.may(who, attr(FILE | mode), mask) is expected, (oct(mode), mask)


def test_owner_in_group_gets_owner_bits_only() -> None:
    assert not perms.may(ALICE, attr(FILE | 0o070), R_OK)
    assert perms.may(ALICE, attr(FILE | 0o400), R_OK)
    # a member who is not the owner does not fall back to other
    assert not perms.may(BOB, attr(FILE | 0o407), R_OK)


def test_super_reads_and_writes_anything_and_executes_if_any_x() -> None:
    for kind, mode in itertools.product((FILE, DIR, FIFO), range(0o10000)):
        a = attr(kind | mode, owner="x@y", group="g@y")
        assert perms.may(ROOT, a, R_OK | W_OK)
        assert perms.may(ROOT, a, 0)
        expect_x = kind == DIR or bool(mode & 0o111)
        assert perms.may(ROOT, a, X_OK) is expect_x
        assert perms.may(ROOT, a, R_OK | W_OK | X_OK) is expect_x


def test_may_rejects_bad_mask() -> None:
    with pytest.raises(ValueError):
        perms.may(ALICE, attr(FILE | 0o777), 8)


# ---------------------------------------------------------------------------- sticky
@pytest.mark.parametrize(
    ("caller", "entry_owner", "dir_owner", "allowed"),
    [
        (ALICE, "alice@physics", "x@physics", True),  # owns the entry
        (ALICE, "bob@physics", "alice@physics", True),  # owns the directory
        (ALICE, "bob@physics", "x@physics", False),
        (CAROL, "bob@physics", "x@physics", False),
        (ROOT, "bob@physics", "x@physics", True),
    ],
)
def test_sticky(caller: Identity, entry_owner: str, dir_owner: str, allowed: bool) -> None:
    entry = attr(FILE | 0o777, owner=entry_owner)
    assert perms.sticky_allows(caller, attr(DIR | 0o1777, owner=dir_owner), entry) is allowed
    assert perms.sticky_allows(caller, attr(DIR | 0o777, owner=dir_owner), entry)


# ----------------------------------------------------------------------- new entries
def test_default_group() -> None:
    assert perms.default_group(ALICE) == "users@physics"
    assert perms.default_group(NOGROUPS) == "dave@physics"
    assert perms.default_group(ident("eve@chem")) == "eve@physics"  # the VO is the cert's


@pytest.mark.parametrize("is_dir", [False, True])
def test_new_entry_umask_and_plain_parent(is_dir: bool) -> None:
    parent = attr(DIR | 0o777, group="other@physics")
    for mode, umask in itertools.product(range(0, 0o10000, 0o11), (0, 0o22, 0o77, 0o7777)):
        owner, group, bits = perms.new_entry(ALICE, parent, FILE | mode, umask, is_dir)
        assert (owner, group) == ("alice@physics", "users@physics")
        assert bits == mode & ~umask & 0o7777


def test_new_entry_in_setgid_directory() -> None:
    parent = attr(DIR | 0o2775, group="proj@physics")
    assert perms.new_entry(CAROL, parent, 0o755, 0o022, True) == (
        "carol@physics",
        "proj@physics",
        0o2755,
    )
    assert perms.new_entry(CAROL, parent, 0o644, 0o022, False) == (
        "carol@physics",
        "proj@physics",
        0o644,
    )
    # a non-member may not create a group-executable setgid file in the group
    assert perms.new_entry(CAROL, parent, 0o2755, 0, False)[2] == 0o755
    assert perms.new_entry(CAROL, parent, 0o2745, 0, False)[2] == 0o2745  # no g+x: kept
    member = ident("m@physics", "proj@physics")
    assert perms.new_entry(member, parent, 0o2755, 0, False)[2] == 0o2755
    assert perms.new_entry(ROOT, parent, 0o2755, 0, False)[2] == 0o2755


# --------------------------------------------------------------------------- chmod
def test_chmod_rights() -> None:
    a = attr(FILE | 0o644)
    assert perms.may_chmod(ALICE, a)
    assert perms.may_chmod(ROOT, a)
    assert not perms.may_chmod(BOB, a)
    assert not perms.may_chmod(CAROL, a)


def test_chmod_result_keeps_type_and_clears_sgid_for_non_members() -> None:
    for kind, mode in itertools.product((FILE, DIR), range(0o10000)):
        a = attr(kind | 0o600)
        assert perms.chmod_result(ALICE, a, mode, "users@physics") == kind | mode
        assert perms.chmod_result(ROOT, a, mode, "nobody@x") == kind | mode
        expect = kind | (mode & ~stat.S_ISGID)
        assert perms.chmod_result(ALICE, a, mode, "nobody@x") == expect
    assert perms.chmod_result(ALICE, attr(FILE), DIR | 0o755, "users@physics") == FILE | 0o755


# --------------------------------------------------------------------------- chown
@pytest.mark.parametrize(
    ("caller", "owner", "group", "allowed"),
    [
        (ROOT, "bob@physics", "x@y", True),
        (ALICE, None, None, True),
        (ALICE, "alice@physics", None, True),  # to itself
        (ALICE, "bob@physics", None, False),  # giving away
        (ALICE, None, "users@physics", True),  # the current group
        (ALICE, None, "alice@physics", True),  # one of its groups
        (ALICE, None, "others@physics", False),
        (ALICE, "alice@physics", "others@physics", False),
        (BOB, None, "users@physics", False),  # not the owner
        (BOB, "bob@physics", None, False),
        (CAROL, None, None, False),
    ],
)
def test_may_chown(caller: Identity, owner: str | None, group: str | None, allowed: bool) -> None:
    assert perms.may_chown(caller, attr(FILE | 0o644), owner, group) is allowed


def test_chown_result_clears_setid_of_non_directories_as_linux() -> None:
    """S_ISUID always goes; S_ISGID if group-executable or the caller is neither in the
    file's group nor super; directories keep both."""
    for kind, mode in itertools.product((FILE, FIFO, DIR), range(0o10000)):
        a = attr(kind | mode)  # group users@physics: ALICE and BOB are in it, CAROL not
        no_suid = kind | (mode & ~stat.S_ISUID)
        no_sgid_x = no_suid & ~stat.S_ISGID if mode & stat.S_IXGRP else no_suid
        for caller, expected in ((ALICE, no_sgid_x), (ROOT, no_sgid_x),
                                 (CAROL, no_suid & ~stat.S_ISGID)):
            want = kind | mode if kind == DIR else expected
            assert perms.chown_result(caller, a) == want, (caller.principal, oct(mode))


@pytest.mark.parametrize(
    ("caller", "mode", "perm", "allowed"),
    [
        (CAROL, 0o6777, 0o0777, True),  # a writer's kill-priv: both bits
        (CAROL, 0o6777, 0o2777, True),
        (CAROL, 0o4646, 0o0646, True),
        (CAROL, 0o4644, 0o0644, False),  # may not write
        (CAROL, 0o6777, 0o0775, False),  # more than set-id bits
        (CAROL, 0o0777, 0o0777, False),  # nothing dropped: a plain chmod
        (CAROL, 0o2777, 0o4777, False),  # adds a bit
        (BOB, 0o6770, 0o0770, True),  # group class W
    ],
)
def test_may_drop_setid(caller: Identity, mode: int, perm: int, allowed: bool) -> None:
    assert perms.may_drop_setid(caller, attr(FILE | mode), perm) is allowed
    assert perms.may_drop_setid(caller, attr(DIR | mode), perm) is False


@pytest.mark.parametrize(
    ("caller", "mode", "expected"),
    [
        (ALICE, FILE | 0o000, None),  # the owner links anything
        (ROOT, FIFO | 0o000, None),
        (CAROL, FILE | 0o666, None),
        (CAROL, FILE | 0o664, errno.EPERM),  # not writable
        (CAROL, FILE | 0o662, errno.EPERM),  # not readable
        (CAROL, FILE | 0o4666, errno.EPERM),  # set-user-ID
        (CAROL, FILE | 0o2676, errno.EPERM),  # set-group-ID, group-executable
        (CAROL, FILE | 0o2666, None),
        (CAROL, FIFO | 0o666, errno.EPERM),  # not a regular file
        (ALICE, DIR | 0o777, errno.EPERM),
        (ROOT, DIR | 0o777, errno.EPERM),
    ],
)
def test_link_denial(caller: Identity, mode: int, expected: int | None) -> None:
    assert perms.link_denial(caller, attr(mode)) == expected


# ------------------------------------------------------------------------- utimens
@pytest.mark.parametrize(
    ("caller", "mode", "explicit", "now", "expected"),
    [
        (ALICE, 0o000, True, False, None),
        (ROOT, 0o000, True, True, None),
        (BOB, 0o666, True, False, errno.EPERM),
        (BOB, 0o666, True, True, errno.EPERM),
        (BOB, 0o666, False, True, None),  # W permission suffices for "now"
        (BOB, 0o646, False, True, errno.EACCES),
        (CAROL, 0o664, False, True, errno.EACCES),
        (CAROL, 0o666, False, True, None),
        (CAROL, 0o000, False, False, None),  # nothing asked
    ],
)
def test_utimens(
    caller: Identity, mode: int, explicit: bool, now: bool, expected: int | None
) -> None:
    assert perms.utimens_denial(caller, attr(FILE | mode), explicit, now) == expected


# -------------------------------------------------------------------------- xattrs
def test_xattr_namespace() -> None:
    assert perms.xattr_namespace(b"user.a") == b"user."
    assert perms.xattr_namespace(b"trusted.a") == b"trusted."
    assert perms.xattr_namespace(b"security.a") == b"security."
    assert perms.xattr_namespace(b"system.posix_acl_access") == b"system."
    assert perms.xattr_namespace(b"other.a") is None
    assert perms.xattr_namespace(b"user") is None


def test_xattr_visible() -> None:
    for name in (b"trusted.a", b"security.a"):
        assert not perms.xattr_visible(ALICE, name)
        assert perms.xattr_visible(ROOT, name)
    assert perms.xattr_visible(CAROL, b"user.a")


@pytest.mark.parametrize("write", [False, True])
def test_xattr_denial_matrix(write: bool) -> None:
    kinds = (FILE, DIR, LNK, FIFO, stat.S_IFSOCK, stat.S_IFCHR)
    for who, kind, mode in itertools.product((ALICE, BOB, CAROL, ROOT), kinds, range(0o1000)):
        a = attr(kind | mode)
        for name in (b"system.posix_acl_access", b"foo.bar"):
            assert perms.xattr_denial(who, a, name, write) == errno.EOPNOTSUPP
        for name in (b"trusted.x", b"security.x"):
            got = perms.xattr_denial(who, a, name, write)
            expect = None if who is ROOT else (errno.EPERM if write else errno.ENODATA)
            assert got == expect
        got = perms.xattr_denial(who, a, b"user.x", write)
        if kind not in (FILE, DIR):
            assert got == (errno.EPERM if write else errno.ENODATA)
        else:
            ok = perms.may(who, a, W_OK if write else R_OK)
            assert got == (None if ok else errno.EACCES), (who.principal, oct(kind | mode))


def test_xattr_user_write_in_sticky_directory_needs_owner() -> None:
    d = attr(DIR | 0o1777)
    assert perms.xattr_denial(BOB, d, b"user.x", True) == errno.EPERM
    assert perms.xattr_denial(BOB, d, b"user.x", False) is None
    assert perms.xattr_denial(ALICE, d, b"user.x", True) is None
    assert perms.xattr_denial(ROOT, d, b"user.x", True) is None


# ---------------------------------------------------------------------------- open
@pytest.mark.parametrize(
    ("flags", "mask"),
    [
        (os.O_RDONLY, R_OK),
        (os.O_WRONLY, W_OK),
        (os.O_RDWR, R_OK | W_OK),
        (os.O_RDONLY | os.O_TRUNC, R_OK | W_OK),
        (os.O_WRONLY | os.O_APPEND | os.O_CREAT, W_OK),
        (os.O_ACCMODE, None),
    ],
)
def test_open_mask(flags: int, mask: int | None) -> None:
    assert perms.open_mask(flags) == mask
