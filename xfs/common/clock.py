"""Time, injected: servers read the clock through these so tests can replace it."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
NsClock = Callable[[], int]

wall: Clock = time.time
wall_ns: NsClock = time.time_ns
