"""Exhaustive tests of the pure ACL logic (xfs.mrc.acl), with Linux as the oracle: the
access check is compared with a line-by-line transcription of the kernel's
``acl_permission_check`` and ``posix_acl_permission``, and inheritance with
``posix_acl_create_masq``."""

from __future__ import annotations

import errno
import itertools

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xfs.mrc import acl as acls
from xfs.mrc.acl import Acl, Entry, Tag
from xfs.proto.errors import XfsError

U = "alice@physics"
PRINCIPALS = ["alice@physics", "bob@physics", "carol@physics", "dave@physics"]
GROUPS = ["users@physics", "others@physics", "team@physics"]


def parse(text: str) -> Acl:
    acl = acls.parse(text)
    assert acl is not None
    return acl


def einval(fn: object, *args: object, **kw: object) -> XfsError:
    with pytest.raises(XfsError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    assert info.value.code == errno.EINVAL, info.value
    return info.value


# ------------------------------------------------------------------ Linux, transcribed
def linux_posix_acl_permission(
    acl: Acl, uid: str, gids: set[str], file_uid: str, file_gid: str, want: int
) -> bool:
    """fs/posix_acl.c: posix_acl_permission(), over entries in canonical order."""
    want &= 7
    found = False
    entries = acl.entries
    pa = None
    for i, e in enumerate(entries):
        if e.tag == Tag.USER_OBJ:
            if file_uid == uid:
                return e.perm & want == want  # goto check
        elif e.tag == Tag.USER:
            if e.name == uid:
                pa = i
                break  # goto mask
        elif e.tag == Tag.GROUP_OBJ:
            if file_gid in gids:
                found = True
                if e.perm & want == want:
                    pa = i
                    break
        elif e.tag == Tag.GROUP:
            if e.name in gids:
                found = True
                if e.perm & want == want:
                    pa = i
                    break
        elif e.tag == Tag.MASK:
            pass
        elif e.tag == Tag.OTHER:
            if found:
                return False
            return e.perm & want == want  # goto check
    else:
        raise AssertionError("-EIO")
    assert pa is not None
    for mask_obj in entries[pa + 1 :]:
        if mask_obj.tag == Tag.MASK:
            return entries[pa].perm & mask_obj.perm & want == want
    return entries[pa].perm & want == want


def linux_acl_permission_check(
    acl: Acl | None, mode: int, uid: str, gids: set[str], file_uid: str, file_gid: str, want: int
) -> bool:
    """fs/namei.c: acl_permission_check() of a file system with POSIX ACLs."""
    if not ((want & 7) * 0o111 & ~mode) and acl is None:
        return True
    if uid == file_uid:
        return (want & 7) & ~(mode >> 6) == 0
    if mode & 0o070 and acl is not None:
        return linux_posix_acl_permission(acl, uid, gids, file_uid, file_gid, want)
    want &= 7
    if want & (mode ^ (mode >> 3)) and file_gid in gids:
        mode >>= 3
    return want & ~mode == 0


def linux_create_masq(default: Acl, mode: int) -> tuple[list[Entry], int, bool]:
    """fs/posix_acl.c: posix_acl_create_masq() on a clone of ``default``."""
    entries = [[e.tag, e.name, e.perm] for e in default.entries]
    m = mode
    not_equiv = False
    group_obj = mask_obj = None
    for pa in entries:
        if pa[0] == Tag.USER_OBJ:
            pa[2] &= (m >> 6) | ~0o7
            m &= (pa[2] << 6) | ~0o700
        elif pa[0] in (Tag.USER, Tag.GROUP):
            not_equiv = True
        elif pa[0] == Tag.GROUP_OBJ:
            group_obj = pa
        elif pa[0] == Tag.OTHER:
            pa[2] &= m | ~0o7
            m &= pa[2] | ~0o7
        elif pa[0] == Tag.MASK:
            mask_obj = pa
            not_equiv = True
    target = mask_obj if mask_obj is not None else group_obj
    assert target is not None
    target[2] &= (m >> 3) | ~0o7
    m &= (target[2] << 3) | ~0o70
    new_mode = (mode & ~0o777) | (m & 0o777)
    return [Entry(Tag(t), n, p & 7) for t, n, p in entries], new_mode, not_equiv


# ------------------------------------------------------------------ strategies
perm = st.integers(0, 7)


@st.composite
def any_acl(draw: st.DrawFn, *, minimal_ok: bool = True) -> Acl:
    users = draw(st.lists(st.sampled_from(PRINCIPALS), unique=True, max_size=3))
    groups = draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=3))
    entries = [Entry(Tag.USER_OBJ, "", draw(perm)), Entry(Tag.GROUP_OBJ, "", draw(perm)),
               Entry(Tag.OTHER, "", draw(perm))]
    entries += [Entry(Tag.USER, u, draw(perm)) for u in users]
    entries += [Entry(Tag.GROUP, g, draw(perm)) for g in groups]
    if users or groups or draw(st.booleans()) or not minimal_ok:
        entries.append(Entry(Tag.MASK, "", draw(perm)))
    draw(st.randoms()).shuffle(entries)
    return Acl.of(entries)


