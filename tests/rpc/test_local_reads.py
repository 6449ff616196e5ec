"""Local reads: a mount on an OSD's host reads object files itself, through a directory
descriptor the OSD grants on its local socket (docs/design/local-reads.md).

Real OSDs (in this process) and a real abstract Unix socket; the untrusted peer is a
real process running as another uid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import PKI
from tests.rpc.test_grid_security import STRIPE, World, flip, run, world
from xfs.client.local_reads import LocalReads
from xfs.common import audit, local
from xfs.osd.objects import ObjectStore
from xfs.proto.methods import LocalOpen, LocalOpened
from xfs.proto.records import FileLayout

NOBODY = 65534


@contextlib.contextmanager
def reader() -> Iterator[LocalReads]:
    local_reads = LocalReads(time.time, 5.0)
    try:
        yield local_reads
    finally:
        local_reads.close()


def object_file(w: World, objno: int) -> Path:
    osd = w.osd_of(objno)
    return ObjectStore(w.grid.osd_dirs[osd]).object_path(w.layout.xcap.file_id, objno)


async def ask(osd: str, layout: FileLayout) -> tuple[LocalOpened, list[int]]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.connect(local.socket_name(osd))
        await local.send(sock, LocalOpen(layout.xcap, layout.xloc))
        message = await local.receive(sock, LocalOpened)
    assert message is not None
    return message


def test_ranges_are_read_from_the_osds_files(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            with reader() as local_reads:
                for objno, data in w.data.items():
                    osd = w.osd_of(objno)
                    assert await local_reads.read(w.layout, osd, objno, 0, STRIPE) == data
                    assert await local_reads.read(w.layout, osd, objno, 3, 5) == data[3:8]
                    assert await local_reads.read(w.layout, osd, objno, len(data), 9) == b""
                # one descriptor per file and OSD, asked for once
                assert len(local_reads._grants) == len(w.data)
                # objects are replaced whole: the next read sees the new one
                async with w.grid.client(w.alice) as pool:
                    await w.write(pool, w.layout.xcap, 0, b"new")
                got = await local_reads.read(w.layout, w.osd_of(0), 0, 0, STRIPE)
                assert got == b"new" + w.data[0][3:]
                # a hole (no object file here): read through the OSD
                assert await local_reads.read(w.layout, w.osd_of(0), 2, 0, 10) is None

    run(main)


def test_whole_objects_are_read_in_threads_on_their_own_descriptor(
    pki: PKI, tmp_path: Path
) -> None:
    """A sequential reader's whole objects: read in worker threads, several at once, on
    duplicates of the grant's descriptor, so a grant that goes meanwhile (a new XCap)
    does not pull the descriptor from under a read."""

    async def main() -> None:
        async with world(pki, tmp_path) as w:
            with reader() as local_reads:
                got: dict[int, bytes | None] = {}

                async def one(objno: int) -> None:
                    osd = w.osd_of(objno)
                    got[objno] = await local_reads.read_object(w.layout, osd, objno, STRIPE)

                async def all_at_once() -> None:
                    async with trio.open_nursery() as n:
                        for objno in w.data:
                            n.start_soon(one, objno)

                await all_at_once()
                assert got == w.data
                # the duplicates went with their reads; the grants' descriptors stay
                fds = len(os.listdir("/proc/self/fd"))
                got.clear()
                await all_at_once()
                assert got == w.data
                assert len(os.listdir("/proc/self/fd")) == fds
                for grant in local_reads._grants.values():
                    assert grant.fd is not None
                    os.fstat(grant.fd)
                # another XCap (here a forged one) asks again and is refused; the grant
                # of the real one is asked again in turn
                forged = dataclasses.replace(w.layout.xcap, rights=w.layout.xcap.rights | 0o100)
                osd = w.osd_of(0)
                other = dataclasses.replace(w.layout, xcap=forged)
                assert await local_reads.read_object(other, osd, 0, STRIPE) is None
                assert await local_reads.read_object(w.layout, osd, 0, STRIPE) == w.data[0]
                # a hole: through the OSD
                assert await local_reads.read_object(w.layout, w.osd_of(2), 2, STRIPE) is None
            path = object_file(w, 1)
            raw = path.read_bytes()
            path.write_bytes(flip(raw, len(raw) - 1))
            with reader() as local_reads:  # a bad checksum: through the OSD, which repairs
                assert await local_reads.read_object(w.layout, w.osd_of(1), 1, STRIPE) is None

    run(main)


def test_a_bad_checksum_sends_the_read_to_the_osd(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            path = object_file(w, 1)
            raw = path.read_bytes()
            path.write_bytes(flip(raw, len(raw) - 1))  # the last data byte
            with reader() as local_reads:
                assert await local_reads.read(w.layout, w.osd_of(1), 1, 0, STRIPE) is None
                assert await local_reads.read(w.layout, w.osd_of(0), 0, 0, 4) == w.data[0][:4]

    run(main)


def test_an_expired_or_forged_xcap_gets_no_descriptor(pki: PKI, tmp_path: Path) -> None:
    async def main() -> None:
        async with world(pki, tmp_path) as w:
            osd = w.osd_of(0)
            reply, fds = await ask(osd, w.layout)
            assert reply.code == 0 and len(fds) == 1
            os.close(fds[0])
            marks = w.grid.audit_marks()
            forged = dataclasses.replace(w.layout.xcap, rights=w.layout.xcap.rights | 0o100)
            reply, fds = await ask(osd, dataclasses.replace(w.layout, xcap=forged))
            assert (reply.code, fds) == (errno.EACCES, [])
            denials = [r for _, r in w.grid.audit_since(marks) if r["event"] == audit.DENY]
            assert [r["action"] for r in denials] == ["osd.local_open"]
            # past its expiry the mount does not even ask
            late = LocalReads(lambda: w.layout.xcap.expires + 1, 5.0)
            assert await late.read(w.layout, osd, 0, 0, 4) is None
            assert late._grants == {}

    run(main)


# A process running as another uid asks an OSD's local socket for a descriptor.
INTRUDER = """
    import os, socket, sys
    os.setgid(65534); os.setuid(65534)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b"\\0xfs-osd-" + sys.argv[1].encode())
    try:  # a message; the answer must be the end of the stream
        s.sendall(b"\\0\\0\\0\\1\\x90")
        print("answered" if s.recv(100) else "closed")
    except (BrokenPipeError, ConnectionResetError):
        print("closed")
"""


def test_another_uid_is_refused_and_audited(pki: PKI, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another uid")

    async def main() -> None:
        async with world(pki, tmp_path) as w:
            osd = w.osd_of(0)
            marks = w.grid.audit_marks()
            result = await trio.to_thread.run_sync(
                lambda: subprocess.run(
                    [sys.executable, "-c", textwrap.dedent(INTRUDER), osd],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "closed"
            denials = [
                r
                for s, r in w.grid.audit_since(marks)
                if r["event"] == audit.DENY and s == f"osd:{osd}"
            ]
            assert [(r["actor"], r["action"]) for r in denials] == [
                (f"uid:{NOBODY}", "osd.local_open")
            ]
            await w.still_serves()

    run(main)
