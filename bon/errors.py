"""User-facing errors: one clear message, no traceback, non-zero exit."""
from __future__ import annotations

import functools
import sys
from typing import Callable, Iterable, TypeVar

F = TypeVar("F", bound=Callable)


class BonError(Exception):
    """A problem with the user's input or environment that they can fix."""


def unknown_choice(kind: str, value: object, valid: Iterable[str]) -> BonError:
    """Error for an unknown option, listing the valid ones."""
    choices = ", ".join(sorted(valid))
    return BonError(f"unknown {kind} {value!r}; valid choices: {choices}")


def exit_on_user_error(fn: F) -> F:
    """Turn a BonError raised inside a command into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BonError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
