"""Running a long-lived service under trio until SIGTERM/SIGINT, then stopping it cleanly."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Service(Protocol):
    async def run(self, *, task_status: Any = ...) -> None: ...


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(service: Service, stop: Callable[[], Awaitable[None] | None]) -> None:
    """Run ``service`` and, on the first SIGTERM or SIGINT, call ``stop``."""
    import trio

    async def main() -> None:
        async with trio.open_nursery() as n:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

                async def watch() -> None:
                    async for signum in signals:
                        logging.getLogger("xfs").info("signal %d: stopping", signum)
                        result = stop()
                        if result is not None:
                            await result
                        return

                n.start_soon(watch)
                await service.run()
                n.cancel_scope.cancel()  # the service ended on its own (e.g. unmounted)

    try:
        trio.run(main)
    except BaseExceptionGroup as raised:  # a refusal while starting: one line, not a trace
        inner = domain_error(raised)
        if isinstance(inner, BaseExceptionGroup):
            raise
        raise SystemExit(f"Error: {getattr(inner, 'message', inner)}") from None


def domain_error(e: BaseException) -> BaseException:
    """The XfsError, deadline or exit (an MRC that lost its lead) inside ``e``'s
    exception groups, else ``e``."""
    import trio

    from xfs.common.groups import leaf
    from xfs.proto.errors import XfsError

    return leaf(e, (XfsError, trio.TooSlowError, SystemExit))
