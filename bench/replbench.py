"""Write throughput of replication: the same sequential write into an xfs directory with
replication ``none`` (factor 1) and with ``rw`` factor 3, and onto the local disk, in one
run, with ratios (the machines are shared and noisy: only ratios of one run compare).

    python bench/replbench.py [--size-mib 256] [--repeat 3] [--json PATH]

Starts its own embedded grid (`xfs up`, three OSDs on this machine) and stops it. On one
machine a factor-3 write crosses TLS three times (client to primary, primary to two
backups) and is written to the same disk three times, so it measures the protocol's
cost, not what a grid of separate machines achieves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads as wl  # noqa: E402

XFS = HERE.parent / ".venv" / "bin" / "xfs"


@contextlib.contextmanager
def grid(work: Path, timeout: float) -> Iterator[Path]:
    state, mnt = work / "state", work / "mnt"
    mnt.mkdir()
    try:
        subprocess.run([str(XFS), "up", "--state", str(state), "--mountpoint", str(mnt)],
                       check=True, capture_output=True, text=True, timeout=timeout)
        yield mnt
    finally:
        subprocess.run([str(XFS), "down", "--state", str(state)],
                       capture_output=True, text=True, timeout=timeout, check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30,
                           check=False)


def policy_dir(mnt: Path, name: str, policy: dict[str, object]) -> Path:
    d = mnt / name
    d.mkdir()
    os.setxattr(d, "xfs.policy", json.dumps(policy).encode())
    return d


def measure(d: Path, size: int, block: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        runs.append(wl.seq_write(d, size, block))
        os.unlink(d / wl.SEQ_FILE)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--block-kib", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3, help="runs per target; median reported")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    size, block = args.size_mib * wl.MiB, args.block_kib * 1024
    work = Path(tempfile.mkdtemp(prefix="replbench-", dir=args.dir))
    results: dict[str, float] = {}
    try:
        local = work / "local"
        local.mkdir()
        wl.seq_write(local, size, block, name="warmup")  # see fsbench: warm the disk
        os.unlink(local / "warmup")
        results["local"] = measure(local, size, block, args.repeat)
        with grid(work, args.timeout) as mnt:
            one = policy_dir(mnt, "factor1", {"replication": "none", "factor": 1})
            three = policy_dir(mnt, "factor3", {"replication": "rw", "factor": 3})
            wl.seq_write(one, size, block, name="warmup")
            os.unlink(one / "warmup")
            # alternate, so that drift of the shared machine hits both alike
            f1, f3 = [], []
            for _ in range(args.repeat):
                f1.append(measure(one, size, block, 1))
                f3.append(measure(three, size, block, 1))
            results["xfs_factor1"] = statistics.median(f1)
            results["xfs_factor3"] = statistics.median(f3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = results["xfs_factor3"] / results["xfs_factor1"]
    print(f"sequential write, {args.size_mib} MiB in {args.block_kib} KiB blocks, "
          f"median of {args.repeat} ({time.strftime('%Y-%m-%d %H:%M')})")
    print(f"  local disk        {results['local']:8.1f} MiB/s")
    print(f"  xfs factor 1      {results['xfs_factor1']:8.1f} MiB/s "
          f"({results['xfs_factor1'] / results['local']:.2f}x local)")
    print(f"  xfs rw factor 3   {results['xfs_factor3']:8.1f} MiB/s "
          f"({results['xfs_factor3'] / results['local']:.2f}x local, {ratio:.2f}x factor 1)")
    if args.json:
        args.json.write_text(json.dumps({**results, "factor3_over_factor1": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
