"""``xfs checkpoint``: checkpoint sets of jobs on a mounted volume (docs/checkpoints.md).

Every command takes the set's directory (in the mount) first. ``dump`` writes a new
version with one of three backends (``app``: files the job wrote; ``directory``: a
working directory; ``criu``: a process tree), waits for the durability barrier and
publishes it; ``restore`` gives a version back; ``list``, ``show``, ``verify``,
``prune``, ``delete`` and ``keep`` manage the set. ``--json`` prints machine-readable
output; a refused or failed call prints one ``Error:`` line and exits non-zero.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from xfs.checkpoint import criu as criu_backend
from xfs.checkpoint.barrier import BarrierError
from xfs.checkpoint.manifest import Manifest, ManifestError, version_name
from xfs.checkpoint.sets import CheckpointError, CheckpointSet
from xfs.checkpoint.verify import verify as verify_version
from xfs.cli.admin import human_size

F = TypeVar("F", bound=Callable[..., Any])
JOB = ".xfs-job.json"  # in the set: the process tree `xfs checkpoint run` started


def _errors(fn: F) -> F:
    """Any refusal or failure below: one ``Error:`` line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CheckpointError, BarrierError) as e:
            raise click.ClickException(e.strerror or str(e)) from None
        except ManifestError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def _progress(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (nothing otherwise); yields ``advance(bytes)``."""
    bar = Progress(
        TextColumn(what),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _echo(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=1, sort_keys=True) if as_json else text)


def _set_path(f: F) -> F:
    return click.argument("set_dir", metavar="SET", type=click.Path(path_type=Path))(f)


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


@click.group("checkpoint")
def checkpoint() -> None:
    """Checkpoint sets: versions of a job's state on a mounted volume."""


@checkpoint.command("init")
@_set_path
@click.option("--job", help="The job's name (default: the directory's).")
@click.option("--keep", type=click.IntRange(min=1), help="Versions kept after each dump.")
@_errors
def init(set_dir: Path, job: str | None, keep: int | None) -> None:
    """Make SET a checkpoint set (dump does it too, on first use)."""
    ckpt = CheckpointSet.open(set_dir, create=True, job=job)
    if keep is not None:
        ckpt.configure(keep)
    click.echo(f"{ckpt.path}: checkpoint set of job {ckpt.settings.job}")


@checkpoint.command("keep")
@_set_path
@click.argument("count")
@_errors
def keep(set_dir: Path, count: str) -> None:
    """Retention: keep the newest COUNT versions after each dump (``all``: keep all)."""
    ckpt = CheckpointSet.open(set_dir)
    if count == "all":
        ckpt.configure(None)
    elif count.isdigit() and int(count) >= 1:
        ckpt.configure(int(count))
    else:
        raise click.ClickException(
            f"COUNT must be a number of versions (1 or more) or all, not {count!r}"
        )
    click.echo(f"{ckpt.path}: keeps {count} version(s)")


@checkpoint.command("run")
@_set_path
@click.argument("command", nargs=-1, required=True)
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path),
    help="The job's output (default: /var/tmp/xfs-jobs/JOB.log).",
)
@_errors
def run(set_dir: Path, command: tuple[str, ...], log_path: Path | None) -> None:
    """Start COMMAND in its own session, as a job that ``dump --backend criu`` dumps."""
    ckpt = CheckpointSet.open(set_dir, create=True)
    log_path = log_path or Path("/var/tmp/xfs-jobs") / f"{ckpt.settings.job}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    job = {
        "host": socket.gethostname(),
        "pid": proc.pid,
        "command": list(command),
        "started": time.time(),
    }
    (ckpt.path / JOB).write_text(json.dumps(job) + "\n")
    click.echo(f"started {proc.pid}: {' '.join(command)} (output: {log_path})")


def _job_pid(ckpt: CheckpointSet) -> int:
    try:
        job = json.loads((ckpt.path / JOB).read_text())
    except FileNotFoundError:
        raise click.ClickException(
            "which process? give --pid (or start it with xfs checkpoint run)"
        ) from None
    if job.get("host") != socket.gethostname():
        raise click.ClickException(f"the job runs on {job.get('host')}, not here: give --pid")
    return int(job["pid"])


