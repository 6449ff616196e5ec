"""Typed errors that carry an errno, and their one wire encoding.

On the wire an error is ``[errno_name, message]`` (for example ``["ENOENT", "no such
entry 'x'"]``). Names, not numbers, travel so that peers on different platforms agree.
"""

from __future__ import annotations

import errno as _errno
from typing import Any


class XfsError(Exception):
    """A failure with a POSIX errno, raised by servers and surfaced by clients."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or _errno.errorcode.get(code, str(code)))
        self.code = code
        self.message = message or _errno.errorcode.get(code, str(code))

    @property
    def name(self) -> str:
        return _errno.errorcode.get(self.code, "EIO")

    def to_wire(self) -> list[str]:
        return [self.name, self.message]

    @classmethod
    def from_wire(cls, value: Any) -> XfsError:
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], str)
        ):
            code = getattr(_errno, value[0], None)
            if isinstance(code, int) and value[0].startswith("E"):
                return cls(code, value[1])
        return ProtocolError(f"malformed error from peer: {value!r:.200}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.message!r})"


class ProtocolError(XfsError):
    """The peer sent something that is not xfs protocol. The connection is closed."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.EPROTO, message)


class Unavailable(XfsError):
    """A server could not be reached (or stopped answering) within the caller's deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.EIO, message)


def err(code: int, message: str = "") -> XfsError:
    """Shorthand used by services: ``raise err(ENOENT, "no entry 'x'")``."""
    return XfsError(code, message)
