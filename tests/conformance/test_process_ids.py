"""Permissions decided with each process's own ids, compared with Linux.

The mount runs with ``default_permissions``: the kernel checks every access with the
calling process's fsuid, fsgid and supplementary groups and caches entries and attributes
in every directory, while the MRC judges each request with a credential naming that
process's groups. Each case here is one cause of an earlier difference between xfs and
Linux: process groups (chgrp, the group class, the group of new objects, S_ISGID),
FIFOs and sockets, directory opens, search permission rechecked after a chmod, ftruncate
of a file created with mode 0, and the ctime of ``chown(f, -1, -1)``.

Every case runs twice over: as two real local accounts (``runuser``, the accounts' own
groups) and as numeric uids with no passwd entry whose groups are set per process
(``as_ids``); and in a parent directory owned by the acting uid of mode 0700 and of mode
0755. The same programs run in a local directory and must give the same answers and
leave the same tree (modes, owners, groups).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conformance.posix import Accounts, Actor, Ids, compare_users, local_accounts
from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(240)]

# numeric ids with no passwd or group entry (65534, the overflow id, is refused on purpose)
NUMERIC = {"A": 61001, "B": 61002, "GA": 61004, "GB": 61005, "G2": 61006, "GM": 61007}


@pytest.fixture(scope="module")
def acc(grid: Grid) -> Iterator[Accounts]:
    with local_accounts() as a:
        yield a


@dataclass(frozen=True)
class Cast:
    """Who acts in a case. ``a`` (uid ``A``) owns the parent directory ``p``; its
    processes have fsgid ``GA`` and are in ``G2`` too. ``b`` (uid ``B``, fsgid ``GB``) is
    in group ``GM``, which ``a`` is not in. Bodies see these numbers as variables."""

    a: Actor
    b: Actor
    ids: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.ids[name]

    def a_with(self, fsgid: str, *groups: str) -> Ids:
        """``a``'s uid in a process of other groups (names of ``ids``)."""
        return Ids(self["A"], self[fsgid], tuple(self[g] for g in (fsgid, *groups)))

    def steps(self, *steps: tuple[Actor, str]) -> list[tuple[Actor, str]]:
        header = "".join(f"{k} = {v}\n" for k, v in self.ids.items())
        return [(who, header + body) for who, body in steps]


@pytest.fixture(params=["accounts", "numeric"])
def cast(request: pytest.FixtureRequest, acc: Accounts) -> Cast:
    if request.param == "accounts":
        # alice is in team besides her own group; bob's own group is one alice is not in
        ids = {"A": acc.uid(acc.alice), "B": acc.uid(acc.bob), "GA": acc.gid(acc.alice),
               "GB": acc.gid(acc.bob), "G2": acc.gid(acc.team), "GM": acc.gid(acc.bob)}
        return Cast(acc.alice, acc.bob, ids)
    n = NUMERIC
    # b is in GM through a supplementary group, not its fsgid
    return Cast(Ids(n["A"], n["GA"], (n["GA"], n["G2"])),
                Ids(n["B"], n["GB"], (n["GB"], n["GM"])), dict(n))


