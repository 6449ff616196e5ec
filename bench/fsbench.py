"""xfs file-system benchmark: the same workloads on local disk, a pyfuse3 pass-through
file system (the Python FUSE ceiling) and xfs, in one run, with ratios.

    python bench/fsbench.py [--size-mib 1024] [--files 5000] [--workloads seq,meta,stat2]
                            [--only local,passthrough,xfs] [--xfs-state DIR] [--json PATH]

See bench/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS = ("local", "passthrough", "xfs")
WORKLOADS = ("seq", "rand", "meta", "stat2")
FIGURES = (  # key, label, unit
    ("seq_write", "seq write", "MiB/s"),
    ("seq_read", "seq read", "MiB/s"),
    ("rand_read", "4 KiB random read", "IOPS"),
    ("create", "create", "ops/s"),
    ("stat", "stat", "ops/s"),
    ("unlink", "unlink", "ops/s"),
    ("stat_pass1", "stat, pass 1", "ops/s"),
    ("stat_pass2", "stat, pass 2", "ops/s"),
)
PASSTHROUGH_TIMEOUT = 1.0  # bench/passthrough.py's own default (libfuse's too)


def _load_workloads():
    spec = importlib.util.spec_from_file_location("xfs_bench_workloads", HERE / "workloads.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wl = _load_workloads()


class NotRun(Exception):
    """A target could not be benchmarked; the message says why, in one line."""


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


@contextlib.contextmanager
def local_target(work: Path, notes: dict) -> Iterator[tuple[Path, list[Path]]]:
    d = work / "local"
    d.mkdir()
    yield d, []


@contextlib.contextmanager
def passthrough_target(work: Path, notes: dict,
                       timeout: float) -> Iterator[tuple[Path, list[Path]]]:
    src, mnt = work / "pt-src", work / "pt-mnt"
    src.mkdir()
    mnt.mkdir()
    log_path = work / "passthrough.log"
    notes["entry_attr_timeout"] = f"{timeout:g}s"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [_venv_python(), str(HERE / "passthrough.py"), str(src), str(mnt),
             "--attr-timeout", str(timeout)],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_mounted(mnt, 15, proc)
        except NotRun as e:
            raise NotRun(f"passthrough {e}: {_one_line(log_path.read_text())}") from None
        yield mnt, [src]
    finally:
        _unmount(mnt)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for line in log_path.read_text().splitlines():
            if line.startswith("passthrough stats:"):
                st = {k: int(v) for k, v in (kv.split("=") for kv in line.split(":")[1].split())}
                for op in ("write", "read"):
                    if st.get(op):
                        notes[f"fuse_{op}_kib"] = (f"avg {st[op + '_bytes'] / st[op] / 1024:.0f}"
                                                   f" max {st[op + '_max'] / 1024:.0f}")
                notes["fuse_requests"] = f"lookup {st.get('lookup', 0)} " \
                                         f"getattr {st.get('getattr', 0)}"


@contextlib.contextmanager
def xfs_target(work: Path, notes: dict, state: Path | None,
               timeout_s: float) -> Iterator[tuple[Path, list[Path]]]:
    xfs = REPO / ".venv" / "bin" / "xfs"
    if not xfs.exists():
        raise NotRun(f"no {xfs}")
    state = state or work / "xfs-state"
    mnt = work / "xfs-mnt"
    state.mkdir(parents=True, exist_ok=True)
    mnt.mkdir()
    up = False
    try:
        try:
            r = subprocess.run([str(xfs), "up", "--state", str(state), "--mountpoint", str(mnt)],
                               capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise NotRun(f"`xfs up` did not return within {timeout_s:.0f}s") from None
        if r.returncode != 0:
            raise NotRun(f"`xfs up` exited {r.returncode}: {_one_line(r.stderr + r.stdout)}")
        if not os.path.ismount(mnt):
            raise NotRun(f"`xfs up` returned but {mnt} is not a mount point")
        up = True
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, KeyError):
            mount = tomllib.loads((state / "mount" / "mount.toml").read_text())
            notes["attr_timeout"] = f"{mount['attr_timeout']:g}s"
            notes["entry_timeout"] = f"{mount['entry_timeout']:g}s"
        d = mnt / f"fsbench-{os.getpid()}-{int(time.time())}"
        try:
            d.mkdir()
        except OSError as e:
            raise NotRun(f"cannot create a directory in the xfs mount: {e}") from None
        try:
            yield d, [state]
        finally:
            shutil.rmtree(d, ignore_errors=True)
    finally:
        try:
            r = subprocess.run([str(xfs), "down", "--state", str(state)],
                               capture_output=True, text=True, timeout=timeout_s)
            if r.returncode != 0 and up:
                notes["xfs_down"] = f"exited {r.returncode}: {_one_line(r.stderr + r.stdout)}"
        except subprocess.TimeoutExpired:
            notes["xfs_down"] = f"did not return within {timeout_s:.0f}s"
        _unmount(mnt)


def run_workloads(d: Path, backing: list[Path], args, notes: dict) -> dict[str, float]:
    runs: list[dict[str, float]] = []
    size, block = args.size_mib * wl.MiB, args.block_kib * 1024
    for _ in range(args.repeat):
        fig: dict[str, float] = {}
        if "seq" in args.workloads:
            if not args.no_warmup:
                # Writing into disk space that was freed seconds ago is several times
                # faster than into space freed long ago or never used (thin-provisioned
                # virtual disks, ext4 `discard`), so order alone would decide which
                # target wins. Every timed write therefore follows an untimed one.
                wl.seq_write(d, size, block, name="warmup")
                os.unlink(d / "warmup")
            fig["seq_write"] = wl.seq_write(d, size, block)
            rr = wl.seq_read(d, block, backing=backing)
            fig["seq_read"] = rr.mib_s
            notes["read_cold"] = f"fadvise={'yes' if rr.fadvised else 'no'} " \
                                 f"drop_caches={'yes' if rr.caches_dropped else 'no'}"
            if "rand" in args.workloads:
                fig["rand_read"] = wl.random_reads(d, args.rand_reads, backing=backing)
            os.unlink(d / wl.SEQ_FILE)
        if "meta" in args.workloads:
            fig.update(wl.metadata(d, args.files))
        if "stat2" in args.workloads:
            st = wl.stat_twice(d, args.stat_files)
            fig["stat_pass1"], fig["stat_pass2"] = st.first, st.second
            notes["stat2"] = f"drop_caches(2)={'yes' if st.caches_dropped else 'no'} " \
                             f"pass1={st.first_s:.2f}s (creates {st.create_s:.1f}s, untimed)"
        runs.append(fig)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


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
    cols = ["local", "passthrough", "xfs", "xfs/local", "xfs/passthrough", "passthrough/local"]
    rows, ratios = [], {}
    for key, label, unit in FIGURES:
        v = {t: results.get(t, {}).get(key) for t in TARGETS}
        if all(x is None for x in v.values()):
            continue  # a workload not run
        r = {"xfs/local": _ratio(v["xfs"], v["local"]),
             "xfs/passthrough": _ratio(v["xfs"], v["passthrough"]),
             "passthrough/local": _ratio(v["passthrough"], v["local"])}
        ratios[key] = r
        rows.append([f"{label} ({unit})", *(_fmt(v[t]) for t in TARGETS),
                     *("-" if x is None else f"{x:.2f}x" for x in r.values())])
    head = ["workload", *cols]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines), ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark local disk, a pyfuse3 pass-through "
                                "and xfs with the same workloads; print figures and ratios.")
    p.add_argument("--size-mib", type=int, default=1024, help="sequential file size (MiB)")
    p.add_argument("--block-kib", type=int, default=1024, help="read/write size (KiB)")
    p.add_argument("--files", type=int, default=5000, help="files in the metadata workload")
    p.add_argument("--stat-files", type=int, default=5000,
                   help="files in the stat2 workload (stat each twice in a row)")
    p.add_argument("--rand-reads", type=int, default=2000,
                   help="4 KiB reads at random offsets of the sequential file (rand)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated workloads: seq (write, read), rand (4 KiB random "
                        "reads of the seq file; needs seq), meta (create, stat, unlink), "
                        "stat2 (stat, pass 1 and 2)")
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    p.add_argument("--repeat", type=int, default=1, help="runs per target; median reported")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary directories go (default: the temp dir)")
    p.add_argument("--xfs-state", type=Path, help="state directory for `xfs up` (default: temp)")
    p.add_argument("--xfs-timeout", type=float, default=120, help="seconds for `xfs up/down`")
    p.add_argument("--passthrough-timeout", type=float, default=PASSTHROUGH_TIMEOUT,
                   help="the pass-through's entry and attribute timeout in seconds "
                        f"(default {PASSTHROUGH_TIMEOUT:g}, its own; the notes show xfs's)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the untimed write + unlink just before each timed write")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    if bad := [t for t in only if t not in TARGETS]:
        p.error(f"unknown target(s) {', '.join(bad)}; choose from {', '.join(TARGETS)}")
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if bad := [w for w in args.workloads if w not in WORKLOADS]:
        p.error(f"unknown workload(s) {', '.join(bad)}; choose from {', '.join(WORKLOADS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` unmounts

    work = Path(tempfile.mkdtemp(prefix="fsbench-", dir=args.dir)).resolve()
    m = machine()
    opts = {"workloads": args.workloads, "size_mib": args.size_mib,
            "block_kib": args.block_kib, "files": args.files, "stat_files": args.stat_files,
            "rand_reads": args.rand_reads,
            "only": only, "repeat": args.repeat, "warmup": not args.no_warmup,
            "passthrough_timeout": args.passthrough_timeout,
            "dir": str(work), "dir_fs": _fs_of(work)}
    print(f"machine: {m['host']}  nproc={m['nproc']}  cpu={m['cpu']}  mem={m['mem_gib']} GiB  "
          f"kernel={m['kernel']}  python={m['python']}")
    print("options: " + "  ".join(f"{k}={','.join(v) if isinstance(v, list) else v}"
                                  for k, v in opts.items()), flush=True)

    results: dict[str, dict[str, float]] = {}
    notes: dict[str, dict] = {}
    not_run: dict[str, str] = {}
    try:
        for t in only:
            n = notes.setdefault(t, {})
            tdir = work / t
            tdir.mkdir()
            if t == "local":
                cm = local_target(tdir, n)
            elif t == "passthrough":
                cm = passthrough_target(tdir, n, args.passthrough_timeout)
            else:
                cm = xfs_target(tdir, n, args.xfs_state, args.xfs_timeout)
            start = time.monotonic()
            try:
                with cm as (d, backing):
                    results[t] = run_workloads(d, backing, args, n)
            except NotRun as e:
                not_run[t] = str(e)
                print(f"{t}: not run ({e})", flush=True)
                continue
            except OSError as e:
                not_run[t] = f"failed: {e}"
                print(f"{t}: not run (failed: {e})", flush=True)
                continue
            print(f"{t}: done in {time.monotonic() - start:.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text, ratios = table(results)
    print()
    print(text)
    for t, n in notes.items():
        if n:
            print(f"{t}: " + "  ".join(f"{k}={v}" for k, v in n.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "options": opts, "results": results,
                                         "ratios": ratios, "notes": notes,
                                         "not_run": not_run}, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