@checkpoint.command("dump")
@_set_path
@click.option(
    "--backend",
    type=click.Choice(["app", "directory", "criu"]),
    default="directory",
    show_default=True,
)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="app: a file of the job's state (repeatable).",
)
@click.option("--name", help="app: the application's name, for the manifest.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="directory: the directory to capture (default: the current one).",
)
@click.option(
    "--pid",
    type=int,
    help="criu: the root of the process tree (default: the job of xfs checkpoint run).",
)
@click.option(
    "--leave-running", is_flag=True, help="criu: the process tree runs on after the dump."
)
@click.option("--shell-job", is_flag=True, help="criu: the tree belongs to a terminal's session.")
@click.option(
    "--full", is_flag=True, help="Store every file again, sharing nothing with the parent."
)
@click.option(
    "--barrier-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for every file to be at its policy.",
)
@_json_option
@_errors
def dump(
    set_dir: Path,
    backend: str,
    files: tuple[Path, ...],
    name: str | None,
    directory: Path | None,
    pid: int | None,
    leave_running: bool,
    shell_job: bool,
    full: bool,
    barrier_timeout: float,
    as_json: bool,
) -> None:
    """Write a new version of SET and publish it once it is durable."""
    usable = criu_backend.available() if backend == "criu" else None  # (before making SET)
    ckpt = CheckpointSet.open(set_dir, create=True, barrier_timeout=barrier_timeout)
    started = time.monotonic()
    if backend == "app":
        if not files:
            raise click.ClickException(
                "--backend app needs --file (one per file of the job's state)"
            )
        source: dict[str, Any] = {
            "application": name or ckpt.settings.job,
            "files": [str(f) for f in files],
        }
        total = sum(f.stat().st_size for f in files)
        with (
            _progress("dump", total) as advance,
            ckpt.begin("app", source, incremental=not full, progress=advance) as draft,
        ):
            for f in files:
                draft.add(f.absolute())
            m = draft.commit()
    elif backend == "directory":
        where = (directory or Path.cwd()).absolute()
        total = sum(
            p.stat().st_size for p in where.rglob("*") if p.is_file() and not p.is_symlink()
        )
        with (
            _progress("dump", total) as advance,
            ckpt.begin(
                "directory", {"directory": str(where)}, incremental=not full, progress=advance
            ) as draft,
        ):
            draft.add_tree(where)
            m = draft.commit()
    else:
        assert usable is not None
        m = _dump_criu(
            ckpt, usable, pid if pid is not None else _job_pid(ckpt), leave_running, shell_job, full
        )
    seconds = time.monotonic() - started
    summary = _summary(m) | {
        "seconds": round(seconds, 3),
        "path": str(ckpt.version_path(m.version)),
    }
    _echo(
        summary,
        as_json,
        f"{version_name(m.version)} of {m.job}: {len(m.files)} files, {human_size(m.bytes_total)} "
        f"({human_size(m.bytes_new)} new), durable at its policy after {m.barrier.seconds:.2f} s "
        f"(barrier {m.barrier.kind}), {seconds:.1f} s in all" + _tracking_note(m),
    )


def _tracking_note(m: Manifest) -> str:
    tracking = m.source.get("memory_tracking")
    if m.backend != "criu" or tracking is True:
        return ""
    return f"; memory tracking {tracking}"


