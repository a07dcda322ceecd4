"""The tool interface an agent calls, and the one place tool calls are dispatched.

A tool never raises into the agent loop: whatever goes wrong (unknown name, arguments that are not
JSON or do not fit the schema, an exception or a hang inside the tool) comes back as a `ToolResult`
with an `error_kind`, which the model reads as the tool's reply and the trajectory records.
"""
from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bon.errors import BonError
from bon.types import Task

log = logging.getLogger(__name__)

# Error kinds set by `run_tool` itself; tools add their own short kinds (e.g. "bad_expression").
UNKNOWN_TOOL = "unknown_tool"
BAD_ARGUMENTS = "bad_arguments"
EXCEPTION = "exception"
TIMEOUT = "timeout"
SKIPPED = "skipped"  # not run: an earlier call in the same message ended the episode

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


@dataclass(frozen=True)
class ToolResult:
    """What a tool returns to the model. `answer` set means the episode ends with that answer.

    `images` (data: URLs) are shown to the model as image content after the step's tool messages
    (tool messages carry text only); a tool returns them only when `ToolContext.model` accepts images.
    """

    content: str
    error_kind: str | None = None
    answer: str | None = None
    images: tuple[str, ...] = ()

    @classmethod
    def error(cls, kind: str, message: str) -> ToolResult:
        return cls(content=f"error: {message}", error_kind=kind)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may need beyond its arguments: the task, the sample index, and the task's files.

    `files_dir` is a directory holding exactly the task's attached files under their base names
    (made by the agent loop); tools that read files must stay inside it. None: no attachments.
    """

    task: Task
    sample: int = 0
    files_dir: Path | None = None
    model: str | None = None  # the agent's model (litellm name), e.g. to know whether it accepts images


class Tool(ABC):
    """A named function the model can call; `parameters` is the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    @abstractmethod
    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Run the tool. Report problems the model can fix as `ToolResult.error(...)`."""

    def openai_schema(self) -> dict[str, Any]:
        """The entry for the `tools` list of a chat-completions request."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def __repr__(self) -> str:
        return f"<tool {self.name}>"


def option(tool: str, name: str, value: Any, *, integer: bool = False, minimum: float = 0,
           strict: bool = False) -> Any:
    """A numeric tool option, checked at construction; the error names `tools.<tool>.<name>`."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (value <= minimum if strict else value < minimum):
        what = "an integer" if integer else "a number"
        raise BonError(f"tools.{tool}.{name} must be {what} {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return value


def _type_ok(value: Any, expected: str | list[str]) -> bool:
    names = [expected] if isinstance(expected, str) else list(expected)
    for name in names:
        types = _JSON_TYPES.get(name)
        if types is None:
            return True  # a type we do not check
        if isinstance(value, bool) and name in ("number", "integer"):
            continue  # JSON true is not a number
        if isinstance(value, types):
            return True
    return False


def check_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """The first way `arguments` break the top level of `schema`, or None.

    Deliberately shallow (required keys, unexpected keys, property types): enough to give the model
    a precise complaint without pulling in a JSON-schema validator.
    """
    props: Mapping[str, Any] = schema.get("properties") or {}
    missing = [k for k in schema.get("required") or () if k not in arguments]
    if missing:
        return f"missing required argument(s): {', '.join(missing)}"
    if schema.get("additionalProperties") is False:
        extra = sorted(k for k in arguments if k not in props)
        if extra:
            return f"unexpected argument(s): {', '.join(extra)}; expected: {', '.join(props) or 'none'}"
    for key, value in arguments.items():
        expected = (props.get(key) or {}).get("type")
        if expected is not None and not _type_ok(value, expected):
            return f"argument {key!r} must be of type {expected}, got {type(value).__name__}"
    return None


def _parse(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | str:
    """The arguments as a dict, or a message saying why they are unusable."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if raw is None or not raw.strip():
        return {}  # some providers send "" for a call without arguments
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"arguments are not valid JSON ({exc.msg} at column {exc.colno}): {raw[:200]!r}"
    if not isinstance(value, dict):
        return f"arguments must be a JSON object, got {type(value).__name__}"
    return value


async def run_tool(tools: Mapping[str, Tool], name: str, raw_arguments: str | Mapping[str, Any] | None,
                   context: ToolContext, timeout_s: float | None = None) -> ToolResult:
    """Call tool `name` with the model's raw (JSON string) arguments; never raises a tool's failure."""
    tool = tools.get(name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return ToolResult.error(UNKNOWN_TOOL, f"unknown tool {name!r}; available tools: {available}")
    arguments = _parse(raw_arguments)
    if isinstance(arguments, str):
        return ToolResult.error(BAD_ARGUMENTS, arguments)
    problem = check_arguments(tool.parameters, arguments)
    if problem:
        return ToolResult.error(BAD_ARGUMENTS, problem)
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            result = await tool.call(arguments, context)
    except Exception as exc:  # noqa: BLE001 - a broken tool is the model's observation, not our crash
        if isinstance(exc, TimeoutError) and scope.expired():
            return ToolResult.error(TIMEOUT, f"tool {name!r} did not finish within {timeout_s:g} s")
        log.debug("tool %s raised", name, exc_info=True)
        return ToolResult.error(EXCEPTION, f"tool {name!r} failed: {type(exc).__name__}: {exc}")
    if not isinstance(result, ToolResult):
        return ToolResult.error(EXCEPTION, f"tool {name!r} returned {type(result).__name__}, not a ToolResult")
    return result