@settings(max_examples=3000, deadline=None)
@given(
    acl=any_acl(),
    extra=st.integers(0, 0o7000),
    owner=st.sampled_from(PRINCIPALS),
    group=st.sampled_from(GROUPS),
    caller=st.sampled_from(PRINCIPALS),
    caller_groups=st.sets(st.sampled_from(GROUPS)),
    want=st.integers(1, 7),
)
def test_access_check_is_linuxs(
    acl: Acl, extra: int, owner: str, group: str, caller: str, caller_groups: set[str],
    want: int,
) -> None:
    mode = 0o100000 | extra | acls.mode_bits(acl)  # the mode is in sync with the ACL
    expected = linux_acl_permission_check(acl, mode, caller, caller_groups, owner, group, want)
    assert acls.permits(acl, mode, owner, group, caller, caller_groups, want) == expected
    # and the plain POSIX.1e algorithm is the kernel's posix_acl_permission
    assert acls.check(acl, owner, group, caller, caller_groups, want) == (
        linux_posix_acl_permission(acl, caller, caller_groups, owner, group, want)
    )


def test_access_check_without_acl_is_the_mode() -> None:
    for mode, want in itertools.product(range(0o1000), range(1, 8)):
        for caller, groups in (("alice@physics", set()), ("bob@physics", {"users@physics"}),
                               ("carol@physics", {"others@physics"})):
            expected = linux_acl_permission_check(
                None, mode, caller, groups, "alice@physics", "users@physics", want
            )
            got = acls.permits(None, mode, "alice@physics", "users@physics", caller, groups, want)
            assert got == expected, (oct(mode), caller, want)


def test_named_user_and_mask() -> None:
    acl = parse("u::rw,u:bob@physics:rw,g::r,m::r,o::-")
    mode = acls.mode_bits(acl)
    assert mode == 0o640

    def may(who: str, want: int, groups: tuple[str, ...] = ()) -> bool:
        return acls.permits(acl, mode, U, "users@physics", who, groups, want)

    assert may("bob@physics", acls.R)
    assert not may("bob@physics", acls.W)  # masked
    assert not may("carol@physics", acls.R)  # other
    assert may("carol@physics", acls.R, ("users@physics",))  # owning group, r
    assert not may("carol@physics", acls.W, ("users@physics",))
    assert may(U, acls.R | acls.W)


def test_named_user_entry_wins_over_groups() -> None:
    # bob is in a group granting rw, but his own entry gives r only
    acl = parse("u::rw,u:bob@physics:r,g::rw,g:team@physics:rw,m::rw,o::rw")
    mode = acls.mode_bits(acl)
    assert acls.permits(acl, mode, U, "users@physics", "bob@physics", ("team@physics",), acls.R)
    assert not acls.permits(acl, mode, U, "users@physics", "bob@physics", ("team@physics",),
                            acls.W)


