"""Tools for agent generators, looked up by name (`generator.tools: [calculator, final_answer]`).

A new tool is a `Tool` subclass in its own module, added with `register` at the bottom of this file.
`get` builds fresh instances, so a tool may keep per-run state.
"""
from __future__ import annotations

from typing import Callable, Iterable, TypeVar

from bon.errors import BonError, unknown_choice
from bon.tools.base import Tool, ToolContext, ToolResult, check_arguments, run_tool

T = TypeVar("T", bound=Callable[[], Tool])

REGISTRY: dict[str, Callable[[], Tool]] = {}


def register(factory: T) -> T:
    """Make a tool class (or a zero-argument factory with a `name`) available to `get`."""
    name = getattr(factory, "name", None)
    if not isinstance(name, str) or not name:
        raise BonError(f"{factory!r} has no tool name")
    if name in REGISTRY and REGISTRY[name] is not factory:
        raise BonError(f"two tools are registered as {name!r}")
    REGISTRY[name] = factory
    return factory


def names() -> list[str]:
    return sorted(REGISTRY)


def get(names: str | Iterable[str]) -> list[Tool]:
    """New instances of the named tools, in the order given; an unknown name lists the valid ones."""
    wanted = [names] if isinstance(names, str) else list(names)
    dupes = sorted({n for n in wanted if wanted.count(n) > 1})
    if dupes:
        raise BonError(f"tool(s) listed twice: {', '.join(dupes)}")
    for name in wanted:
        if name not in REGISTRY:
            raise unknown_choice("tool", name, REGISTRY)
    return [REGISTRY[name]() for name in wanted]


from bon.tools import basic  # noqa: E402 - registers the built-ins; needs `register` above

register(basic.FinalAnswer)
register(basic.Calculator)

__all__ = ["REGISTRY", "Tool", "ToolContext", "ToolResult", "check_arguments", "get", "names", "register",
           "run_tool"]