@pytest.fixture(params=[0o700, 0o755], ids=["0700", "0755"])
def parent_mode(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def make_parent(root: Path, cast: Cast, mode: int) -> Path:
    """``root`` (root's, 0755) holding ``p``: ``a``'s directory of ``mode``."""
    os.chmod(root, 0o755)
    p = root / "p"
    p.mkdir()
    os.chown(p, cast["A"], cast["GA"])
    os.chmod(p, mode)
    return p


def put(path: Path, uid: int, gid: int, mode: int, data: bytes | None = b"data") -> None:
    """As root: a file (or, with ``data=None``, a directory) with these owners and mode."""
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


# ------------------------------------------------------------------ A: process groups
def test_process_groups_chgrp_group_class_and_setgid_bit(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    A, GA, G2, GM = cast["A"], cast["GA"], cast["G2"], cast["GM"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        for name in ("c1", "c2", "c3", "c4", "c5"):
            put(p / name, A, GA, 0o644)
        put(p / "cd", A, GA, 0o755, None)
        put(p / "g0060", A, GM, 0o060)  # a's file in b's group
        put(p / "r0606", 0, GM, 0o606)  # b's group may not read; others may
        put(p / "r0747", 0, GM, 0o747)  # b's group may not write; others may
        put(p / "r0060", 0, G2, 0o060)  # a's second group may read
        put(p / "r0604", 0, G2, 0o604)  # a's second group may not read; others may
        put(p / "sx", A, GM, 0o755)  # chmod g+s by its owner, not in its group
        put(p / "sxd", A, GM, 0o755, None)
        put(p / "sx2", A, G2, 0o755)  # chmod g+s by its owner, in its group
        put(p / "sx3", A, G2, 0o755)  # the same by a process without that group

    helpers = """
def can(p, flags):
    return e(lambda: os.close(os.open(p, flags)))
def gid(p):
    return os.stat(p).st_gid
"""
    a_body = helpers + """
out["chgrp to G2"] = e(os.chown, "p/c1", -1, G2)
out["chgrp to GM"] = e(os.chown, "p/c2", -1, GM)
out["chown self G2"] = e(os.chown, "p/c3", A, G2)
out["chgrp to GA"] = e(os.chown, "p/c4", -1, GA)
out["chgrp dir to G2"] = e(os.chown, "p/cd", -1, G2)
out["owner reads 0060 of b's group"] = can("p/g0060", os.O_RDONLY)
out["other reads r0606"] = can("p/r0606", os.O_RDONLY)
out["other writes r0747"] = can("p/r0747", os.O_WRONLY)
out["G2 reads r0060"] = can("p/r0060", os.O_RDONLY)
out["G2 access r0060"] = os.access("p/r0060", os.R_OK)
out["G2 reads r0604"] = can("p/r0604", os.O_RDONLY)
out["chmod g+s, not in group"] = e(os.chmod, "p/sx", 0o2755)
out["chmod g+s dir, not in group"] = e(os.chmod, "p/sxd", 0o2755)
out["chmod g+s, in group"] = e(os.chmod, "p/sx2", 0o2755)
out["modes"] = [oct(os.stat("p/" + n).st_mode) for n in ("sx", "sxd", "sx2")]
out["gids"] = [gid("p/" + n) for n in ("c1", "c2", "c3", "c4", "cd")]
"""
    b_body = helpers + """
out["member reads 0060"] = can("p/g0060", os.O_RDONLY)
out["member writes 0060"] = can("p/g0060", os.O_WRONLY)
out["member reads r0606"] = can("p/r0606", os.O_RDONLY)
out["member writes r0606"] = can("p/r0606", os.O_WRONLY)
out["member reads r0747"] = can("p/r0747", os.O_RDONLY)
out["member writes r0747"] = can("p/r0747", os.O_WRONLY)
out["member access W r0747"] = os.access("p/r0747", os.W_OK)
out["outsider reads r0060"] = can("p/r0060", os.O_RDONLY)
out["outsider reads r0604"] = can("p/r0604", os.O_RDONLY)
out["chgrp a's file"] = e(os.chown, "p/c5", -1, GM)
"""
    # a without G2: G2 no longer counts (what a's earlier process had is no matter)
    a_without_g2 = helpers + """
out["chgrp to current group G2"] = e(os.chown, "p/c1", -1, G2)
out["chgrp to G2"] = e(os.chown, "p/c5", -1, G2)
out["reads r0060"] = can("p/r0060", os.O_RDONLY)
out["reads r0604"] = can("p/r0604", os.O_RDONLY)
out["chmod g+s"] = e(os.chmod, "p/sx3", 0o2755)
out["mode"] = oct(os.stat("p/sx3").st_mode)
"""
    # a with fsgid G2 and b's group GM besides: GM now counts for a
    a_with_gm = helpers + """
out["chgrp to GM"] = e(os.chown, "p/c2", -1, GM)
out["owner class only: reads 0060"] = can("p/g0060", os.O_RDONLY)
out["group class only: reads r0606"] = can("p/r0606", os.O_RDONLY)
out["group class only: writes r0747"] = can("p/r0747", os.O_WRONLY)
"""
    out = compare_users(*workdirs.pair("groups"), setup, cast.steps(
        (cast.a, a_body), (cast.b, b_body), (cast.a_with("GA"), a_without_g2),
        (cast.a_with("G2", "GA", "GM"), a_with_gm)))
    assert out[0]["chgrp to G2"] == "ok" and out[0]["chgrp to GM"] == "EPERM"
    assert out[0]["modes"] == [oct(0o100755), oct(0o40755), oct(0o102755)]
    if parent_mode == 0o755:
        assert out[1]["member reads 0060"] == "ok" and out[1]["member writes r0747"] == "EACCES"
    assert out[2]["reads r0604"] == "ok" and out[3]["group class only: reads r0606"] == "EACCES"


def test_new_objects_take_fsgid_or_setgid_parents_group(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    A, G2, GM = cast["A"], cast["G2"], cast["GM"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        put(p / "sg", A, GM, 0o2755, None)  # setgid, of a group a is not in
        put(p / "sg2", A, G2, 0o2755, None)  # setgid, of a's second group

    make = """
import stat as S
os.umask(0o022)
def objects(prefix):
    create(prefix + "f", 0o666)
    os.mkdir(prefix + "d", 0o777)
    os.mkdir(prefix + "d/e")
    create(prefix + "d/e/f")
    os.mkfifo(prefix + "q", 0o666)
    os.mknod(prefix + "n", 0o640 | S.S_IFIFO)
    create(prefix + "s", 0o2755)
    os.mkdir(prefix + "m", 0o2777)
    return {n: st(prefix + n) for n in ("f", "d", "d/e", "d/e/f", "q", "n", "s", "m")}
"""
    a_body = make + """
for d in ("p/", "p/sg/", "p/sg2/"):
    out[d] = objects(d + "a")
"""
    # fsgid G2: new objects take the process's fsgid, not the uid's first group
    a_fsgid_g2 = make + """
for d in ("p/", "p/sg/"):
    out[d] = objects(d + "h")
"""
    out = compare_users(*workdirs.pair("newgid"), setup, cast.steps(
        (cast.a, a_body), (cast.a_with("G2", "GA"), a_fsgid_g2)))
    assert out[0]["p/sg/"]["d"][2] == GM and out[1]["p/"]["q"][2] == G2


def test_group_writes_through_the_process_groups(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    """Changes the MRC judges too (entries, sizes, times), granted by the group class."""
    GM = cast["GM"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        put(p / "gw", 0, GM, 0o770, None)  # b's group may change entries here
        for name in ("f", "g", "victim"):
            put(p / "gw" / name, 0, GM, 0o660, b"0123456789")
            os.utime(p / "gw" / name, ns=(10**9, 10**9))

    body = """
tag = str(os.getuid()) + "-" + str(len(os.getgroups()))
d = "p/gw/"
out["create"] = e(create, d + "c" + tag)
out["mkdir"] = e(os.mkdir, d + "d" + tag)
out["symlink"] = e(os.symlink, "f", d + "s" + tag)
out["link"] = e(os.link, d + "f", d + "l" + tag)
out["rename"] = e(os.rename, d + "g", d + "g" + tag)
out["unlink"] = e(os.unlink, d + "victim")
out["truncate"] = e(os.truncate, d + "f", 4)
out["utime now"] = e(os.utime, d + "f", None)
out["write"] = e(write, d + "f", b"ab")
try:
    out["mtime moved"] = os.stat(d + "f").st_mtime_ns > 10**9
except OSError as x:
    out["mtime moved"] = errno.errorcode[x.errno]
"""
    # b (GM through its supplementary groups), then a (not in GM), then a with GM
    out = compare_users(*workdirs.pair("groupw"), setup, cast.steps(
        (cast.b, body), (cast.a, body), (cast.a_with("GA", "G2", "GM"), body)))
    assert out[1]["create"] == "EACCES" and out[2]["create"] == "ok"
    if parent_mode == 0o755:
        assert out[0]["create"] == "ok" and out[0]["truncate"] == "ok"


# ------------------------------------------------------------- B: FIFOs and sockets
def test_fifo_and_socket_opens_are_checked(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    A, GA, GM = cast["A"], cast["GA"], cast["GM"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        for name, uid, gid, mode in (("rq", 0, 0, 0o600), ("oq", 0, 0, 0o666),
                                     ("aq", A, GA, 0o600), ("gq", 0, GM, 0o060)):
            os.mkfifo(p / name)
            os.chown(p / name, uid, gid)
            os.chmod(p / name, mode)
        for name, mode in (("rs", 0o600), ("os", 0o666)):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.bind(str(p / name))  # nothing listens once it is closed
            os.chmod(p / name, mode)

    body = """
import socket
def opened(p, flags):
    os.close(os.open(p, flags | os.O_NONBLOCK))
def connect(p):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(p)
for name in ("rq", "oq", "aq", "gq"):
    out[name + " read"] = e(opened, "p/" + name, os.O_RDONLY)
    out[name + " write"] = e(opened, "p/" + name, os.O_WRONLY)
for name in ("rs", "os"):
    out[name + " connect"] = e(connect, "p/" + name)
"""
    out = compare_users(*workdirs.pair("fifo"), setup,
                        cast.steps((cast.a, body), (cast.b, body)))
    assert out[0]["rq read"] == "EACCES" and out[0]["rs connect"] == "EACCES"
    assert out[0]["aq read"] == "ok" and out[0]["oq write"] == "ENXIO"


# ------------------------------------------------------------------ C: directory opens
def test_directory_open_needs_read_search_needs_execute(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    A, GA, GM = cast["A"], cast["GA"], cast["GM"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        for name, uid, gid, mode in (("wx", A, GA, 0o300), ("x", 0, 0, 0o711),
                                     ("r", A, GA, 0o600), ("gx", 0, GM, 0o710),
                                     ("rx", 0, 0, 0o755)):
            put(p / name, 0, 0, 0o755, None)
            put(p / name / "f", 0, 0, 0o644)
            os.chown(p / name, uid, gid)
            os.chmod(p / name, mode)

    body = """
def listed(d):
    return sorted(os.listdir(d))
for name in ("wx", "x", "r", "gx", "rx"):
    d = "p/" + name
    out[name + " stat child"] = e(os.stat, d + "/f")  # first, so that it is cached
    out[name + " open child"] = e(lambda: os.close(os.open(d + "/f", os.O_RDONLY)))
    out[name + " open dir"] = e(lambda: os.close(os.open(d, os.O_RDONLY | os.O_DIRECTORY)))
    out[name + " listdir"] = e(listed, d)
    out[name + " names"] = listed(d) if out[name + " listdir"] == "ok" else None
    out[name + " stat child again"] = e(os.stat, d + "/f")
"""
    out = compare_users(*workdirs.pair("opendir"), setup,
                        cast.steps((cast.a, body), (cast.b, body)))
    assert out[0]["wx open dir"] == "EACCES" and out[0]["wx stat child"] == "ok"
    assert out[0]["x listdir"] == "EACCES" and out[0]["r stat child"] == "EACCES"


# -------------------------------------------------------- D: search permission rechecked
def test_search_rechecked_at_once_after_chmod(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    A, GA = cast["A"], cast["GA"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        put(p / "dir", A, GA, 0o755, None)
        put(p / "dir" / "file", A, GA, 0o644)
        put(p / "dir" / "sub", A, GA, 0o755, None)
        put(p / "dir" / "sub" / "g", A, GA, 0o644)

    view = """
out["stat"] = e(os.stat, "p/dir/file")
out["stat deeper"] = e(os.stat, "p/dir/sub/g")
out["chmod"] = e(os.chmod, "p/dir/file", 0o644)
out["open"] = e(lambda: os.close(os.open("p/dir/file", os.O_RDONLY)))
out["list"] = e(os.listdir, "p/dir")
out["list sub"] = e(os.listdir, "p/dir/sub")
out["stat dir"] = e(os.stat, "p/dir")
"""
    steps: list[tuple[Actor, str]] = [(cast.a, view), (cast.b, view)]  # both cache the entries
    for mode in (0o644, 0o600, 0o711, 0o755):
        steps += [(cast.a, f'out["chmod dir"] = e(os.chmod, "p/dir", {mode})\n' + view),
                  (cast.b, view)]
    out = compare_users(*workdirs.pair("recheck"), setup, cast.steps(*steps))
    assert out[2]["stat"] == "EACCES" and out[6]["stat"] == "ok"
    if parent_mode == 0o755:
        assert out[1]["stat"] == "ok" and out[3]["stat"] == "EACCES"


# ------------------------------------------------ E: ftruncate of a 0-mode file; ctime
def test_ftruncate_of_created_zero_mode_file_and_ctime_of_chown(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    A, B, GA, GB = cast["A"], cast["B"], cast["GA"], cast["GB"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        put(p / "af", A, GA, 0o644, b"0123456789")
        put(p / "bw", B, GB, 0o666, b"0123456789")
        put(p / "ct", A, GA, 0o644)

    helpers = """
import time
def write_then_chmod_0(p):
    try:
        fd = os.open(p, os.O_WRONLY)
    except OSError as x:
        return "open " + errno.errorcode[x.errno]
    try:
        return [e(os.chmod, p, 0), e(os.ftruncate, fd, 3), os.fstat(fd).st_size]
    finally:
        os.close(fd)
def ctime_grows(p):
    try:
        before = os.stat(p).st_ctime_ns
    except OSError as x:
        return errno.errorcode[x.errno]
    time.sleep(0.05)  # let the clock move
    done = e(os.chown, p, -1, -1)
    return [done, os.stat(p).st_ctime_ns > before]
"""
    a_body = helpers + """
fd = os.open("p/z", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0)
out["write"] = e(os.write, fd, b"abc")
out["ftruncate"] = e(os.ftruncate, fd, 10)
out["fstat"] = [os.fstat(fd).st_size, oct(os.fstat(fd).st_mode)]
out["close"] = e(os.close, fd)
out["truncate by owner"] = e(os.truncate, "p/z", 5)
out["reopen"] = e(os.open, "p/z", os.O_RDWR)
out["written then chmod 0"] = write_then_chmod_0("p/af")
out["chown -1 -1 own"] = ctime_grows("p/ct")
"""
    b_body = helpers + """
out["truncate by other"] = e(os.truncate, "p/z", 5)
out["open by other"] = e(os.open, "p/z", os.O_WRONLY)
out["create"] = e(lambda: os.close(os.open("p/bz", os.O_CREAT | os.O_RDWR, 0)))
out["written then chmod 0"] = write_then_chmod_0("p/bw")
out["chown -1 -1 other's"] = ctime_grows("p/ct")
"""
    out = compare_users(*workdirs.pair("ftrunc"), setup, cast.steps(
        (cast.a, a_body), (cast.b, b_body)))
    assert out[0]["ftruncate"] == "ok" and out[0]["close"] == "ok"
    assert out[0]["truncate by owner"] == "EACCES" and out[0]["chown -1 -1 own"] == ["ok", True]
    assert out[1]["truncate by other"] == "EACCES"


def test_writes_after_ftruncate_through_descriptor_the_mode_refuses(
    cast: Cast, parent_mode: int, workdirs: Workdirs
) -> None:
    """A descriptor keeps writing after its own ftruncate even when the mode no longer
    allows opening the file: the truncate's reply carries the descriptor's new XCap (the
    new truncate epoch), so no open is checked against the mode bits again."""
    A, GA = cast["A"], cast["GA"]

    def setup(root: Path) -> None:
        p = make_parent(root, cast, parent_mode)
        put(p / "af", A, GA, 0o644, b"0123456789")

    a_body = """
fd = os.open("p/z", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0)
out["created"] = [e(os.ftruncate, fd, 10), e(os.write, fd, b"abc"), e(os.fsync, fd),
                  e(os.close, fd)]
fd = os.open("p/af", os.O_WRONLY)
out["chmod 0 after open"] = [e(os.chmod, "p/af", 0), e(os.ftruncate, fd, 4),
                             e(os.write, fd, b"zz"), e(os.close, fd)]
"""
    read_back = """
out["contents"] = [open(p, "rb").read().hex() for p in ("p/z", "p/af")]
"""
    out = compare_users(*workdirs.pair("ftrunc-w"), setup, cast.steps(
        (cast.a, a_body), ("root", read_back)))
    assert out[1]["contents"] == [b"abc".hex() + "00" * 7, b"zz23".hex()]


# ------------------------------------------- two accounts, one mount, caches on
def test_two_accounts_see_local_disk_right_after_parent_chmod(
    acc: Accounts, workdirs: Workdirs
) -> None:
    alice, bob = acc.alice, acc.bob

    def setup(root: Path) -> None:
        os.chmod(root, 0o755)
        put(root / "home", acc.uid(alice), acc.gid(alice), 0o755, None)

    tree_body = """
os.umask(0o022)
os.mkdir("home/t")
with open("home/t/f", "w") as f:
    f.write("hello")
os.mkdir("home/t/sub")
with open("home/t/sub/g", "w") as f:
    f.write("deeper")
create("home/t/secret", 0o600)
os.mkdir("home/t/x", 0o711)
with open("home/t/x/h", "w") as f:
    f.write("hidden name")
"""
    view = """
def read(p):
    with open(p) as f:
        return f.read()
def attempt(fn, p):
    try:
        return fn(p)
    except OSError as x:
        return errno.errorcode[x.errno]
for p in ("home", "home/t", "home/t/f", "home/t/sub", "home/t/sub/g", "home/t/secret",
          "home/t/x", "home/t/x/h", "home/t/missing"):
    out["stat " + p] = attempt(st, p)
for p in ("home", "home/t", "home/t/sub", "home/t/x"):
    out["list " + p] = attempt(lambda d: sorted(os.listdir(d)), p)
for p in ("home/t/f", "home/t/sub/g", "home/t/secret", "home/t/x/h"):
    out["read " + p] = attempt(read, p)
"""
    steps: list[tuple[Actor, str]] = [(alice, tree_body), (bob, view), (alice, view)]
    for d in ("home", "home/t"):
        for mode in (0o700, 0o711, 0o755):
            steps += [(alice, f"os.chmod({d!r}, {mode})\n"), (bob, view)]
    out = compare_users(*workdirs.pair("twoaccounts"), setup, steps)
    assert out[1]["read home/t/f"] == "hello"
    assert out[4]["stat home/t/f"] == "EACCES"  # home 0700
    assert out[6]["list home"] == "EACCES" and out[6]["stat home/t/f"][0] == 0o644  # 0711