def _dump_criu(
    ckpt: CheckpointSet,
    criu: criu_backend.Criu,
    pid: int,
    leave_running: bool,
    shell_job: bool,
    full: bool,
) -> Manifest:
    parent = ckpt.manifest() if ckpt.latest() is not None and not full else None
    source: dict[str, Any] = {
        "pids": [pid],
        "command": _cmdline(pid),
        "criu": criu.version,
        "leave_running": leave_running,
        "memory_tracking": criu.track_mem or "not supported by this kernel: every dump is whole",
    }
    with ckpt.begin("criu", source, incremental=not full) as draft:
        prev = None
        if (
            parent is not None
            and parent.backend == "criu"
            and parent.source.get("pids") == [pid]
            and criu.track_mem
        ):
            prev = f"../{version_name(parent.version)}"
            draft.depends_on.append(parent.version)
        log = criu_backend.LOG_DIR / f"{ckpt.settings.job}-{version_name(draft.number)}-dump.log"
        criu_backend.dump(
            criu,
            pid,
            draft.path,
            log,
            leave_running=leave_running,
            parent_images=prev,
            shell_job=shell_job,
        )
        draft.source["log"] = str(log)
        return draft.commit()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raise CheckpointError(errno.ESRCH, f"no process {pid} on this node") from None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _summary(m: Manifest) -> dict[str, Any]:
    return {
        "job": m.job,
        "version": m.version,
        "parent": m.parent,
        "backend": m.backend,
        "node": m.node,
        "created": m.created,
        "files": len(m.files),
        "bytes": m.bytes_total,
        "bytes_new": m.bytes_new,
        "barrier": dataclasses.asdict(m.barrier),
        "depends_on": m.depends_on,
    }


