"""Read a judge's reply into a Judgement, or a failed Judgement with the reason. Never guess.

Only the judge's own reply is parsed, and only its last JSON verdict: the last fenced JSON
block, else the last top-level JSON object in the text. A verdict quoted from the judged
trajectory earlier in the reply therefore never wins over the judge's own final block.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from bon.types import Judgement

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_LABELS = {"+1": 1, "1": 1, "0": 0, "-1": -1, "+0": 0, "-0": 0}
STEP_KEYS = ("steps", "step_labels", "labels")
FINAL_KEYS = ("FINAL_RESULT", "final_result", "final", "final_label")


def _objects(text: str) -> list[str]:
    """Top-level {...} spans of `text`, in order (braces inside JSON strings respected)."""
    spans, depth, start, in_string, escaped = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth:
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start:i + 1])
    return spans


def _last_verdict(reply: str) -> dict[str, Any] | None:
    for candidates in ([b.strip() for b in _FENCE.findall(reply)], _objects(reply)):
        for chunk in reversed(candidates):
            for text in (chunk, *reversed(_objects(chunk))):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    return value
    return None


def label(value: Any) -> int | None:
    """+1/0/-1 from an int or a string like '+1'; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value in (-1, 0, 1):
        return value
    if isinstance(value, float) and value in (-1.0, 0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        return _LABELS.get(value.strip())
    return None


def _pick(verdict: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((verdict[k] for k in keys if k in verdict), None)


def parse(reply: str, judge: str, steps: Sequence[int], mode: str = "prm") -> Judgement:
    """A Judgement from the reply; status failed (with the reason) when it is unusable or incomplete."""
    def failed(reason: str) -> Judgement:
        return Judgement(judge, status="failed", reason=reason, raw=reply)

    verdict = _last_verdict(reply or "")
    if verdict is None:
        return failed("no JSON verdict in the reply")
    final_raw = _pick(verdict, FINAL_KEYS)
    final = label(final_raw)
    if final == 0 or (final_raw is not None and final is None):
        return failed(f"FINAL_RESULT must be +1 or -1, got {final_raw!r}")
    if final is None:
        return failed("the verdict has no FINAL_RESULT")
    if mode == "orm":
        return Judgement(judge, {}, final, raw=reply)
    raw_steps = _pick(verdict, STEP_KEYS)
    if raw_steps is None:  # flat form: {"2": 1, "4": -1, "FINAL_RESULT": 1}
        raw_steps = {k: v for k, v in verdict.items() if k not in FINAL_KEYS}
    if not isinstance(raw_steps, dict):
        return failed(f"step labels must be an object of message index -> label, got {type(raw_steps).__name__}")
    labels: dict[int, int] = {}
    for key, value in raw_steps.items():
        index, parsed = str(key).strip().lstrip("[").rstrip("]"), label(value)
        if not index.isdigit() or parsed is None:
            return failed(f"bad step label {key!r}: {value!r} (labels are +1, 0, -1 keyed by message index)")
        labels[int(index)] = parsed
    missing = [i for i in steps if i not in labels]
    if missing:
        return failed(f"no label for step(s) {missing}")
    extra = sorted(set(labels) - set(steps))
    if extra:
        return failed(f"labels for message(s) {extra} that are not assistant steps")
    return Judgement(judge, labels, final, raw=reply)
