"""POSIX.1e access control lists keyed on grid names. Pure: no I/O, no clock.

An ACL names grid principals (``alice@physics``) and VO-scoped groups (``users@physics``),
never local ids: the MRC stores and evaluates it, and each client shows it through its
own identity map. The rules are Linux's (``fs/posix_acl.c``, ``fs/namei.c``):

- entries: one USER_OBJ, GROUP_OBJ and OTHER; USER and GROUP entries by name, at most
  one per name; a MASK, required as soon as there is a named entry (``Acl.of`` checks,
  EINVAL otherwise);
- the access check (``permits``): the owner gets the owner bits; else the named user
  entry, masked; else every matching group entry (owning group, named groups), masked,
  any one granting; else other. As in Linux, an ACL whose mask is empty is skipped and
  the group and other mode bits decide;
- the mode and the access ACL stay in sync: chmod sets USER_OBJ, MASK (GROUP_OBJ without
  a mask) and OTHER (``chmod``); setting an ACL sets those mode bits (``mode_bits``), and
  an ACL equivalent to the mode is kept as no ACL at all (``is_minimal``);
- a directory's default ACL is inherited by what is created in it (``inherit``): as the
  new entry's access ACL masked by the requested mode, and by a new directory as its
  own default; the umask is not applied under a default ACL.

The stored (and wire) form is ``encode``: msgpack of ``[FORMAT_VERSION, [[tag, name,
perm], ...]]`` in canonical order. The text form (``to_text``/``parse``) is getfacl's,
with grid names: ``user:alice@physics:rw-``.
"""

from __future__ import annotations

import enum
import errno
import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from xfs.proto.errors import XfsError

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"
NAMES = (ACCESS, DEFAULT)

FORMAT_VERSION = 1
NAME_MAX = 255  # longest principal or group name in an entry

R, W, X = 4, 2, 1
RWX = R | W | X


class Tag(enum.IntEnum):
    """Entry tags, numbered as Linux's ACL_* constants (and its xattr format)."""

    USER_OBJ = 0x01
    USER = 0x02
    GROUP_OBJ = 0x04
    GROUP = 0x08
    MASK = 0x10
    OTHER = 0x20


_NAMED = (Tag.USER, Tag.GROUP)
_WORDS = {
    Tag.USER_OBJ: "user",
    Tag.USER: "user",
    Tag.GROUP_OBJ: "group",
    Tag.GROUP: "group",
    Tag.MASK: "mask",
    Tag.OTHER: "other",
}
_BAD_NAME_CHARS = frozenset(":,#\\ \t\r\n\0")


def invalid(message: str) -> XfsError:
    return XfsError(errno.EINVAL, f"invalid ACL: {message}")


@dataclass(frozen=True, order=True)
class Entry:
    """One entry: ``name`` is the principal (USER) or group (GROUP), else empty."""

    tag: Tag
    name: str = ""
    perm: int = 0

    @property
    def key(self) -> tuple[Tag, str]:
        return self.tag, self.name

    def text(self) -> str:
        """``user:alice@physics:rw-`` (getfacl's form)."""
        return f"{_WORDS[self.tag]}:{self.name}:{perm_text(self.perm)}"


@dataclass(frozen=True)
class Acl:
    """A valid ACL, its entries in canonical order (by tag, then name). Build with
    ``Acl.of`` (which checks), never directly."""

    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Acl:
        """The ACL of ``entries`` (any order); XfsError(EINVAL) unless it is valid."""
        ordered = tuple(sorted(entries))
        _validate(ordered)
        return cls(ordered)

    def get(self, tag: Tag, name: str = "") -> Entry | None:
        for e in self.entries:
            if e.tag == tag and e.name == name:
                return e
        return None

    def perm(self, tag: Tag) -> int:
        """The permissions of the one entry of ``tag`` (USER_OBJ, GROUP_OBJ, OTHER)."""
        e = self.get(tag)
        assert e is not None, tag
        return e.perm

    @property
    def mask(self) -> int | None:
        e = self.get(Tag.MASK)
        return None if e is None else e.perm

    @property
    def named(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.tag in _NAMED)

    def is_minimal(self) -> bool:
        """Says no more than the mode bits (no named entry, no mask)."""
        return all(e.tag in (Tag.USER_OBJ, Tag.GROUP_OBJ, Tag.OTHER) for e in self.entries)


