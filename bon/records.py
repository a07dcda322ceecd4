"""Trajectories and judgements as JSON records: the one place that writes them and reads them back.

Every record bon writes carries `schema` ("bon.trajectory/1", "bon.judgement/1"), so a reader can
refuse a file from a newer bon, or the wrong kind of file, with one line instead of guessing. A record
without `schema` is read as version 1: files written before records were versioned, and trajectory
files from other tools (`generator=replay`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bon.errors import BonError
from bon.types import VALID_LABELS, Judgement, Trajectory

TRAJECTORY = "bon.trajectory/1"
JUDGEMENT = "bon.judgement/1"
SCHEMAS = (TRAJECTORY, JUDGEMENT)
ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
STATUSES = ("ok", "failed")
_JUDGEMENT_FIELDS = ("judge", "status", "reason", "final_label", "step_labels", "raw")


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(record: Mapping[str, Any]) -> bytes:
    """One record as one JSONL line, UTF-8 and readable (JSON escapes every newline inside it)."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_plain)
    return (line + "\n").encode("utf-8")


def check_schema(r: Mapping[str, Any], expected: str, where: str) -> None:
    """Accept `expected` or no schema at all; anything else is a one-line error naming `where`."""
    schema = r.get("schema")
    if schema is None or schema == expected:
        return
    if schema in SCHEMAS:
        raise BonError(f"{where}: a {schema} record where a {expected} record was expected (the wrong file?)")
    raise BonError(f"{where}: unsupported record schema {schema!r}; this bon reads {', '.join(SCHEMAS)} "
                   f"(a file written by a newer bon?)")


# --------------------------------------------------------------------------- trajectories


def trajectory_to_record(t: Trajectory) -> dict[str, Any]:
    """A trajectory as a plain JSON object (small fields first, so `head` and `grep` are useful)."""
    return {"schema": TRAJECTORY, "task_id": t.task_id, "sample": t.sample, "answer": t.answer,
            "success": t.success, "metadata": dict(t.metadata), "messages": [dict(m) for m in t.messages]}


def trajectory_from_record(r: Mapping[str, Any], where: str, sample: int | None = None) -> Trajectory:
    """Check one record's fields and build the Trajectory; errors say `where` (file:line).

    `sample` is the index to use when the record has none (a replayed file numbered in order)."""
    check_schema(r, TRAJECTORY, where)
    task_id = r.get("task_id")
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool):
        raise BonError(f"{where}: needs a string or integer task_id")
    s = r.get("sample", sample)
    if not isinstance(s, int) or isinstance(s, bool) or s < 0:
        raise BonError(f"{where}: sample must be an integer >= 0, got {s!r}")
    messages = r.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BonError(f"{where}: messages must be a non-empty list of chat messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BonError(f"{where}: messages[{i}] is not a chat message with a role "
                           f"({', '.join(sorted(ROLES))})")
    answer = r.get("answer")
    if answer is not None and not isinstance(answer, str):
        if isinstance(answer, bool) or not isinstance(answer, (int, float)):
            raise BonError(f"{where}: answer must be a string or null")
        answer = str(answer)
    success = r.get("success")
    if success is not None and not isinstance(success, bool):
        raise BonError(f"{where}: success must be true, false or null")
    metadata = r.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BonError(f"{where}: metadata must be an object")
    return Trajectory(task_id=str(task_id), sample=s, messages=tuple(messages), answer=answer,
                      success=success, metadata=metadata)


# --------------------------------------------------------------------------- judgements


def judgement_to_record(j: Judgement, **context: Any) -> dict[str, Any]:
    """A judgement as a plain JSON object, after the `context` fields that say what was judged
    (task_id and sample, an episode, ...). Step indices become string keys, as JSON needs."""
    clash = set(context) & {"schema", *_JUDGEMENT_FIELDS}
    if clash:
        raise ValueError(f"context fields {sorted(clash)} would overwrite the judgement's own")
    return {"schema": JUDGEMENT, **context, "judge": j.judge, "status": j.status, "reason": j.reason,
            "final_label": j.final_label, "step_labels": {str(k): v for k, v in j.step_labels.items()},
            "raw": j.raw}


def _label(value: Any, what: str, where: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value in VALID_LABELS):
        return value
    raise BonError(f"{where}: {what} must be -1, 0, 1 or null, got {value!r}")


def judgement_from_record(r: Mapping[str, Any], where: str) -> Judgement:
    """Check one record's judgement fields and build the Judgement (context fields are the caller's)."""
    check_schema(r, JUDGEMENT, where)
    judge = r.get("judge")
    if not isinstance(judge, str) or not judge:
        raise BonError(f"{where}: judge must be a non-empty string")
    status = r.get("status", "ok")
    if status not in STATUSES:
        raise BonError(f"{where}: status must be one of {', '.join(STATUSES)}, got {status!r}")
    labels = r.get("step_labels") or {}
    if not isinstance(labels, dict):
        raise BonError(f"{where}: step_labels must be an object of message index -> label")
    steps: dict[int, int | None] = {}
    for key, value in labels.items():
        if not str(key).isdigit():
            raise BonError(f"{where}: step_labels key {key!r} is not a message index")
        steps[int(key)] = _label(value, f"step_labels[{key}]", where)
    for name in ("reason", "raw"):
        if not isinstance(r.get(name, ""), str):
            raise BonError(f"{where}: {name} must be a string")
    return Judgement(judge=judge, step_labels=steps, final_label=_label(r.get("final_label"), "final_label", where),
                     status=status, reason=r.get("reason", ""), raw=r.get("raw", ""))
