"""The one errno mapping of the client: every failure becomes exactly one errno here.

pyfuse3 only survives ``FUSEError``; any other exception escaping an operation is a bug.
``fuse_errors`` wraps each operation: domain errors become their errno, servers that
cannot be reached within the deadline become EIO, and anything else is logged as a bug
and (in strict mode, which the tests use) re-raised.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from xfs.proto.errors import XfsError

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: Tests set this so that a bug in an operation fails the test instead of becoming EIO.
STRICT = False


def _leaf(exc: BaseException) -> BaseException:
    """The first domain error inside an exception group (from a nursery), if any."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            leaf = _leaf(inner)
            if isinstance(leaf, XfsError | trio.TooSlowError | OSError):
                return leaf
    return exc


def errno_of(exc: BaseException) -> int:
    exc = _leaf(exc)
    if isinstance(exc, XfsError):
        return exc.code
    if isinstance(exc, trio.TooSlowError):
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    raise exc


def fuse_errors(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (XfsError, trio.TooSlowError, OSError, ExceptionGroup) as e:
            leaf = _leaf(e)
            if not isinstance(leaf, XfsError | trio.TooSlowError | OSError):
                log.exception("bug in %s", fn.__name__)
                if STRICT:
                    raise
                raise pyfuse3.FUSEError(errno.EIO) from None
            code = errno_of(leaf)
            if code == errno.EIO:
                log.warning("%s: %s", fn.__name__, e)
            else:
                log.debug("%s: %r", fn.__name__, leaf)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("bug in %s", fn.__name__)
            if STRICT:
                raise
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
