"""The error inside trio's exception groups: a nursery wraps what one of its tasks raised
in a group, and callers that report one error (the mount's errno, the CLI's one line)
want that error."""

from __future__ import annotations


def leaf(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException:
    """The first exception of one of ``kinds`` inside ``exc``'s exception groups (depth
    first), else ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = leaf(inner, kinds)
            if isinstance(found, kinds):
                return found
    return exc
