"""The one errno mapping of the client: every failure becomes exactly one errno here.

pyfuse3 only survives ``FUSEError``; any other exception escaping an operation is a bug.
``fuse_errors`` wraps each operation: domain errors become their errno, servers that
cannot be reached within the deadline become EIO, and anything else is logged as a bug
and (in strict mode, which the tests use) re-raised. It also counts and times every
operation, by the errno it ended with, for the mount's metrics.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from xfs.client import fuse_ext  # noqa: F401 - before pyfuse3: see xfs.client.fuse_ext

# isort: split
import pyfuse3
import trio

from xfs.common import groups, metrics
from xfs.proto.errors import XfsError

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: Tests set this so that a bug in an operation fails the test instead of becoming EIO.
STRICT = False


def _leaf(exc: BaseException) -> BaseException:
    """The first domain error inside an exception group (from a nursery), if any."""
    return groups.leaf(exc, (XfsError, trio.TooSlowError, OSError))


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
    """Domain errors -> their errno; every operation counted and timed, by the errno it
    ended with, for the mount's metrics (``xfs.common.metrics``)."""
    name = f"fuse.{fn.__name__}"

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.monotonic()
        code = 0
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError as e:
            code = e.errno
            raise
        except (XfsError, trio.TooSlowError, OSError, ExceptionGroup) as e:
            code = errno.EIO
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
            code = errno.EIO
            log.exception("bug in %s", fn.__name__)
            if STRICT:
                raise
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            outcome = errno.errorcode.get(code, "EIO") if code else "ok"
            metrics.request(name, outcome, time.monotonic() - started)

    return wrapper
