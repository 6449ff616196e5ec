"""What the transport tests do through the mount while servers are attacked: write 1 MiB
with fsync, read it back and stat it, each call within an absolute bound."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BOUND = 1.0  # seconds any one call may take


def timed(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    start = time.monotonic()
    result = fn(*args)
    took = time.monotonic() - start
    assert took < BOUND, f"{what} took {took:.2f} s"
    return result


def write_read_stat(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with fsync, read it back and stat it, each timed."""

    def write() -> None:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    timed("write + fsync of 1 MiB", write)
    assert timed("read of 1 MiB", path.read_bytes) == data
    assert timed("stat", os.stat, path).st_size == len(data)
