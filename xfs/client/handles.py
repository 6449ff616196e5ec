"""Open file handles of the mount: what the kernel's ``fh`` stands for."""

from __future__ import annotations

from dataclasses import dataclass, field

from xfs.client.file_io import OpenFile
from xfs.client.session import Session


@dataclass
class Handle:
    """One open file description: the session that opened it, the (shared) file of the
    inode, this open's own flags, and the lock owners that took locks through it."""

    session: Session
    file: OpenFile
    flags: int
    lock_owners: set[int] = field(default_factory=set)
    closing_owner: int | None = None  # the owner whose close the kernel is flushing
    privs_checked: bool = False  # set-id bits seen to (O_APPEND: see Operations.write)

    @property
    def ino(self) -> int:
        return self.file.ino
