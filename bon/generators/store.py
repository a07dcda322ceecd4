"""Trajectories on disk as JSONL: appended as each finishes, loaded to resume, replayed as a generator.

Why this shape: a live run can be killed at any moment and must lose at most the trajectories in
flight. Each trajectory is one line written with a single `write` on an O_APPEND descriptor and
fsync'd before the next, so the file is always a sequence of complete lines, except that a crash
in the middle of a write can leave one torn line at the very end. Readers skip that torn last line
with a warning (its trajectory is simply regenerated on resume); a malformed line anywhere else is
real damage and stops the read with the file and line number. Before its first append, a store
cuts such a torn tail off, so new lines never land behind it. One writing process per file.

The same reader serves `generator=replay` from a file: any JSONL of OpenAI-format trajectories
with fields task_id, sample (optional: numbered per task in file order), messages, answer?,
success?, metadata?.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from bon.errors import BonError
from bon.types import Trajectory

log = logging.getLogger(__name__)

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
_CHUNK = 1 << 16


def to_record(t: Trajectory) -> dict[str, Any]:
    """A trajectory as a plain JSON object (small fields first, so `head` and `grep` are useful)."""
    return {"task_id": t.task_id, "sample": t.sample, "answer": t.answer, "success": t.success,
            "metadata": dict(t.metadata), "messages": [dict(m) for m in t.messages]}


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(t: Trajectory) -> bytes:
    """One trajectory as one JSONL line (JSON escapes every newline inside it)."""
    line = json.dumps(to_record(t), ensure_ascii=False, separators=(",", ":"), default=_plain)
    return (line + "\n").encode("utf-8")


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError (a write torn inside a character)
        return None
    return value if isinstance(value, dict) else None


def records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a torn last line is skipped with a warning."""
    file = Path(path)
    try:
        handle = open(file, "rb")
    except OSError as exc:
        raise BonError(f"cannot read {file}: {exc.strerror}") from None
    bad: tuple[int, str] | None = None  # a malformed line, fatal unless nothing but blanks follows
    with handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            if bad is not None:
                raise BonError(f"{file}:{bad[0]}: {bad[1]}")
            try:
                value = json.loads(raw)
            except ValueError as exc:
                bad = (lineno, f"malformed JSON ({getattr(exc, 'msg', exc)})")
                continue
            if not isinstance(value, dict):
                raise BonError(f"{file}:{lineno}: expected a JSON object, got {type(value).__name__}")
            yield lineno, value
    if bad is not None:
        log.warning("%s:%d: ignoring a torn last line (an interrupted write); its trajectory is missing",
                    file, bad[0])


def from_record(r: Mapping[str, Any], where: str, sample: int | None = None) -> Trajectory:
    """Check one record's fields and build the Trajectory; errors say `where` (file:line)."""
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


def load(path: str | os.PathLike[str]) -> dict[tuple[str, int], Trajectory]:
    """The finished trajectories in a store, by (task_id, sample); {} when the file does not exist yet.

    A pair written twice (a rerun appending to the same file) keeps the later line."""
    file = Path(path)
    if not file.exists():
        return {}
    out: dict[tuple[str, int], Trajectory] = {}
    for lineno, r in records(file):
        t = from_record(r, f"{file}:{lineno}")
        out[(t.task_id, t.sample)] = t
    return out


def replay(path: str | os.PathLike[str]) -> list[Trajectory]:
    """Every trajectory in a JSONL file, in file order (`generator=replay` from a file).

    A record without `sample` gets the next free index for its task; a repeated (task_id, sample)
    is an error, since it is unclear which one to keep."""
    file = Path(path)
    out: list[Trajectory] = []
    seen: dict[tuple[str, int], int] = {}
    next_sample: dict[str, int] = {}
    for lineno, r in records(file):
        where = f"{file}:{lineno}"
        task_id = r.get("task_id")
        t = from_record(r, where, sample=next_sample.get(str(task_id), 0))
        key = (t.task_id, t.sample)
        if key in seen:
            raise BonError(f"{where}: task {t.task_id!r} sample {t.sample} repeats line {seen[key]}")
        seen[key] = lineno
        next_sample[t.task_id] = max(next_sample.get(t.task_id, 0), t.sample + 1)
        out.append(t)
    if not out:
        raise BonError(f"{file} holds no trajectories")
    return out


def _last_line_start(f: Any, end: int) -> int:
    """Offset just after the last b"\\n" before `end` (0 if none), reading backwards in chunks."""
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def repair_tail(path: Path) -> None:
    """Make the file end on a complete line: cut a torn last line, or end a whole one with b"\\n"."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        ends_with_newline = f.read(1) == b"\n"
        start = _last_line_start(f, size - 1 if ends_with_newline else size)
        f.seek(start)
        tail = f.read()
        if not tail.strip() or (ends_with_newline and _parse_object(tail) is not None):
            return
        if _parse_object(tail) is not None:
            f.seek(size)
            f.write(b"\n")
        else:
            log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", path, size - start)
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())


class TrajectoryStore:
    """An append-only JSONL file of finished trajectories, safe against a crash at any moment."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._repaired = False

    def __repr__(self) -> str:
        return f"TrajectoryStore({str(self.path)!r})"

    def load(self) -> dict[tuple[str, int], Trajectory]:
        return load(self.path)

    def append(self, trajectory: Trajectory) -> None:
        """Write one line in one call and fsync it; returns once it is on disk."""
        data = dumps(trajectory)
        with self._lock:
            if not self._repaired:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                repair_tail(self.path)
                self._repaired = True
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, data)
                while written < len(data):  # a short write (disk full, signal): finish the line
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # make the new directory entry durable too
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)

    async def aappend(self, trajectory: Trajectory) -> None:
        """`append` on a worker thread, so fsync never stalls the event loop."""
        await asyncio.to_thread(self.append, trajectory)
