"""Everyday tools on the mount give what they give in a local directory.

Each test runs the same commands in a fresh directory of the mount and in a fresh local
directory, then compares listings, contents (sha256), modes, link counts, sizes and, where
the test set them explicitly, modification times.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.grid import Grid, Workdirs, run

pytestmark = [pytest.mark.fuse]

SOURCE = Path(__file__).resolve().parents[2] / "xfs"
CMD_TIMEOUT = 60


def sh(script: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a shell script in ``cwd``; returns stdout, fails the test on a non-zero exit."""
    proc = run(["sh", "-ec", script], cwd=cwd, timeout=CMD_TIMEOUT, env=env)
    return proc.stdout


def both(script: str, remote: Path, local: Path, env: dict[str, str] | None = None) -> str:
    """Run ``script`` in both directories; their outputs must be equal."""
    out_remote = sh(script, remote, env)
    out_local = sh(script, local, env)
    assert out_remote == out_local, f"{script!r}\nmount:\n{out_remote}\nlocal:\n{out_local}"
    return out_remote


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path, *, mtimes: bool = False, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a tree holds: per relative path its type, permission bits, link count (not for
    directories, whose counts depend on the file system), size and sha256 of regular files,
    and symlink targets."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            entry: dict[str, Any] = {"mode": oct(stat.S_IMODE(st.st_mode))}
            if stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                entry.update(type="link", target=os.readlink(p), size=st.st_size)
            else:
                entry.update(type="file", size=st.st_size, nlink=st.st_nlink, sha=sha256(p))
            if mtimes and not stat.S_ISLNK(st.st_mode):
                entry["mtime"] = st.st_mtime_ns
            out[rel] = entry
    return out


