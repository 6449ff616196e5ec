"""What every replica of a file holds, as digests: the ``xfs.replica.digest`` xattr.

``xfs checkpoint verify`` reads it through the mount. For each replica of the file the
mount asks the OSD of every object for that object's SHA-256 (``osd.digest``, which
repairs and fills nothing) and combines them into the replica's tree digest
(``xfs.common.digests``). A replica whose OSD reports a corrupt or missing object, or
does not answer, gets ``tree: null`` and its problems (the first few) named.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import trio

from xfs.common.digests import tree
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, ObjDigest

if TYPE_CHECKING:
    from xfs.client.file_io import OpenFile
    from xfs.client.session import Session

NAME = b"xfs.replica.digest"
AT_ONCE = 8  # objects asked about at a time
PROBLEMS_SHOWN = 8  # per replica: the xattr stays well under 64 KiB


async def replica_digests(session: Session, ino: int) -> bytes:
    """The JSON value of ``xfs.replica.digest`` for ``ino`` (opened for reading). Not
    kept: a getxattr(2) that first asks for the size makes the OSDs digest twice, but an
    answer kept for the next question could hide a copy that went bad in between."""
    f = await session.open(ino, os.O_RDONLY)
    try:
        value = json.dumps(await _digests(f), sort_keys=True).encode()
    finally:
        with trio.CancelScope(shield=True):
            await session.release(f)
    return value


async def _digests(f: OpenFile) -> dict[str, Any]:
    layout = await f.fresh_layout()
    size = layout.attr.size
    stripe = f.stripe_size
    objects = -(-size // stripe)
    limit = trio.CapacityLimiter(AT_ONCE)
    replicas = []
    for index, replica in enumerate(layout.xloc.replicas):
        found: dict[int, bytes] = {}
        problems: list[str] = []

        async def ask(
            objno: int,
            index: int = index,
            found: dict[int, bytes] = found,
            problems: list[str] = problems,
        ) -> None:
            async with limit:
                current = await f.fresh_layout()
                osds = current.xloc.replicas[index].osds
                osd = osds[objno % len(osds)]
                length = min(stripe, size - objno * stripe)
                request = ObjDigest(current.xcap, current.xloc, objno, length)
                try:
                    reply = await f.session.osd_call(current, osd, OSD.digest, request)
                except (XfsError, trio.TooSlowError, OSError) as e:
                    problems.append(f"object {objno} on OSD {osd}: {e or 'no answer'}")
                    return
                if reply.problem:
                    problems.append(f"object {objno} on OSD {osd}: {reply.problem}")
                else:
                    found[objno] = reply.sha256

        async with trio.open_nursery() as n:
            for objno in range(objects):
                n.start_soon(ask, objno)
        whole = len(found) == objects and not problems
        replicas.append(
            {
                "osds": list(replica.osds),
                "tree": tree(found[o] for o in range(objects)) if whole else None,
                "problems": sorted(problems)[:PROBLEMS_SHOWN],
                "problem_count": len(problems),
            }
        )
    return {"size": size, "object_size": stripe, "replicas": replicas}