def _validate(entries: tuple[Entry, ...]) -> None:
    seen: set[tuple[Tag, str]] = set()
    for e in entries:
        if not isinstance(e.tag, Tag):
            raise invalid(f"unknown tag {e.tag!r}")
        if not isinstance(e.perm, int) or isinstance(e.perm, bool) or not 0 <= e.perm <= RWX:
            raise invalid(f"permissions {e.perm!r} of {_WORDS[e.tag]} entry")
        if e.tag in _NAMED:
            check_name(e.name)
        elif e.name:
            raise invalid(f"{_WORDS[e.tag]} entry with a name ({e.name!r})")
        if e.key in seen:
            raise invalid(f"duplicate entry {_WORDS[e.tag]}:{e.name}")
        seen.add(e.key)
    for tag in (Tag.USER_OBJ, Tag.GROUP_OBJ, Tag.OTHER):
        if (tag, "") not in seen:
            raise invalid(f"no {_WORDS[tag]}:: entry")
    if any(e.tag in _NAMED for e in entries) and (Tag.MASK, "") not in seen:
        raise invalid("named entries need a mask entry")


def check_name(name: object) -> None:
    """A principal or group name as entries carry it (EINVAL otherwise)."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= NAME_MAX
        or not name.isprintable()
        or _BAD_NAME_CHARS.intersection(name)
    ):
        raise invalid(f"bad name {name!r} in a named entry")


# ------------------------------------------------------------------ access check
def _has(perm: int, want: int) -> bool:
    return perm & want == want


def check(
    acl: Acl, owner: str, group: str, principal: str, groups: Collection[str], want: int
) -> bool:
    """The POSIX.1e algorithm: may ``principal`` (in ``groups``) have every bit of
    ``want`` (R|W|X) on an object of ``owner`` and ``group`` with ``acl``?"""
    if principal == owner:
        return _has(acl.perm(Tag.USER_OBJ), want)
    mask = RWX if acl.mask is None else acl.mask
    named = acl.get(Tag.USER, principal)
    if named is not None:
        return _has(named.perm & mask, want)
    matched = False
    for e in acl.entries:
        if (e.tag == Tag.GROUP_OBJ and group in groups) or (
            e.tag == Tag.GROUP and e.name in groups
        ):
            matched = True
            if _has(e.perm & mask, want):
                return True
    if matched:
        return False
    return _has(acl.perm(Tag.OTHER), want)


def permits(
    acl: Acl | None,
    mode: int,
    owner: str,
    group: str,
    principal: str,
    groups: Collection[str],
    want: int,
) -> bool:
    """Linux's decision (``acl_permission_check``) for a caller without privilege: the
    owner is judged by the owner bits of ``mode``; others by ``acl`` if there is one and
    its mask (the group bits of ``mode``) is not empty; else by the group or other bits."""
    want &= RWX
    if principal == owner:
        return _has(mode >> 6 & RWX, want)
    if acl is not None and mode & 0o070:
        return check(acl, owner, group, principal, groups, want)
    bits = mode >> 3 if group in groups else mode
    return _has(bits & RWX, want)


# ------------------------------------------------------------------ the mode
def from_mode(mode: int) -> Acl:
    """The minimal ACL that says what the permission bits of ``mode`` say."""
    return Acl(
        (
            Entry(Tag.USER_OBJ, "", mode >> 6 & RWX),
            Entry(Tag.GROUP_OBJ, "", mode >> 3 & RWX),
            Entry(Tag.OTHER, "", mode & RWX),
        )
    )


def mode_bits(acl: Acl) -> int:
    """The permission bits (0o777) an inode with access ACL ``acl`` has: the group
    class shows the mask if there is one (``posix_acl_equiv_mode``)."""
    group = acl.perm(Tag.GROUP_OBJ) if acl.mask is None else acl.mask
    return acl.perm(Tag.USER_OBJ) << 6 | group << 3 | acl.perm(Tag.OTHER)


def chmod(acl: Acl, mode: int) -> Acl:
    """``acl`` after a chmod to ``mode`` (``posix_acl_chmod``): USER_OBJ, the MASK (or
    GROUP_OBJ if there is no mask) and OTHER take the new permission bits."""
    group_tag = Tag.GROUP_OBJ if acl.mask is None else Tag.MASK
    new = {Tag.USER_OBJ: mode >> 6 & RWX, group_tag: mode >> 3 & RWX, Tag.OTHER: mode & RWX}
    return Acl(tuple(Entry(e.tag, e.name, new[e.tag]) if e.tag in new else e for e in acl.entries))


def inherit(default: Acl, mode: int) -> tuple[Acl | None, int]:
    """The access ACL and mode of an entry created with requested ``mode`` in a
    directory with ``default`` (``posix_acl_create``): the default ACL's owner, mask (or
    owning group) and other entries are limited by the requested permissions, and the
    mode by them. No access ACL (None) if the result says no more than the mode. Bits
    beyond the permissions (setuid, setgid, sticky, type) are kept. A directory also
    takes ``default`` as its own default ACL (the caller's part)."""
    requested = mode & 0o777
    group_tag = Tag.GROUP_OBJ if default.mask is None else Tag.MASK
    shift = {Tag.USER_OBJ: 6, group_tag: 3, Tag.OTHER: 0}
    entries = tuple(
        Entry(e.tag, e.name, e.perm & (requested >> shift[e.tag])) if e.tag in shift else e
        for e in default.entries
    )
    acl = Acl(entries)
    bits = mode_bits(acl) & requested
    new_mode = mode & ~0o777 | bits
    return (None if acl.is_minimal() else acl), new_mode


# ------------------------------------------------------------------ setfacl's edits
def recompute_mask(entries: Iterable[Entry]) -> list[Entry]:
    """setfacl's mask: the union of the group class (named users, owning group, named
    groups), added when there are named entries or a mask already."""
    entries = list(entries)
    has_mask = any(e.tag == Tag.MASK for e in entries)
    if not has_mask and not any(e.tag in _NAMED for e in entries):
        return entries
    union = 0
    for e in entries:
        if e.tag in (Tag.USER, Tag.GROUP_OBJ, Tag.GROUP):
            union |= e.perm
    return [e for e in entries if e.tag != Tag.MASK] + [Entry(Tag.MASK, "", union)]


def modify(base: Iterable[Entry], changes: Iterable[Entry]) -> Acl:
    """``setfacl -m``: ``changes`` replace the entries with their keys in ``base`` or are
    added; the mask is recomputed unless ``changes`` set it."""
    entries = {e.key: e for e in base}
    changes = list(changes)
    for e in changes:
        entries[e.key] = e
    result = list(entries.values())
    if not any(e.tag == Tag.MASK for e in changes):
        result = recompute_mask(result)
    return Acl.of(result)


def remove(base: Acl, keys: Iterable[tuple[Tag, str]]) -> Acl:
    """``setfacl -x``: drop named entries (or the mask) by key; the mask is recomputed.
    Only named entries and the mask can be removed (EINVAL otherwise)."""
    entries = {e.key: e for e in base.entries}
    dropped_mask = False
    for key in keys:
        if key[0] not in (*_NAMED, Tag.MASK):
            raise invalid(f"cannot remove the {_WORDS[key[0]]}:: entry")
        entries.pop(key, None)
        dropped_mask = dropped_mask or key[0] == Tag.MASK
    result = list(entries.values())
    if not dropped_mask:
        result = recompute_mask(result)
    return Acl.of(result)


def complete_default(entries: Iterable[Entry], access: Acl) -> list[Entry]:
    """setfacl's rule for a new default ACL: owner, owning group and other entries not
    given are copied from the access ACL."""
    entries = list(entries)
    have = {e.tag for e in entries}
    for tag in (Tag.USER_OBJ, Tag.GROUP_OBJ, Tag.OTHER):
        if tag not in have:
            entries.append(Entry(tag, "", access.perm(tag)))
    return entries


# ------------------------------------------------------------------ stored form
def encode(acl: Acl) -> bytes:
    """The canonical stored and wire form of a valid ACL."""
    body = [[int(e.tag), e.name, e.perm] for e in acl.entries]
    return bytes(msgpack.packb([FORMAT_VERSION, body], use_bin_type=True))


def decode(blob: bytes) -> Acl:
    """The ACL of an ``encode``d value; XfsError(EINVAL) if it is not one of a valid ACL.
    (Small values, the usual ACLs, are remembered: every permission check decodes.)"""
    return _decode_small(blob) if len(blob) <= _CACHED_SIZE else _decode(blob)


_CACHED_SIZE = 512


@functools.lru_cache(maxsize=4096)
def _decode_small(blob: bytes) -> Acl:
    return _decode(blob)


def _decode(blob: bytes) -> Acl:
    try:
        value: Any = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except Exception as e:
        raise invalid(f"not msgpack ({e})") from None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)):
        raise invalid("not [version, entries]")
    if value[0] != FORMAT_VERSION:
        raise invalid(f"format version {value[0]!r}, this xfs reads {FORMAT_VERSION}")
    entries = []
    for item in value[1]:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], int)
            and isinstance(item[1], str)
            and isinstance(item[2], int)
        ):
            raise invalid(f"bad entry {item!r:.80}")
        try:
            tag = Tag(item[0])
        except ValueError:
            raise invalid(f"unknown tag {item[0]}") from None
        entries.append(Entry(tag, item[1], item[2]))
    return Acl.of(entries)