def test_any_matching_group_grants_and_group_match_excludes_other() -> None:
    acl = parse("u::rwx,g::r,g:team@physics:w,g:others@physics:-,m::rwx,o::rwx")
    mode = acls.mode_bits(acl)

    def may(groups: tuple[str, ...], want: int) -> bool:
        return acls.permits(acl, mode, U, "users@physics", "carol@physics", groups, want)

    assert may(("users@physics", "team@physics"), acls.R)
    assert may(("users@physics", "team@physics"), acls.W)
    assert not may(("users@physics", "team@physics"), acls.R | acls.W)  # no one entry has both
    assert not may(("others@physics",), acls.R)  # matched a group: other does not apply
    assert may((), acls.R | acls.W | acls.X)


def test_empty_mask_leaves_the_decision_to_the_mode_as_linux_does() -> None:
    # Linux skips the ACL when the group class bits (the mask) are empty: a named user
    # then gets the other bits, whatever the ACL says (checked against ext4 too, in
    # tests/conformance/test_acls.py)
    acl = parse("u::rw,u:bob@physics:-,g::r,m::-,o::r")
    mode = acls.mode_bits(acl)
    assert mode == 0o604
    assert acls.permits(acl, mode, U, "users@physics", "bob@physics", (), acls.R)
    assert not acls.check(acl, U, "users@physics", "bob@physics", (), acls.R)  # POSIX.1e
    assert not acls.permits(acl, mode, U, "users@physics", "carol@physics",
                            ("users@physics",), acls.R)  # the group bits: none


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "text",
    [
        "u::rw,o::r",  # no group::
        "g::r,o::r",  # no user::
        "u::rw,g::r",  # no other::
        "u::rw,g::r,o::r,u:bob@physics:r",  # named entry without mask
        "u::rw,g::r,o::r,g:team@physics:r",
        "u::rw,u::r,g::r,o::r",  # duplicates
        "u::rw,g::r,o::r,m::r,m::rw",
        "u::rw,g::r,o::r,m::r,u:bob@physics:r,u:bob@physics:w",
        "u::rw,g::r,o::r,m::r,g:team@physics:r,g:team@physics:r",
    ],
)
def test_invalid_acls(text: str) -> None:
    einval(acls.parse, text)


def test_valid_acls_and_canonical_order() -> None:
    acl = parse("o::r, m::rw, g:team@physics:r, u:bob@physics:rw, g::r, u::rwx, u:al@x:r")
    assert [e.tag for e in acl.entries] == [Tag.USER_OBJ, Tag.USER, Tag.USER, Tag.GROUP_OBJ,
                                            Tag.GROUP, Tag.MASK, Tag.OTHER]
    assert [e.name for e in acl.entries if e.tag == Tag.USER] == ["al@x", "bob@physics"]
    assert parse("u::rw,g::r,o::r,m::rw").mask == 6  # a mask alone is allowed
    assert parse("u::rw,g::r,o::r").is_minimal()
    assert not parse("u::rw,g::r,o::r,m::r").is_minimal()


def test_entry_checks() -> None:
    einval(Acl.of, [Entry(Tag.USER_OBJ, "", 8), Entry(Tag.GROUP_OBJ), Entry(Tag.OTHER)])
    einval(Acl.of, [Entry(Tag.USER_OBJ, "", -1), Entry(Tag.GROUP_OBJ), Entry(Tag.OTHER)])
    einval(Acl.of, [Entry(Tag.USER_OBJ, "x"), Entry(Tag.GROUP_OBJ), Entry(Tag.OTHER)])
    base = [Entry(Tag.USER_OBJ), Entry(Tag.GROUP_OBJ), Entry(Tag.OTHER), Entry(Tag.MASK)]
    for bad in ("", "a:b", "a b", "a,b", "a#b", "x" * 256, "a\nb", "\x01"):
        einval(Acl.of, [*base, Entry(Tag.USER, bad, 4)])
    Acl.of([*base, Entry(Tag.USER, "x" * 255, 4), Entry(Tag.GROUP, "ünï@vo", 1)])


