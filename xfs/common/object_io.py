"""Reading part of an object file (``xfs.common.object_format``) through a descriptor:
the OSD's store and a mount reading an OSD's files on its own host both read this way."""

from __future__ import annotations

import functools
import os

from xfs.common import object_format


def read_range(fd: int, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of the data of the object file open as ``fd``,
    verified (``object_format.read_range``; ValueError if the file is bad).

    Every page the read needs (the header and table, the blocks) is first asked of the
    disk at once (``POSIX_FADV_WILLNEED`` starts the reads and does not wait), so a cold
    read waits for the disk about once, not once for the header and again for the data.
    """
    on_disk = os.fstat(fd).st_size
    for count, at in object_format.spans(on_disk, offset, length):
        os.posix_fadvise(fd, at, count, os.POSIX_FADV_WILLNEED)
    return object_format.read_range(functools.partial(os.pread, fd), on_disk, offset, length)