@checkpoint.command("list")
@_set_path
@_json_option
@_errors
def list_(set_dir: Path, as_json: bool) -> None:
    """The published versions of SET (and drafts being written or left by a crash)."""
    ckpt = CheckpointSet.open(set_dir)
    versions = [_summary(ckpt.manifest(n)) for n in ckpt.versions()]
    drafts = [{"name": d.name, "stale": d.stale, "owner": d.owner} for d in ckpt.drafts()]
    if as_json:
        _echo(
            {
                "job": ckpt.settings.job,
                "keep": ckpt.settings.keep,
                "versions": versions,
                "drafts": drafts,
            },
            True,
            "",
        )
        return
    t = Table(title=f"{ckpt.settings.job}: keep {ckpt.settings.keep or 'all'}")
    for column in (
        "version",
        "created",
        "backend",
        "node",
        "files",
        "size",
        "new",
        "durable after",
    ):
        t.add_column(column)
    for v in versions:
        t.add_row(
            version_name(v["version"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created"])),
            v["backend"],
            v["node"],
            str(v["files"]),
            human_size(v["bytes"]),
            human_size(v["bytes_new"]),
            f"{v['barrier']['seconds']:.2f} s ({v['barrier']['kind']})",
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(t)
    for d in drafts:
        click.echo(
            f"draft {d['name']}: "
            + ("left by a writer that is gone" if d["stale"] else "being written")
        )


def _number(ckpt: CheckpointSet, version: str | None) -> int:
    if version is None:
        latest = ckpt.latest()
        if latest is None:
            raise CheckpointError(errno.ENOENT, f"{ckpt.path} has no version yet")
        return latest
    text = version.removeprefix("v")
    if not text.isdigit():
        raise click.ClickException(f"not a version: {version!r} (a number, or v000012)")
    return int(text)


@checkpoint.command("show")
@_set_path
@click.argument("version", required=False)
@_json_option
@_errors
def show(set_dir: Path, version: str | None, as_json: bool) -> None:
    """The manifest of VERSION (default: the newest)."""
    ckpt = CheckpointSet.open(set_dir)
    m = ckpt.manifest(_number(ckpt, version))
    if as_json:
        click.echo(m.to_json().decode(), nl=False)
        return
    s = _summary(m)
    click.echo(
        f"{version_name(m.version)} of {m.job} (parent {m.parent and version_name(m.parent)}), "
        f"backend {m.backend}, node {m.node}"
    )
    click.echo(f"source: {json.dumps(m.source, sort_keys=True)}")
    click.echo(
        f"durable at its policy after {m.barrier.seconds:.2f} s (barrier {m.barrier.kind}); "
        f"{s['files']} files, {human_size(s['bytes'])}, {human_size(s['bytes_new'])} new"
    )
    for f in m.files:
        click.echo(
            f"  {f.path}  {f.size}  {f.digest[:16]}{'  (from parent)' if f.from_parent else ''}"
        )


@checkpoint.command("verify")
@_set_path
@click.argument("version", required=False)
@click.option("--all", "every", is_flag=True, help="Every version, not only the newest.")
@_json_option
@_errors
def verify(set_dir: Path, version: str | None, every: bool, as_json: bool) -> None:
    """Check every file of VERSION against its manifest, on every replica."""
    ckpt = CheckpointSet.open(set_dir)
    numbers = ckpt.versions() if every else [_number(ckpt, version)]
    found: dict[str, list[str]] = {}
    for n in numbers:
        total = ckpt.manifest(n).bytes_total
        with _progress(f"verify {version_name(n)}", total) as advance:
            found[version_name(n)] = verify_version(ckpt, n, advance)
    bad = {v: p for v, p in found.items() if p}
    if as_json:
        _echo({"versions": found, "ok": not bad}, True, "")
    else:
        for v, problems in found.items():
            click.echo(f"{v}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
            for p in problems:
                click.echo(f"  {p}")
    if bad:
        raise click.ClickException(
            f"{sum(len(p) for p in bad.values())} problem(s) in {', '.join(bad)}"
        )


@checkpoint.command("restore")
@_set_path
@click.argument("version", required=False)
@click.option(
    "--to",
    "target",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy the files here (checked against the manifest).",
)
@click.option("--shell-job", is_flag=True, help="criu: restore into this terminal's session.")
@_json_option
@_errors
def restore(
    set_dir: Path, version: str | None, target: Path | None, shell_job: bool, as_json: bool
) -> None:
    """Give VERSION (default: the newest) back: its directory, a copy of its files
    (``--to``), or for a CRIU image the process tree, running again on this node."""
    ckpt = CheckpointSet.open(set_dir)
    n = _number(ckpt, version)
    m = ckpt.manifest(n)
    out: dict[str, Any] = {"version": n, "path": str(ckpt.version_path(n))}
    if m.backend == "criu":
        criu = criu_backend.available()
        log = criu_backend.LOG_DIR / f"{m.job}-{version_name(n)}-restore-{os.getpid()}.log"
        pids = [int(p) for p in m.source.get("pids", [])]
        out["pid"] = criu_backend.restore(
            criu, ckpt.version_path(n), log, pids=pids, shell_job=shell_job
        )
        _echo(out, as_json, f"restored {version_name(n)} of {m.job}: process {out['pid']}")
        return
    if target is not None:
        with _progress("restore", m.bytes_total) as advance:
            ckpt.restore_to(n, target, advance)
        out["to"] = str(target)
        _echo(out, as_json, f"{len(m.files)} files of {version_name(n)} restored into {target}")
        return
    _echo(out, as_json, out["path"])


@checkpoint.command("prune")
@_set_path
@click.option(
    "--keep", type=click.IntRange(min=1), help="Versions to keep (default: the set's retention)."
)
@_json_option
@_errors
def prune(set_dir: Path, keep: int | None, as_json: bool) -> None:
    """Delete all but the newest versions (and those they depend on), and stale drafts."""
    ckpt = CheckpointSet.open(set_dir)
    deleted = ckpt.prune(keep)
    _echo(
        {"deleted": deleted, "kept": ckpt.versions()},
        as_json,
        f"deleted {', '.join(map(version_name, deleted)) or 'nothing'}; "
        f"kept {', '.join(map(version_name, ckpt.versions()))}",
    )


@checkpoint.command("delete")
@_set_path
@click.argument("version")
@click.option("--force", is_flag=True, help="Even if a later version depends on it.")
@_errors
def delete(set_dir: Path, version: str, force: bool) -> None:
    """Delete VERSION."""
    ckpt = CheckpointSet.open(set_dir)
    n = _number(ckpt, version)
    ckpt.delete(n, force=force)
    click.echo(f"deleted {version_name(n)}")


__all__ = ["checkpoint"]