# ------------------------------------------------------------------ text form
def perm_text(perm: int) -> str:
    return "".join(c if perm & b else "-" for c, b in (("r", R), ("w", W), ("x", X)))


def to_text(acl: Acl, *, effective: bool = False, prefix: str = "") -> str:
    """getfacl's lines (each ending in a newline); with ``effective``, entries that the
    mask limits carry a ``#effective:`` comment, as getfacl prints them."""
    lines = []
    mask = acl.mask
    for e in acl.entries:
        line = prefix + e.text()
        limited = e.tag in (Tag.USER, Tag.GROUP_OBJ, Tag.GROUP)
        if effective and limited and mask is not None and e.perm & ~mask:
            line += f"\t#effective:{perm_text(e.perm & mask)}"
        lines.append(line + "\n")
    return "".join(lines)


_TAG_WORDS = {
    "u": "user",
    "user": "user",
    "g": "group",
    "group": "group",
    "m": "mask",
    "mask": "mask",
    "o": "other",
    "other": "other",
}


def parse_perm(text: str) -> int:
    """``rw-``, ``rx``, ``-``, or an octal digit."""
    if len(text) == 1 and text in "01234567":
        return int(text)
    if not text or len(text) > 3:
        raise invalid(f"bad permissions {text!r}")
    perm = 0
    for c in text:
        bit = {"r": R, "w": W, "x": X, "-": 0}.get(c)
        if bit is None or (bit and perm & bit):
            raise invalid(f"bad permissions {text!r}")
        perm |= bit
    return perm