def assert_same_tree(remote: Path, local: Path, **kwargs: Any) -> dict[str, Any]:
    a, b = snapshot(remote, **kwargs), snapshot(local, **kwargs)
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    diffs = [
        f"{path} {field}: mount {a[path].get(field)!r} local {b[path].get(field)!r}"
        for path in sorted(a)
        for field in sorted(set(a[path]) | set(b[path]))
        if a[path].get(field) != b[path].get(field)
    ]
    assert not diffs, "\n".join(diffs)
    return a


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of the xfs sources (others edit the live tree while tests run)."""
    root = tmp_path_factory.mktemp("src")
    dst = root / "xfs"
    shutil.copytree(SOURCE, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dst / "empty-dir").mkdir()
    (dst / "empty-file").touch()
    os.chmod(dst / "empty-file", 0o600)
    (dst / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(dst / "script.sh", 0o755)
    os.symlink("embedded.py", dst / "link-to-embedded")
    os.symlink("../nowhere", dst / "dangling")
    os.link(dst / "embedded.py", dst / "hardlink-to-embedded")
    return dst


@pytest.fixture(scope="module")
def tarball(source_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tar") / "src.tar"
    run(["tar", "cf", str(out), "-C", str(source_tree.parent), source_tree.name],
        timeout=CMD_TIMEOUT)
    return out


@pytest.mark.timeout(120)
def test_cp_r_of_a_source_tree(workdirs: Workdirs, source_tree: Path) -> None:
    remote, local = workdirs.pair("cp")
    both(f"cp -r {source_tree} copy", remote, local)
    tree = assert_same_tree(remote / "copy", local / "copy")
    assert tree["embedded.py"]["sha"] == sha256(source_tree / "embedded.py")
    assert len(tree) > 50
    # cp -a keeps modes and hard links as well (times: see test_times_set_through_an_open_file)
    both(f"cp -a {source_tree} archive", remote, local)
    tree = assert_same_tree(remote / "archive", local / "archive")
    assert tree["hardlink-to-embedded"]["nlink"] == 2
    assert snapshot(remote / "archive") == snapshot(source_tree)
    run(["diff", "-r", "--no-dereference", str(source_tree), str(remote / "archive")],
        timeout=CMD_TIMEOUT)


@pytest.mark.timeout(120)
def test_tar_x_of_a_tarball(workdirs: Workdirs, tarball: Path, source_tree: Path) -> None:
    remote, local = workdirs.pair("tar")
    both(f"tar xf {tarball}", remote, local)
    assert_same_tree(remote / "xfs", local / "xfs")
    assert snapshot(remote / "xfs") == snapshot(source_tree)
    # directories' times are set after their contents, by path: those survive
    both("find xfs -type d -printf '%P %T@\\n' | sort", remote, local)
    # and a tarball made on the mount lists and extracts the same
    both(f"tar cf ../{remote.name}.tar xfs && tar tvf ../{remote.name}.tar "
         "| awk '{$4 = $5 = \"\"; print}' | sort",
         remote, local)
    both(f"rm -rf xfs && tar xf ../{remote.name}.tar && rm ../{remote.name}.tar",
         remote, local)
    assert_same_tree(remote / "xfs", local / "xfs")


@pytest.fixture(scope="module")
def git_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("githome")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
        "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z",
        "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
        "LC_ALL": "C",
    }
    return env


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory, git_env: dict[str, str]) -> Path:
    repo = tmp_path_factory.mktemp("origin") / "repo"
    repo.mkdir()
    sh(
        """
        git init -q -b main .
        mkdir -p src docs
        printf 'print("hello")\\n' > src/hello.py
        printf '# readme\\n' > README.md
        git add -A && git commit -q -m first
        head -c 300000 /dev/urandom > docs/blob.bin
        printf 'x\\n' > src/exe.sh && chmod 755 src/exe.sh
        ln -s src/hello.py hello-link
        git add -A && git commit -q -m second
        git rm -q README.md && printf 'more\\n' >> src/hello.py
        git commit -q -am third
        """,
        repo,
        git_env,
    )
    return repo


@pytest.mark.timeout(120)
def test_git_clone_status_log(workdirs: Workdirs, git_repo: Path,
                              git_env: dict[str, str]) -> None:
    remote, local = workdirs.pair("git")
    both(f"git clone -q {git_repo} clone", remote, local, git_env)
    assert_same_tree(remote / "clone", local / "clone", skip=(".git",))
    clone_r, clone_l = remote / "clone", local / "clone"
    assert both("git status --porcelain", clone_r, clone_l, git_env) == ""
    log = both("git log --format='%H %s'", clone_r, clone_l, git_env)
    assert [line.split()[1] for line in log.splitlines()] == ["third", "second", "first"]
    both("git fsck --full --no-progress 2>&1", clone_r, clone_l, git_env)
    # an edit, a new file and a removal show up
    script = "printf 'edit\\n' >> src/hello.py && touch new.txt && rm src/exe.sh"
    both(script, clone_r, clone_l, git_env)
    status = both("git status --porcelain", clone_r, clone_l, git_env)
    assert status.splitlines() == [" D src/exe.sh", " M src/hello.py", "?? new.txt"]
    diff = both("git diff", clone_r, clone_l, git_env)
    assert "+edit" in diff
    # commit it, and the tree is clean again
    both("git add -A && git commit -q -m fourth && git status --porcelain",
         clone_r, clone_l, git_env)
    both("git log --format='%H %s' -n 2", clone_r, clone_l, git_env)
    both("git checkout -q HEAD~2 && git status --porcelain && ls -l | tail -n +2 "
         "| awk '{print $1, $NF}'",
         clone_r, clone_l, git_env)
    assert_same_tree(clone_r, clone_l, skip=(".git",))


@pytest.mark.timeout(120)
def test_find_and_du(workdirs: Workdirs, source_tree: Path) -> None:
    remote, local = workdirs.pair("find")
    both(f"cp -a {source_tree} t", remote, local)
    listing = both("find t | sort", remote, local)
    assert "t/embedded.py" in listing.splitlines()
    both("find t -type f | sort", remote, local)
    both("find t -type l -printf '%p -> %l\\n' | sort", remote, local)
    both("find t -type d | sort", remote, local)
    both("find t -name '*.py' -newer t/script.sh | sort", remote, local)
    both("find t -not -type d -printf '%P %s %m %n %y\\n' | sort", remote, local)
    both("find t -empty | sort", remote, local)
    both("find t -size +10k -type f | sort", remote, local)
    # du: a directory's own size depends on the file system (ext4: 4096), so compare
    # every non-directory entry, and the total less the directories' own sizes.
    both("du -ab --apparent-size t | sort -k2 | while read n p; do [ -d \"$p\" ] || "
         "echo \"$n $p\"; done", remote, local)

    def du_total(root: Path) -> int:
        total = int(sh("du -sb --apparent-size t", root).split()[0])
        dirs = sh("find t -type d -printf '%s\\n'", root).split()
        return total - sum(int(d) for d in dirs)

    assert du_total(remote) == du_total(local)
    # and du -s --apparent-size of the files alone (no directory in the argument list)
    both("du -cb --apparent-size $(find t -type f | sort) | tail -1", remote, local)


@pytest.mark.timeout(120)
def test_ln_symlink_mv_chmod_touch(workdirs: Workdirs) -> None:
    remote, local = workdirs.pair("ln")
    script = r"""
        mkdir -p a/deep b
        printf 'hello world\n' > a/f
        ln a/f a/hard
        ln a/f b/hard2
        ln -s f a/sym
        ln -s ../a/f b/sym-rel
        ln -s /nonexistent/target b/dangling
        stat -c '%n %h %s' a/f a/hard b/hard2
        cat a/sym b/sym-rel
        readlink a/sym b/sym-rel b/dangling
        ! cat b/dangling 2>/dev/null
        mv a/hard b/moved
        mv a/deep b/deep
        mv b/sym-rel a/sym-moved
        printf 'x' > b/target
        mv a/f b/target
        ls a b | cat
        stat -c '%n %h %s' b/target b/moved b/hard2
        cat b/target
        chmod 640 b/target
        chmod u+x,g-r b/moved
        chmod 1777 b/deep
        stat -c '%n %a %A %h' b/target b/moved b/hard2 b/deep
        touch -d '2001-02-03 04:05:06.123456789' b/target
        touch -m -d '@1000000000' b/deep
        touch -h -d '2010-01-01 00:00:00' a/sym 2>/dev/null || true
        stat -c '%n %Y %y' b/target b/moved b/deep
        rm b/moved
        stat -c '%n %h' b/target b/hard2
        ln -sf b/target a/sym
        readlink a/sym
        ln -f b/target a/forced
        stat -c '%n %h' a/forced
        ! mv b b/inside 2>/dev/null
        ! rmdir b 2>/dev/null
        mkdir e && rmdir e/
        ls -R | cat
    """
    out = both(script, remote, local)
    assert "hello world" in out
    tree = assert_same_tree(remote, local, mtimes=False)
    assert tree["b/target"]["mode"] == "0o700"  # chmod of its link b/moved
    assert tree["b/target"]["nlink"] == 3
    assert tree["b/deep"]["mode"] == "0o1777"
    assert tree["a/sym"]["target"] == "b/target"
    st = os.stat(remote / "b" / "target")
    assert st.st_mtime_ns == 981173106_123456789
    assert os.stat(remote / "b" / "deep").st_mtime_ns == 1_000_000_000_000_000_000
    assert st.st_mtime_ns == os.stat(local / "b" / "target").st_mtime_ns


@pytest.mark.timeout(120)
def test_stat_of_results(workdirs: Workdirs) -> None:
    remote, local = workdirs.pair("stat")
    script = r"""
        umask 022
        printf 'abc' > f
        head -c 3000000 /dev/zero > big
        mkdir d
        ln -s f s
        chmod 604 f
        touch -d '2020-05-06 07:08:09' f d
        truncate -s 12345 big
        truncate -s 1M sparse
        stat -c '%n type=%F mode=%a nlink=%h size=%s' f big d s sparse | grep -v '^d '
        stat -c '%n mtime=%Y' f d
        stat -L -c '%n %s %a' s
        printf 'zz' >> f
        stat -c '%n %s' f
        cat f
    """
    both(script, remote, local)
    assert_same_tree(remote, local)
    rst, lst = (remote / "f").stat(), (local / "f").stat()
    assert (rst.st_mode, rst.st_nlink, rst.st_size) == (lst.st_mode, lst.st_nlink, lst.st_size)
    assert (remote / "d").stat().st_mtime_ns == (local / "d").stat().st_mtime_ns
    assert rst.st_uid == 0 and rst.st_gid == 0


@pytest.mark.timeout(120)
def test_user_xattrs(workdirs: Workdirs) -> None:
    remote, local = workdirs.pair("xattr")
    script = r"""
        printf 'data' > f
        mkdir d
        setfattr -n user.color -v blue f
        setfattr -n user.empty f
        setfattr -n user.bin -v 0x00ff10 f
        setfattr -n user.dir -v "on a directory" d
        getfattr -d -e hex f | sort
        getfattr -n user.color --only-values f; echo
        getfattr -d d | sort
        setfattr -n user.color -v red f
        getfattr -n user.color f
        setfattr -x user.empty f
        getfattr -d f | sort
        ! getfattr -n user.missing f 2>/dev/null
        ! setfattr -x user.missing f 2>/dev/null
        cp --preserve=xattr f g
        getfattr -d g | sort
        mv g h
        getfattr -d h | sort
    """
    out = both(script, remote, local)
    assert 'user.color="red"' in out
    assert "user.bin=0x00ff10" in out
    # errno on a missing attribute: ENODATA, as locally
    for d in (remote, local):
        with pytest.raises(OSError) as e:
            os.getxattr(d / "f", "user.missing")
        assert e.value.errno == 61  # ENODATA
    assert sorted(os.listxattr(remote / "f")) == sorted(os.listxattr(local / "f"))


@pytest.mark.timeout(120)
def test_times_set_through_an_open_file(
    workdirs: Workdirs, source_tree: Path, tarball: Path
) -> None:
    remote, local = workdirs.pair("futimens")
    for d in (remote, local):
        fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"abc")
            os.utime(fd, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        finally:
            os.close(fd)
    time.sleep(1.5)  # past the kernel's attribute cache (1 s), which hides the change
    assert (local / "f").stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert (remote / "f").stat().st_mtime_ns == 1_000_000_000_000_000_000
    both(f"cp -a {source_tree} archive && tar xf {tarball}", remote, local)
    assert_same_tree(remote / "archive", local / "archive", mtimes=True)
    assert_same_tree(remote / "xfs", local / "xfs", mtimes=True)


@pytest.mark.timeout(60)
def test_grid_is_still_the_one_we_started(grid: Grid) -> None:
    """The tools above did not bring any process down."""
    assert set(grid.pids()) == {"mrc", "osd1", "osd2", "osd3", "mount"}
    assert subprocess.run(["mountpoint", "-q", str(grid.mnt)], timeout=10).returncode == 0
