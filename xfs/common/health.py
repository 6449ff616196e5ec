"""Which servers failed recently, so that callers try healthy ones first."""

from __future__ import annotations

import time
from collections.abc import Callable

RECENT = 30.0  # seconds a server that failed counts as unhealthy


class Health:
    """When each server last failed to answer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failed: dict[str, float] = {}

    def failed(self, osd: str) -> None:
        self._failed[osd] = self._clock()

    def ok(self, osd: str) -> None:
        self._failed.pop(osd, None)

    def recently_failed(self, osd: str) -> bool:
        at = self._failed.get(osd)
        return at is not None and self._clock() - at < RECENT