# ------------------------------------------------------------------ stored form
@settings(max_examples=500, deadline=None)
@given(acl=any_acl())
def test_encode_decode_round_trip(acl: Acl) -> None:
    blob = acls.encode(acl)
    assert acls.decode(blob) == acl
    assert acls.encode(acls.decode(blob)) == blob  # canonical
    assert msgpack.unpackb(blob)[0] == acls.FORMAT_VERSION


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",
        msgpack.packb([2, [[1, "", 6], [4, "", 4], [32, "", 4]]]),  # other version
        msgpack.packb([1, [[1, "", 6], [4, "", 4]]]),  # invalid ACL
        msgpack.packb([1, [[1, "", 6], [4, "", 4], [64, "", 4]]]),  # unknown tag
        msgpack.packb([1, [[1, b"", 6], [4, "", 4], [32, "", 4]]]),
        msgpack.packb([1, [[1, "", 6, 0], [4, "", 4], [32, "", 4]]]),
        msgpack.packb({"v": 1}),
        msgpack.packb([1, "entries"]),
    ],
)
def test_decode_refuses(blob: bytes) -> None:
    einval(acls.decode, blob)


# ------------------------------------------------------------------ the mode
def test_mode_bits_and_from_mode() -> None:
    for mode in range(0o1000):
        acl = acls.from_mode(mode)
        assert acl.is_minimal()
        assert acls.mode_bits(acl) == mode
    assert acls.mode_bits(parse("u::rwx,g::r,m::rw,o::x,u:b@v:r")) == 0o761  # mask shows


def test_chmod_updates_the_mask_not_the_owning_group() -> None:
    acl = parse("u::rw,u:bob@physics:rwx,g::r-x,m::rwx,o::r")
    after = acls.chmod(acl, 0o100640)
    assert after == parse("u::rw,u:bob@physics:rwx,g::r-x,m::r,o::-")
    assert acls.mode_bits(after) == 0o640
    minimal = parse("u::rw,g::r,o::r")
    assert acls.chmod(minimal, 0o751) == acls.from_mode(0o751)


@settings(max_examples=1000, deadline=None)
@given(acl=any_acl(), mode=st.integers(0, 0o7777))
def test_chmod_then_mode_bits(acl: Acl, mode: int) -> None:
    after = acls.chmod(acl, mode)
    assert acls.mode_bits(after) == mode & 0o777
    assert after.named == acl.named
    assert after.get(Tag.GROUP_OBJ) == acl.get(Tag.GROUP_OBJ) or acl.mask is None


# ------------------------------------------------------------------ inheritance
def test_inherit_example() -> None:
    default = parse("u::rwx,u:bob@physics:rwx,g::r-x,m::rwx,o::r-x")
    access, mode = acls.inherit(default, 0o100666)
    assert mode == 0o100664
    assert access == parse("u::rw-,u:bob@physics:rwx,g::r-x,m::rw-,o::r--")
    access, mode = acls.inherit(default, 0o040777)
    assert (access, mode) == (default, 0o040775)
    # a minimal default ACL: no access ACL, the mode is masked by it
    access, mode = acls.inherit(parse("u::rwx,g::rx,o::-"), 0o100666)
    assert (access, mode) == (None, 0o100640)
    # setuid/setgid/sticky bits are not touched
    assert acls.inherit(parse("u::rwx,g::rx,o::-"), 0o42777)[1] == 0o42750


@settings(max_examples=2000, deadline=None)
@given(default=any_acl(), mode=st.integers(0, 0o7777))
def test_inherit_is_posix_acl_create(default: Acl, mode: int) -> None:
    mode |= 0o100000
    entries, linux_mode, not_equiv = linux_create_masq(default, mode)
    access, new_mode = acls.inherit(default, mode)
    assert new_mode == linux_mode
    if not_equiv:
        assert access == Acl.of(entries)
        assert acls.mode_bits(access) == new_mode & 0o777
    else:
        assert access is None


