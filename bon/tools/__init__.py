"""Tools for agent generators, looked up by name (`generator.tools: [calculator, final_answer]`).

A new tool is a `Tool` subclass in its own module, added with `register` at the bottom of this file.
`get` builds fresh instances, so a tool may keep per-run state.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

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


def get(names: str | Iterable[str], options: Mapping[str, Any] | None = None) -> list[Tool]:
    """New instances of the named tools, in the order given; an unknown name lists the valid ones.

    `options` is the run's `tools` config: `options[name]` holds keyword arguments for that tool
    (e.g. `tools.visit_page.max_bytes`), and a top-level `allow_private` reaches every tool whose
    constructor takes it. An option a tool does not take is an error that lists the ones it does.
    """
    wanted = [names] if isinstance(names, str) else list(names)
    dupes = sorted({n for n in wanted if wanted.count(n) > 1})
    if dupes:
        raise BonError(f"tool(s) listed twice: {', '.join(dupes)}")
    for name in wanted:
        if name not in REGISTRY:
            raise unknown_choice("tool", name, REGISTRY)
    options = dict(options or {})
    stray = sorted(k for k in options if k != "allow_private" and k not in REGISTRY)
    if stray:
        raise BonError(f"tools.{stray[0]} is not a tool; valid: allow_private, {', '.join(sorted(REGISTRY))}")
    return [_build(name, options) for name in wanted]


def _build(name: str, options: Mapping[str, Any]) -> Tool:
    factory = REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    own = options.get(name) or {}
    if not isinstance(own, Mapping):
        raise BonError(f"tools.{name} must be a mapping of options, got {type(own).__name__}")
    kwargs = dict(own)
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        valid = ", ".join(k for k in accepted if k != "allow_private") or "none"
        raise BonError(f"tools.{name} has no option {', '.join(unknown)}; valid options: {valid}")
    if "allow_private" in accepted and "allow_private" in options:
        kwargs.setdefault("allow_private", bool(options["allow_private"]))
    return factory(**kwargs)


from bon.tools import basic, files, python_tool, search, web  # noqa: E402 - the built-ins; need `register`

register(basic.FinalAnswer)
register(basic.Calculator)
register(search.WebSearch)
register(web.VisitPage)
register(files.InspectFile)
register(python_tool.PythonTool)

__all__ = ["REGISTRY", "Tool", "ToolContext", "ToolResult", "check_arguments", "get", "names", "register",
           "run_tool"]
