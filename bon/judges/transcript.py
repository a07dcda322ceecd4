"""A compact transcript of one candidate, for judges that compare several candidates in one prompt.

A list-wise judge shows N trajectories at once, so each must be short: the agent's steps with their
text shortened, each tool call as name(arguments), each tool result shortened with tool errors
marked, and the final answer. When the whole still exceeds `max_chars`, the middle is cut: the
start (how the agent set out) and the end (how it concluded, and its final answer) are kept.

The task's system prompt and first user message (the question) are left out: the comparing prompt
shows the question once for all candidates. Later user messages (a simulated user, a nudge to
answer) are kept, since they are part of what happened.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bon.judges.prompt import _content
from bon.types import Trajectory

STEP_CHARS = 500  # an assistant message's text
ARGS_CHARS = 200  # a tool call's arguments
RESULT_CHARS = 300  # a tool result
USER_CHARS = 300  # a later user message
MIN_CHARS = 200  # below this a transcript says too little to compare


def shorten(text: str, limit: int) -> str:
    """`text` on one line (whitespace collapsed), cut to about `limit` characters with a note of how much went."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[:max(0, limit)] + f"...(+{len(flat) - limit} chars)"


def _tool_errors(trajectory: Trajectory) -> dict[str, str]:
    """tool_call_id -> error kind, as bon's generator records it in the trajectory's metadata."""
    calls = (trajectory.metadata or {}).get("tool_calls") or []
    return {str(c.get("id")): str(c["error_kind"]) for c in calls if isinstance(c, Mapping) and c.get("error_kind")}


def _looks_like_error(text: str) -> bool:
    """A tool result that reports a failure in the usual shapes: "error: ..." or a JSON {"error": ...}."""
    stripped = text.lstrip()
    if stripped[:5].lower() == "error":
        return True
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            return False
        return isinstance(value, dict) and bool(value.get("error"))
    return False


def _call_line(call: Mapping[str, Any]) -> str:
    function = call.get("function") or {}
    args = function.get("arguments")
    args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return f"  -> calls {function.get('name') or '?'}({shorten(args_text or '', ARGS_CHARS)})"


def _body_lines(trajectory: Trajectory) -> list[str]:
    messages = list(trajectory.messages)
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), -1)
    errors = _tool_errors(trajectory)
    lines: list[str] = []
    step = 0
    for i, m in enumerate(messages):
        role = m.get("role")
        text = _content(m)
        if role == "assistant":
            step += 1
            lines.append(f"Step {step}: {shorten(text, STEP_CHARS)}".rstrip())
            lines.extend(_call_line(c) for c in m.get("tool_calls") or [])
        elif role == "tool":
            kind = errors.get(str(m.get("tool_call_id"))) or ("error" if _looks_like_error(text) else None)
            mark = f" [TOOL ERROR: {kind}]" if kind else ""
            lines.append(f"  <- {m.get('name') or 'tool'} returned{mark}: {shorten(text, RESULT_CHARS)}")
        elif role == "user" and i != first_user:
            lines.append(f"User: {shorten(text, USER_CHARS)}")
    if step == 0:
        meta = trajectory.metadata or {}
        why = meta.get("error_kind") or meta.get("stop_reason")
        lines.append("(no steps: the agent produced no message" + (f"; it stopped with {why})" if why else ")"))
    return lines


def _final_line(trajectory: Trajectory) -> str:
    if trajectory.answer is not None and str(trajectory.answer).strip():
        return f"Final answer: {shorten(str(trajectory.answer), RESULT_CHARS)}"
    why = (trajectory.metadata or {}).get("stop_reason")
    return "Final answer: none" + (f" (the run stopped: {why})" if why and why != "answer" else "")


def _cut_middle(body: str, budget: int) -> str:
    """`body` in at most `budget` characters: its start and end around a note of what was cut."""
    if len(body) <= budget:
        return body
    note = f"\n[... {len(body)} characters cut from the middle ...]\n"  # an upper bound on the number shown
    keep = budget - len(note)
    if keep <= 0:
        return ""
    head = keep // 2
    tail = keep - head
    cut = len(body) - head - tail
    return body[:head] + f"\n[... {cut} characters cut from the middle ...]\n" + (body[-tail:] if tail else "")


def compact(trajectory: Trajectory, max_chars: int = 4000) -> str:
    """A short transcript of one candidate, at most `max_chars` characters, ending with its final answer."""
    final = _final_line(trajectory)
    body = "\n".join(_body_lines(trajectory))
    whole = f"{body}\n{final}"
    if len(whole) <= max_chars:
        return whole
    final = final if len(final) <= max_chars // 3 else final[:max(0, max_chars // 3 - 3)] + "..."
    middle = _cut_middle(body, max_chars - len(final) - 1)
    return (f"{middle}\n{final}" if middle else final)[:max_chars]