# ------------------------------------------------------------------ text
def test_text_form() -> None:
    acl = parse("u::rw,u:bob@physics:rwx,g::r,g:team@physics:rw,m::rw,o::-")
    assert acls.to_text(acl) == (
        "user::rw-\nuser:bob@physics:rwx\ngroup::r--\ngroup:team@physics:rw-\n"
        "mask::rw-\nother::---\n"
    )
    assert acls.to_text(acl, effective=True, prefix="default:").splitlines()[1] == (
        "default:user:bob@physics:rwx\t#effective:rw-"
    )
    # getfacl's own output parses back, comments and all
    text = "# file: x\n# owner: a@b\nuser::rw-\nuser:b@c:rwx\t#effective:r--\ngroup::r--\n" \
           "mask::r--\nother::r--\n\n"
    assert acls.to_text(parse(text)) == (
        "user::rw-\nuser:b@c:rwx\ngroup::r--\nmask::r--\nother::r--\n"
    )
    assert acls.parse("# nothing\n\n") is None


@settings(max_examples=500, deadline=None)
@given(acl=any_acl())
def test_text_round_trip(acl: Acl) -> None:
    assert acls.parse(acls.to_text(acl, effective=True)) == acl


def test_parse_entry_forms() -> None:
    e = acls.parse_entry
    assert e("u::rwx") == Entry(Tag.USER_OBJ, "", 7)
    assert e("user:bob@physics:r-x") == Entry(Tag.USER, "bob@physics", 5)
    assert e("g:team@physics:6") == Entry(Tag.GROUP, "team@physics", 6)
    assert e("m:rx") == e("mask::xr") == Entry(Tag.MASK, "", 5)
    assert e("o:-") == e("other::---") == Entry(Tag.OTHER, "", 0)
    assert e("user:bob@physics", with_perm=False).key == (Tag.USER, "bob@physics")
    assert e("mask", with_perm=False).key == (Tag.MASK, "")
    for bad in ("x::r", "u:bob", "u:bob:rwq", "u:bob:rr", "u:bob:8", "m:bob:r", "o:bob:r",
                "u:a:b:r", "u:bob:rwxr", "u:bob:"):
        einval(e, bad)


# ------------------------------------------------------------------ setfacl's edits
def test_modify_recomputes_the_mask() -> None:
    base = parse("u::rw,g::r,o::r")
    acl = acls.modify(base.entries, [acls.parse_entry("u:bob@physics:rw")])
    assert acl == parse("u::rw,u:bob@physics:rw,g::r,m::rw,o::r")
    acl = acls.modify(acl.entries, [acls.parse_entry("g:team@physics:x")])
    assert acl.mask == 7
    acl = acls.modify(acl.entries, [acls.parse_entry("m::r")])  # an explicit mask stays
    assert acl.mask == 4
    # a minimal ACL stays without a mask
    assert acls.modify(base.entries, [acls.parse_entry("g::rwx")]) == parse("u::rw,g::rwx,o::r")


def test_remove_entries() -> None:
    acl = parse("u::rw,u:bob@physics:rwx,g::r,g:team@physics:w,m::rwx,o::r")
    after = acls.remove(acl, [(Tag.USER, "bob@physics")])
    assert after == parse("u::rw,g::r,g:team@physics:w,m::rw,o::r")
    after = acls.remove(after, [(Tag.GROUP, "team@physics"), (Tag.USER, "nobody@x")])
    assert after == parse("u::rw,g::r,m::r,o::r")  # the mask stays, as with setfacl -x
    assert acls.remove(after, [(Tag.MASK, "")]) == parse("u::rw,g::r,o::r")
    einval(acls.remove, acl, [(Tag.MASK, "")])  # named entries need it
    einval(acls.remove, acl, [(Tag.OTHER, "")])


def test_complete_default_copies_from_the_access_acl() -> None:
    access = parse("u::rwx,g::r-x,o::--x")
    entries = acls.complete_default([acls.parse_entry("u:bob@physics:rw")], access)
    assert acls.modify(entries, []) == parse("u::rwx,u:bob@physics:rw,g::rx,m::rwx,o::x")
    entries = acls.complete_default([acls.parse_entry("o::r")], access)
    assert Acl.of(entries) == parse("u::rwx,g::rx,o::r")
