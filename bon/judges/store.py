"""Judgements on disk: appended as each finishes, loaded to resume a killed run, written out once complete.

Each line is a bon.judgement/1 record (bon.records) preceded by what was judged: `task_id`, `sample` and
`input_sha256`, the judge's fingerprint of that trajectory under its settings (LLMJudge.fingerprint).
A rerun reuses a stored judgement only when task, sample, judge name and fingerprint all match and the
judgement did not fail; a failed one is judged again. The file is crash-safe the way the trajectory
store is (bon.generators.store): whole fsync'd lines, a torn last line skipped and cut, and any other
bad line an error naming file:line. When several lines have the same key, the later one wins.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bon.errors import BonError
from bon.generators.store import AppendOnlyFile, records, write_atomically
from bon.records import dumps, judgement_from_record, judgement_to_record
from bon.types import Judgement, Trajectory

# (task_id, sample, judge name, input_sha256)
Key = tuple[str, int, str, str]


def line(t: Trajectory, j: Judgement, fingerprint: str | None) -> bytes:
    """The JSONL line of one trajectory's judgement (fingerprint None: the judge was not asked)."""
    return dumps(judgement_to_record(j, task_id=t.task_id, sample=t.sample, input_sha256=fingerprint))


def _context(r: Mapping[str, Any], where: str) -> tuple[str, int, str | None]:
    task_id, sample, fingerprint = r.get("task_id"), r.get("sample"), r.get("input_sha256")
    if not isinstance(task_id, str):
        raise BonError(f"{where}: task_id must be a string")
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise BonError(f"{where}: sample must be an integer >= 0, got {sample!r}")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise BonError(f"{where}: input_sha256 must be a string or null")
    return task_id, sample, fingerprint


def load(path: str | os.PathLike[str]) -> dict[Key, Judgement]:
    """The judgements in a file by key; {} when it does not exist yet. A record without a fingerprint
    (not judged, or written before judgements were keyed) is checked but can never be reused."""
    file = Path(path)
    if not file.exists():
        return {}
    out: dict[Key, Judgement] = {}
    for lineno, r in records(file, what="judgement"):
        where = f"{file}:{lineno}"
        j = judgement_from_record(r, where)
        task_id, sample, fingerprint = _context(r, where)
        if fingerprint is not None:
            out[(task_id, sample, j.judge, fingerprint)] = j
    return out


def reusable(stored: Mapping[Key, Judgement], key: Key) -> Judgement | None:
    """The stored judgement for `key` if it can stand in for a new one (it exists and did not fail)."""
    j = stored.get(key)
    return None if j is None or j.failed else j


def write(path: str | os.PathLike[str], rows: Iterable[tuple[Trajectory, Judgement, str | None]]) -> None:
    """Replace `path` with exactly these judgements, in this order (a crash leaves the old file whole)."""
    write_atomically(path, (line(t, j, fingerprint) for t, j, fingerprint in rows))


class JudgementStore:
    """An append-only JSONL file of finished judgements, safe against a crash at any moment."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = AppendOnlyFile(self.path)

    def __repr__(self) -> str:
        return f"JudgementStore({str(self.path)!r})"

    def load(self) -> dict[Key, Judgement]:
        return load(self.path)

    def append(self, t: Trajectory, j: Judgement, fingerprint: str | None) -> None:
        """Write the judgement's line and fsync it; returns once it is on disk."""
        self._file.append(line(t, j, fingerprint))

    async def aappend(self, t: Trajectory, j: Judgement, fingerprint: str | None) -> None:
        """`append` on a worker thread, so fsync never stalls the event loop."""
        await asyncio.to_thread(self.append, t, j, fingerprint)
