"""xfs file-system benchmark: the same workloads on local disk, a pyfuse3 pass-through
file system (the Python FUSE ceiling) and xfs (a directory with replication factor 1 and
one with rw factor 3, in one grid), in one run, with ratios.

    python bench/fsbench.py [--size-mib 1024] [--files 5000] [--repeat 3]
                            [--workloads seq,rand,meta,stat2,small,append,criu,ckpt,user]
                            [--only local,passthrough,xfs1,xfs3] [--as-user NAME]
                            [--xfs-state DIR] [--json PATH]

See bench/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import importlib.util
import json
import os
import platform
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS = ("local", "passthrough", "xfs1", "xfs3", "xfs3pg")
DEFAULT_TARGETS = TARGETS[:4]  # xfs3pg on request (--only): a grid of its own
ALIASES = {"xfs": "xfs3"}
XFS_POLICIES = {  # the xattr xfs.policy each xfs target's directory gets (xfs policy set)
    "xfs1": {"replication": "none", "factor": 1},
    "xfs3": {"replication": "rw", "factor": 3},  # the home volume's own default
    "xfs3pg": {"replication": "rw", "factor": 3},  # xfs3 on a grid whose MRC uses PostgreSQL
}
PG_TARGETS = ("xfs3pg",)
WORKLOADS = ("seq", "rand", "meta", "stat2", "small", "append", "criu", "ckpt", "user")
FIGURES = (  # key, label, unit
    ("seq_write", "seq write", "MiB/s"),
    ("seq_read", "seq read, cold", "MiB/s"),
    ("rand_read", "4 KiB random read", "IOPS"),
    ("rand_write", "4 KiB random write + fsync", "writes/s"),
    ("create", "create", "ops/s"),
    ("stat", "stat, after remount", "ops/s"),
    ("readdir", "readdir", "entries/s"),
    ("unlink", "unlink", "ops/s"),
    ("stat_pass1", "stat, pass 1", "ops/s"),
    ("stat_pass2", "stat, pass 2", "ops/s"),
    ("small_write", "16 KiB files, write", "files/s"),
    ("small_read", "16 KiB files, read cold", "files/s"),
    ("append", "4 KiB O_APPEND writes", "writes/s"),
    ("criu", "CRIU-like image", "MiB/s"),
    ("ckpt_app", "checkpoint version, app-level", "MiB/s"),
    ("ckpt_criu", "checkpoint version, CRIU-style", "MiB/s"),
    ("user_create", "create, as user", "ops/s"),
    ("user_stat", "stat after remount, as user", "ops/s"),
)
RATIOS = (  # column, numerator, denominator; the table shows the first four
    ("xfs1/pt", "xfs1", "passthrough"),
    ("xfs3/pt", "xfs3", "passthrough"),
    ("xfs3/local", "xfs3", "local"),
    ("pt/local", "passthrough", "local"),
    ("xfs1/local", "xfs1", "local"),
    ("xfs3/xfs1", "xfs3", "xfs1"),
    ("xfs3pg/xfs3", "xfs3pg", "xfs3"),  # shown when xfs3pg ran: PostgreSQL against SQLite
    ("xfs3pg/pt", "xfs3pg", "passthrough"),
)
TABLE_RATIOS = 4
PASSTHROUGH_TIMEOUT = 1.0  # bench/passthrough.py's own default (libfuse's too)
ACCOUNT = "xfsbench"  # the local account of the `user` workload, made if missing


def _load_workloads():
    spec = importlib.util.spec_from_file_location("xfs_bench_workloads", HERE / "workloads.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wl = _load_workloads()


class NotRun(Exception):
    """A target could not be benchmarked; the message says why, in one line."""


@dataclass
class Target:
    d: Path  # where the workloads run
    backing: list[Path]  # what to evict from the page cache for cold reads
    remount: Callable[[], None] | None = None  # unmount, mount again (FUSE targets)


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: list[int]


def _venv_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _wait_mounted(mnt: Path, deadline_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while not os.path.ismount(mnt):
        if proc is not None and proc.poll() is not None:
            raise NotRun(f"exited with status {proc.returncode} before mounting")
        if time.monotonic() > deadline:
            raise NotRun(f"{mnt} not mounted after {deadline_s:.0f}s")
        time.sleep(0.05)


def _unmount(mnt: Path) -> None:
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    if os.path.ismount(mnt):  # busy: detach lazily so nothing is left behind
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def local_target(work: Path, notes: dict) -> Iterator[Target]:
    d = work / "local"
    d.mkdir()
    yield Target(d, [])


class Passthrough:
    """bench/passthrough.py serving `work`/pt-src at `work`/pt-mnt; `remount` restarts it."""

    def __init__(self, work: Path, timeout: float) -> None:
        self.src, self.mnt = work / "pt-src", work / "pt-mnt"
        self.log_path = work / "passthrough.log"
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [_venv_python(), str(HERE / "passthrough.py"), str(self.src), str(self.mnt),
                "--attr-timeout", str(self.timeout)]
        if os.geteuid() == 0:
            argv.append("--allow-other")  # for the `user` workload, as xfs's mount has
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_mounted(self.mnt, 15, self.proc)
        except NotRun as e:
            raise NotRun(f"passthrough {e}: {_one_line(self.log_path.read_text())}") from None

    def stop(self) -> None:
        _unmount(self.mnt)
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def remount(self) -> None:
        self.stop()
        self.start()

    def stats(self) -> dict[str, int]:
        """The request statistics of every pass-through process of this target, summed."""
        total: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text().splitlines():
                if line.startswith("passthrough stats:"):
                    for kv in line.split(":", 1)[1].split():
                        k, v = kv.split("=")
                        merge = max if k.endswith("_max") else int.__add__
                        total[k] = merge(total.get(k, 0), int(v))
        return total


@contextlib.contextmanager
def passthrough_target(work: Path, notes: dict, timeout: float) -> Iterator[Target]:
    pt = Passthrough(work, timeout)
    pt.src.mkdir()
    pt.mnt.mkdir()
    pt.log_path.write_text("")
    notes["entry_attr_timeout"] = f"{timeout:g}s"
    if os.geteuid() == 0:
        notes["allow_other"] = "yes"
    try:
        pt.start()
        yield Target(pt.mnt, [pt.src], pt.remount)
    finally:
        pt.stop()
        st = pt.stats()
        for op in ("write", "read"):
            if st.get(op):
                notes[f"fuse_{op}_kib"] = (f"avg {st[op + '_bytes'] / st[op] / 1024:.0f}"
                                           f" max {st[op + '_max'] / 1024:.0f}")
        if st:
            notes["fuse_requests"] = f"lookup {st.get('lookup', 0)} " \
                                     f"getattr {st.get('getattr', 0)}"


def _xfs_code() -> tuple[str, int]:
    """Where the xfs package the grid's processes import lives, and a stamp of its
    sources (their mtimes and sizes): every (re)start of a process imports them anew."""
    spec = importlib.util.find_spec("xfs")
    if spec is None or not spec.submodule_search_locations:
        return "?", 0
    top = Path(next(iter(spec.submodule_search_locations)))
    stamp = hash(tuple(sorted((str(f), f.stat().st_mtime_ns, f.stat().st_size)
                              for f in top.rglob("*.py"))))
    return str(top), stamp


class XfsGrid:
    """The embedded grid (`xfs up`) that the xfs targets share: brought up at its first
    use, `remount` unmounts the home volume and mounts it again (the MRC and the OSDs go
    on running), `down` stops it (`xfs down`)."""

    def __init__(self, work: Path, state: Path | None, timeout_s: float, notes: dict,
                 metadata: str = "sqlite") -> None:
        self.xfs = REPO / ".venv" / "bin" / "xfs"
        self.state = state or work / "xfs-state"
        self.mnt = work / "xfs-mnt"
        self.metadata = metadata
        self.timeout_s = timeout_s
        self.notes = notes
        self.is_up = False
        self.failed: str | None = None
        self.code: tuple[str, int] = ("?", 0)

    def _up(self) -> None:
        try:
            r = subprocess.run([str(self.xfs), "up", "--state", str(self.state),
                                "--mountpoint", str(self.mnt), "--metadata", self.metadata],
                               capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise NotRun(f"`xfs up` did not return within {self.timeout_s:.0f}s") from None
        if r.returncode != 0:
            raise NotRun(f"`xfs up` exited {r.returncode}: {_one_line(r.stderr + r.stdout)}")
        if not os.path.ismount(self.mnt):
            raise NotRun(f"`xfs up` returned but {self.mnt} is not a mount point")

    def mount(self) -> Path:
        if self.failed:
            raise NotRun(self.failed)
        if self.is_up:
            return self.mnt
        try:
            if not self.xfs.exists():
                raise NotRun(f"no {self.xfs}")
            self.state.mkdir(parents=True, exist_ok=True)
            self.mnt.mkdir(exist_ok=True)
            self.is_up = True  # from here on, `down` has something to stop
            self._up()
        except NotRun as e:
            self.failed = str(e)
            raise
        self.code = _xfs_code()
        self.notes["code"] = self.code[0]
        self.notes["metadata"] = self.metadata
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, KeyError):
            mount = tomllib.loads((self.state / "mount" / "mount.toml").read_text())
            self.notes["attr_timeout"] = f"{mount['attr_timeout']:g}s"
            self.notes["entry_timeout"] = f"{mount['entry_timeout']:g}s"
            self.notes["allow_other"] = "yes" if mount.get("allow_other", True) else "no"
        return self.mnt

    def remount(self) -> None:
        """fusermount3 -u, wait until the mount process has exited, `xfs up` again."""
        if _xfs_code() != self.code:  # the new mount would run other code than the servers
            self.notes["code_changed"] = "yes: xfs/ was edited during the run; remounted " \
                                         "clients run newer code than the MRC and OSDs"
        pid_file = self.state / "run" / "mount.pid"
        try:
            pid: int | None = int(pid_file.read_text())
        except (OSError, ValueError):
            pid = None
        _unmount(self.mnt)
        deadline, killed = time.monotonic() + self.timeout_s, False
        while pid is not None and _pid_alive(pid):
            if time.monotonic() > deadline:
                if killed:
                    raise OSError(f"remount: the xfs mount process {pid} did not exit")
                os.kill(pid, signal.SIGKILL)  # our grid's mount: `xfs down` would do so too
                deadline, killed = time.monotonic() + 10, True
            time.sleep(0.05)
        try:
            self._up()
        except NotRun as e:
            raise OSError(f"remount: {e}") from None

    def down(self) -> None:
        if not self.is_up:
            return
        self.is_up = False
        try:
            r = subprocess.run([str(self.xfs), "down", "--state", str(self.state)],
                               capture_output=True, text=True, timeout=self.timeout_s)
            if r.returncode != 0 and not self.failed:
                self.notes["xfs_down"] = f"exited {r.returncode}: " \
                                         f"{_one_line(r.stderr + r.stdout)}"
        except subprocess.TimeoutExpired:
            self.notes["xfs_down"] = f"did not return within {self.timeout_s:.0f}s"
        _unmount(self.mnt)
        with contextlib.suppress(OSError, ValueError, KeyError):  # a PostgreSQL cluster:
            where = json.loads((self.state / "grid.json").read_text())["metadata_dir"]
            if where and not (Path(where) / "data" / "postmaster.pid").exists():
                shutil.rmtree(where)  # (root's lives outside the state directory)


@contextlib.contextmanager
def xfs_target(grid: XfsGrid, name: str, notes: dict) -> Iterator[Target]:
    mnt = grid.mount()
    # the home volume's root (0700) searchable by the benchmark's user, whose requests
    # the MRC checks as walks from the root (a working directory below an unsearchable
    # one does not count there)
    os.chmod(mnt, 0o711)
    d = mnt / f"fsbench-{name}-{os.getpid()}-{int(time.time())}"
    try:
        d.mkdir()
    except OSError as e:
        raise NotRun(f"cannot create a directory in the xfs mount: {e}") from None
    try:
        try:
            os.setxattr(d, "xfs.policy", json.dumps(XFS_POLICIES[name]).encode())
            policy = json.loads(os.getxattr(d, "xfs.policy"))
        except OSError as e:
            raise NotRun(f"cannot set the replication policy of {d}: {e}") from None
        notes["policy"] = f"replication={policy['replication']},factor={policy['factor']}"
        probe = d / "probe"  # what a new file in it gets
        with contextlib.suppress(OSError, ValueError, KeyError):
            probe.write_bytes(b"x")
            info = json.loads(os.getxattr(probe, "xfs.replicas"))
            notes["new_file_replicas"] = f"{len(info['replicas'])} ({info['policy']})"
        with contextlib.suppress(OSError):
            probe.unlink()
        yield Target(d, [grid.state], grid.remount)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_account(name: str) -> tuple[Account, bool]:
    """The local account `name`, made (useradd --system, no home, nologin) if missing;
    and whether it was made here (then the caller removes it at the end)."""
    made = False
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--no-create-home",
                            "--shell", "/usr/sbin/nologin", name],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise NotRun(f"useradd {name} exited {r.returncode}: "
                         f"{_one_line(r.stderr + r.stdout)}") from None
        pw, made = pwd.getpwnam(name), True
    if pw.pw_uid == 0:
        raise NotRun(f"{name} is root")
    return Account(name, pw.pw_uid, pw.pw_gid, os.getgrouplist(name, pw.pw_gid)), made


def remove_account(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True, timeout=60)
    with contextlib.suppress(KeyError):
        grp.getgrnam(name)  # userdel leaves the user's group when others are in it
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)


def as_user(account: Account, cwd: Path, fn: Callable[..., float], *args) -> float:
    """`fn(".", *args)` in a forked child that changes into `cwd` (still root), then
    takes the account's groups, gid and uid; its result. Relative paths let the account
    work below directories it may not search (the 0700 temporary directory, the xfs
    home volume's 0700 root), as in its own directory of a mount shared by everyone."""
    sys.stdout.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            os.chdir(cwd)
            os.setgroups(account.groups)
            os.setgid(account.gid)
            os.setuid(account.uid)
            report: dict = {"result": fn(".", *args)}
        except BaseException as e:
            report = {"error": f"{type(e).__name__}: {e}"}
        try:
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(0 if "result" in report else 1)
    os.close(w)
    reaped = False
    try:
        with os.fdopen(r, "rb") as f:
            out = f.read()
        os.waitpid(pid, 0)
        reaped = True
    finally:
        if not reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    try:
        report = json.loads(out)
    except ValueError:
        report = {"error": f"no report ({out[:100]!r})"}
    if "error" in report:
        raise OSError(f"as {account.name} in {cwd}: {report['error']}")
    return float(report["result"])


def _stat_then_unlink(directory: str, n: int) -> float:
    """stat the files create_files made (timed), then unlink them (untimed)."""
    ops = wl.stat_files(directory, n)
    wl.unlink_files(directory, n)
    return ops


def _warm(d: Path, size: int, block: int) -> None:
    # Writing into disk space that was freed seconds ago is several times faster than
    # into space freed long ago or never used (thin-provisioned virtual disks, ext4
    # `discard`), so order alone would decide which target wins. Every timed large
    # write therefore follows an untimed one of the same size.
    wl.seq_write(d, size, block, name="warmup")
    os.unlink(d / "warmup")


def run_workloads(t: Target, args, notes: dict, account: Account | None) -> dict:
    """Every selected workload `args.repeat` times: {"median": {figure: value},
    "runs": {figure: [value per run]}}."""
    runs: list[dict[str, float]] = []
    size, block = args.size_mib * wl.MiB, args.block_kib * 1024
    d = t.d

    def forget() -> None:
        """Between creates and stats: remount (FUSE targets), drop dentries and inodes."""
        if t.remount is not None:
            t.remount()
        dropped = wl.drop_caches(2)
        notes["stat_after"] = ("remount+" if t.remount else "") + \
            f"drop_caches(2)={'yes' if dropped else 'no'}"

    def seq(fig: dict[str, float]) -> None:
        if not args.no_warmup:
            _warm(d, size, block)
        fig["seq_write"] = wl.seq_write(d, size, block)
        rr = wl.seq_read(d, block, backing=t.backing)
        fig["seq_read"] = rr.mib_s
        notes["read_cold"] = f"fadvise={'yes' if rr.fadvised else 'no'} " \
                             f"drop_caches={'yes' if rr.caches_dropped else 'no'}"
        if "rand" in args.workloads:
            fig["rand_read"] = wl.random_reads(d, args.rand_reads, backing=t.backing)
            fig["rand_write"] = wl.random_writes(d, args.rand_reads)
        os.unlink(d / wl.SEQ_FILE)

    def meta(fig: dict[str, float]) -> None:
        fig.update(wl.metadata(d, args.files, between=forget))

    def stat2(fig: dict[str, float]) -> None:
        st = wl.stat_twice(d, args.stat_files)
        fig["stat_pass1"], fig["stat_pass2"] = st.first, st.second
        notes["stat2"] = f"drop_caches(2)={'yes' if st.caches_dropped else 'no'} " \
                         f"pass1={st.first_s:.2f}s (creates {st.create_s:.1f}s, untimed)"

    def small(fig: dict[str, float]) -> None:
        sf = wl.small_files(d, args.small_files, backing=t.backing)
        fig["small_write"], fig["small_read"] = sf.write, sf.read
        notes["small_read_cold"] = f"drop_caches={'yes' if sf.caches_dropped else 'no'}"

    def append(fig: dict[str, float]) -> None:
        fig["append"] = wl.appends(d, args.appends)

    def criu(fig: dict[str, float]) -> None:
        criu_size = args.criu_mib * wl.MiB
        if not args.no_warmup:
            _warm(d, criu_size, wl.MiB)
        cr = wl.criu_image(d, criu_size)
        fig["criu"] = cr.mib_s
        notes["criu_writes"] = f"{cr.page_writes}x4KiB+{cr.run_writes}x1MiB"
        os.unlink(d / wl.CRIU_FILE)

    def ckpt(fig: dict[str, float]) -> None:
        if not args.no_warmup:
            _warm(d, args.ckpt_mib * wl.MiB, wl.MiB)
        fig["ckpt_app"] = wl.checkpoint_version(d, args.ckpt_mib * wl.MiB)
        fig["ckpt_criu"] = wl.checkpoint_image(d, args.criu_mib * wl.MiB)

    def user(fig: dict[str, float]) -> None:
        if account is None:
            return
        ud = d / f"user-{account.name}-{time.monotonic_ns()}"
        ud.mkdir(mode=0o700)
        os.chmod(ud, 0o700)
        os.chown(ud, account.uid, account.gid)
        try:
            fig["user_create"] = as_user(account, ud, wl.create_files, args.files)
            forget()
            fig["user_stat"] = as_user(account, ud, _stat_then_unlink, args.files)
            st_ud = ud.stat()
            notes["user"] = f"{account.name} uid={st_ud.st_uid} " \
                            f"dir={st_ud.st_mode & 0o777:04o}"
        finally:
            shutil.rmtree(ud, ignore_errors=True)

    steps = {"seq": seq, "meta": meta, "stat2": stat2, "small": small, "append": append,
             "criu": criu, "ckpt": ckpt, "user": user}
    failures: list[str] = []
    for i in range(1, args.repeat + 1):
        fig: dict[str, float] = {}
        for name, step in steps.items():
            if name not in args.workloads:
                continue
            try:
                step(fig)
            except (OSError, ValueError) as e:
                # one failed workload costs its own figures of this run, not the target's
                failures.append(f"{name} (run {i}) at {_where(e)}: {e}")
                print(f"  {name} failed in run {i} at {_where(e)}: {e}", flush=True)
        runs.append(fig)
    keys = [k for k, *_ in FIGURES if any(k in r for r in runs)]
    return {"median": {k: statistics.median(r[k] for r in runs if k in r) for k in keys},
            "runs": {k: [r[k] for r in runs if k in r] for k in keys},
            "failures": failures}


def _where(e: BaseException) -> str:
    """The innermost frame of the benchmark's own code that `e` passed through."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if Path(f.filename).resolve().parent == HERE]
    f = frames[-1] if frames else None
    return f"{Path(f.filename).name}:{f.lineno} {f.name}" if f else "?"


def _fs_of(path: Path) -> str:
    best, desc = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if str(path).startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best, desc = mnt, f"{fstype} on {dev}"
    return desc


def machine() -> dict:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"host": platform.node(), "nproc": os.cpu_count(), "cpu": cpu,
            "mem_gib": round(mem / 2**30, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(results: dict[str, dict[str, float]]) -> tuple[str, dict]:
    targets = [t for t in TARGETS if t in results]
    shown = [*RATIOS[:TABLE_RATIOS], *(r for r in RATIOS if "xfs3pg" in r[1:] and
                                        "xfs3pg" in results)]
    rows, ratios = [], {}
    for key, label, unit in FIGURES:
        v = {t: results[t].get(key) for t in targets}
        if all(x is None for x in v.values()):
            continue  # a workload not run
        get = {t: v.get(t) for t in TARGETS}
        r = {col: _ratio(get[a], get[b]) for col, a, b in RATIOS}
        ratios[key] = {f"{a}/{b}": x for (_, a, b), x in zip(RATIOS, r.values(), strict=True)}
        rows.append([f"{label} ({unit})", *(_fmt(v[t]) for t in targets),
                     *("-" if r[col] is None else f"{r[col]:.2f}x" for col, *_ in shown)])
    head = ["workload", *targets, *(col for col, *_ in shown)]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines), ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark local disk, a pyfuse3 pass-through "
                                "and xfs (factor 1 and rw factor 3) with the same workloads; "
                                "print figures and ratios.")
    p.add_argument("--size-mib", type=int, default=1024, help="sequential file size (MiB)")
    p.add_argument("--block-kib", type=int, default=1024, help="read/write size (KiB)")
    p.add_argument("--files", type=int, default=5000,
                   help="files in the metadata workload and the user workload")
    p.add_argument("--stat-files", type=int, default=5000,
                   help="files in the stat2 workload (stat each twice in a row)")
    p.add_argument("--rand-reads", type=int, default=2000,
                   help="4 KiB reads at random offsets of the sequential file (rand)")
    p.add_argument("--small-files", type=int, default=1000,
                   help="16 KiB files written (fsync each) and read back (small)")
    p.add_argument("--appends", type=int, default=5000,
                   help="4 KiB O_APPEND writes to one file (append)")
    p.add_argument("--criu-mib", type=int, default=200, help="CRIU-like image size (MiB)")
    p.add_argument("--ckpt-mib", type=int, default=1024,
                   help="the application-level checkpoint version's size (MiB)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated workloads: seq (write, read), rand (4 KiB random "
                        "reads and writes of the seq file; needs seq), meta (create, stat after "
                        "remount, readdir, unlink), stat2 (stat, pass 1 and 2), small (16 KiB "
                        "files), append (4 KiB O_APPEND), criu (mixed 4 KiB and 1 MiB "
                        "writes), ckpt (xfs checkpoint versions: app-level of --ckpt-mib, "
                        "CRIU-style of --criu-mib), user (create and stat as --as-user; root only)")
    p.add_argument("--only", default=",".join(DEFAULT_TARGETS),
                   help="comma-separated targets (xfs means xfs3; xfs3pg: xfs3 on a grid "
                        "whose MRC keeps its metadata in PostgreSQL)")
    p.add_argument("--repeat", type=int, default=1, help="runs per target; median reported")
    p.add_argument("--as-user", default=ACCOUNT, metavar="NAME",
                   help=f"local account of the user workload (default {ACCOUNT}; made with "
                        "useradd if missing and then removed at the end)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary directories go (default: the temp dir)")
    p.add_argument("--xfs-state", type=Path, help="state directory for `xfs up` (default: temp)")
    p.add_argument("--xfs-timeout", type=float, default=120, help="seconds for `xfs up/down`")
    p.add_argument("--passthrough-timeout", type=float, default=PASSTHROUGH_TIMEOUT,
                   help="the pass-through's entry and attribute timeout in seconds "
                        f"(default {PASSTHROUGH_TIMEOUT:g}, its own; the notes show xfs's)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the untimed write + unlink just before each timed seq and "
                        "criu write")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    only = [ALIASES.get(t.strip(), t.strip()) for t in args.only.split(",") if t.strip()]
    if bad := [t for t in only if t not in TARGETS]:
        p.error(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(TARGETS)} "
                "(or xfs for xfs3)")
    only = [t for t in TARGETS if t in only]  # one order, each once
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if bad := [w for w in args.workloads if w not in WORKLOADS]:
        p.error(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` unmounts

    work = Path(tempfile.mkdtemp(prefix="fsbench-", dir=args.dir)).resolve()
    m = machine()
    opts = {"workloads": args.workloads, "size_mib": args.size_mib,
            "block_kib": args.block_kib, "files": args.files, "stat_files": args.stat_files,
            "rand_reads": args.rand_reads, "small_files": args.small_files,
            "appends": args.appends, "criu_mib": args.criu_mib, "ckpt_mib": args.ckpt_mib,
            "only": only, "repeat": args.repeat, "warmup": not args.no_warmup,
            "passthrough_timeout": args.passthrough_timeout,
            "dir": str(work), "dir_fs": _fs_of(work)}
    if "user" in args.workloads:
        opts["as_user"] = args.as_user
    print(f"machine: {m['host']}  nproc={m['nproc']}  cpu={m['cpu']}  mem={m['mem_gib']} GiB  "
          f"kernel={m['kernel']}  python={m['python']}")
    print("options: " + "  ".join(f"{k}={','.join(v) if isinstance(v, list) else v}"
                                  for k, v in opts.items()), flush=True)

    results: dict[str, dict[str, float]] = {}
    runs: dict[str, dict[str, list[float]]] = {}
    notes: dict[str, dict] = {}
    not_run: dict[str, str] = {}
    failed: dict[str, list[str]] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        account = None
        if "user" in args.workloads:
            try:
                if os.geteuid() != 0:
                    raise NotRun("needs root (setuid to the account, useradd)")
                account, made = bench_account(args.as_user)
                if made:
                    stack.callback(remove_account, account.name)
                    print(f"user: made the account {account.name} (uid {account.uid}); "
                          "it is removed at the end", flush=True)
            except NotRun as e:
                not_run["user"] = str(e)
                print(f"user workload: not run ({e})", flush=True)
        grid = XfsGrid(work / "xfs", args.xfs_state, args.xfs_timeout,
                       notes.setdefault("xfs grid", {}))
        stack.callback(grid.down)
        (work / "xfs").mkdir()
        pg_grid = XfsGrid(work / "xfs-pg", None, args.xfs_timeout,
                          notes.setdefault("xfs pg grid", {}), metadata="postgresql")
        stack.callback(pg_grid.down)
        (work / "xfs-pg").mkdir()
        for i, t in enumerate(only):
            n = notes.setdefault(t, {})
            tdir = work / t
            tdir.mkdir()
            if t == "local":
                cm = local_target(tdir, n)
            elif t == "passthrough":
                cm = passthrough_target(tdir, n, args.passthrough_timeout)
            else:
                cm = xfs_target(pg_grid if t in PG_TARGETS else grid, t, n)
            start = time.monotonic()
            try:
                with cm as target:
                    res = run_workloads(target, args, n, account)
                results[t], runs[t] = res["median"], res["runs"]
                if res["failures"]:
                    failed[t] = res["failures"]
            except NotRun as e:
                not_run[t] = str(e)
                print(f"{t}: not run ({e})", flush=True)
            except OSError as e:
                not_run[t] = f"failed: {e}"
                print(f"{t}: not run (failed: {e})", flush=True)
            else:
                print(f"{t}: done in {time.monotonic() - start:.1f}s", flush=True)
            if not any(u in XFS_POLICIES and u not in PG_TARGETS for u in only[i + 1:]):
                grid.down()  # no xfs target of it left: stop the grid now

    text, ratios = table(results)
    print()
    print(f"median of {args.repeat} run{'s' if args.repeat > 1 else ''} per target; "
          f"pt = passthrough; {time.monotonic() - started:.0f}s in all")
    print(text)
    for t, n in notes.items():
        if n:
            print(f"{t}: " + "  ".join(f"{k}={v}" for k, v in n.items()))
    for t, fails in failed.items():
        print(f"{t}: FAILED: " + "; ".join(fails))
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "options": opts, "results": results,
                                         "runs": runs, "ratios": ratios, "notes": notes,
                                         "not_run": not_run, "failed": failed},
                                        indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
