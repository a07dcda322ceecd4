"""The judge prompt: the labelling rubric and the trajectory shown with each message's index.

Users can replace the template with their own file (`judge.prompt=path`), in Python format
syntax: placeholders {trajectory} and {steps} (and {tools} for the tool schemas); literal
braces are doubled.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bon.errors import BonError

PRM_TEMPLATE = """You are reviewing the work of an AI agent that used tools to solve a task. Grade every
assistant message (a "step") of the transcript below, and then the outcome.

Step labels:
  +1  the step is correct and moves the task forward.
   0  the step is neutral or exploratory: reasonable but not progress, for example a sensible
      tool call that failed for reasons outside the agent's control.
  -1  the step is wrong or harmful: a false claim, a bad tool call, a wrong conclusion, or an
      action that breaks the rules the system prompt sets.
Rules:
  - Judge each step only on what the agent could know at that point, not on later messages.
  - An error carries forward: a step that builds on an earlier -1 is also -1, until the agent
    notices and corrects the mistake.
  - Breaking a policy stated in the system prompt is -1 even when it helps the task.
FINAL_RESULT is +1 if the agent's final answer or final state solves the task, else -1.

Tools the agent could call:
{tools}

Transcript (each message starts with its index in square brackets):
{trajectory}

Grade exactly these steps: {steps}.
Answer with a short justification, then one fenced JSON block as the very last thing, in this form:
```json
{{"steps": {{"<index>": <label>, ...}}, "FINAL_RESULT": <+1 or -1>}}
```"""

ORM_TEMPLATE = """You are reviewing the work of an AI agent that used tools to solve a task. Decide whether
the agent's final answer or final state solves the task.

Tools the agent could call:
{tools}

Transcript (each message starts with its index in square brackets):
{trajectory}

Answer with a short justification, then one fenced JSON block as the very last thing:
```json
{{"FINAL_RESULT": <+1 or -1>}}
```"""


# Appended to the transcript when the judge grades a proposed step during search (bon.generators.search):
# the transcript stops at that step, before its tool calls have run.
PREFIX_NOTE = """(The transcript is unfinished. Its last message is a step the agent proposes to take next: its
tool calls, if any, have not been run yet, so no results for them exist. Grade that step on whether it
is a sound next move given everything before it. For FINAL_RESULT, give +1 only if that step gives a
final answer that solves the task, else -1.)"""


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        content = "\n".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return str(content or "")


def render_trajectory(messages: Sequence[Mapping[str, Any]], max_chars: int | None = None,
                      tool_errors: Mapping[str, str] | None = None) -> str:
    """One block per message, headed by its absolute index so labels can be keyed by it.

    `tool_errors` (tool_call_id -> error kind, from the generator's record) marks failed tool calls
    in the head, so the judge can tell an external failure (neutral) from the agent's mistake."""
    blocks = []
    for i, m in enumerate(messages):
        role = str(m.get("role", "?"))
        head = f"[{i}] {role}" + (f" ({m['name']})" if role == "tool" and m.get("name") else "")
        kind = (tool_errors or {}).get(str(m.get("tool_call_id"))) if role == "tool" else None
        if kind:
            head += f" [tool error: {kind}]"
        text = _content(m)
        if max_chars and len(text) > max_chars:
            text = text[:max_chars] + f" ...[{len(text) - max_chars} more characters cut]"
        calls = [f"call {c.get('function', {}).get('name')}({c.get('function', {}).get('arguments', '')})"
                 for c in m.get("tool_calls") or []]
        blocks.append("\n".join([head + ":", *([text] if text else []), *calls]))
    return "\n\n".join(blocks)


def load_template(mode: str, path: str | None) -> str:
    """The built-in template for `mode`, or the user's file."""
    if not path:
        return PRM_TEMPLATE if mode == "prm" else ORM_TEMPLATE
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BonError(f"judge.prompt: cannot read {file}: {exc.strerror}") from None
    needed = ["{trajectory}"] + (["{steps}"] if mode == "prm" else [])
    missing = [p for p in needed if p not in text]
    if missing:
        raise BonError(f"judge.prompt {file} lacks the placeholder(s) {', '.join(missing)}")
    return text


def build(template: str, messages: Sequence[Mapping[str, Any]], steps: Sequence[int],
          tools: Sequence[Mapping[str, Any]] | None = None, max_chars: int | None = None,
          tool_errors: Mapping[str, str] | None = None, prefix: bool = False) -> str:
    """Fill a template (Python format syntax: write literal braces as {{ and }}). `prefix`: the last
    step is proposed, not yet carried out (PREFIX_NOTE follows the transcript)."""
    tool_text = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools or []) or "(none)"
    transcript = render_trajectory(messages, max_chars, tool_errors)
    if prefix:
        transcript += "\n\n" + PREFIX_NOTE
    try:
        return template.format(trajectory=transcript,
                               steps=", ".join(map(str, steps)), tools=tool_text)
    except (KeyError, IndexError, ValueError) as exc:
        raise BonError(f"judge.prompt: cannot fill the template ({exc!r}); placeholders are {{trajectory}}, "
                       f"{{steps}} and {{tools}}, and literal braces must be doubled") from None