def parse_entry(spec: str, *, with_perm: bool = True) -> Entry:
    """One entry as setfacl takes it: ``u:alice@physics:rw``, ``g::r-x``, ``m::rx``,
    ``o:r`` (perm 0 and no permission field if not ``with_perm``: a key to remove)."""
    parts = spec.strip().split(":")
    word = _TAG_WORDS.get(parts[0])
    if word is None:
        raise invalid(f"bad entry {spec!r}: unknown type {parts[0]!r}")
    if word in ("mask", "other") and len(parts) == (2 if with_perm else 1):
        parts.insert(1, "")  # "mask:rwx", "other:r" (and "mask" as a key)
    if len(parts) != (3 if with_perm else 2):
        raise invalid(f"bad entry {spec!r}")
    name = parts[1]
    if word == "user":
        tag = Tag.USER if name else Tag.USER_OBJ
    elif word == "group":
        tag = Tag.GROUP if name else Tag.GROUP_OBJ
    elif name:
        raise invalid(f"bad entry {spec!r}: a {word} entry has no name")
    else:
        tag = Tag.MASK if word == "mask" else Tag.OTHER
    if name:
        check_name(name)
    return Entry(tag, name, parse_perm(parts[2]) if with_perm else 0)


def parse_entries(text: str) -> list[Entry]:
    """Entries of getfacl-style text: one or more a line (comma separated), ``#``
    comments and blank lines ignored."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        for spec in line.split(","):
            if spec.strip():
                entries.append(parse_entry(spec))
    return entries


def parse(text: str) -> Acl | None:
    """The ACL written as getfacl-style text (None if it has no entries)."""
    entries = parse_entries(text)
    return Acl.of(entries) if entries else None
