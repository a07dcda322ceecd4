"""Trajectories on disk as JSONL: appended as each finishes, loaded to resume, replayed as a generator.

Why this shape: a live run can be killed at any moment and must lose at most the trajectories in
flight. Each trajectory is one line written with a single `write` on an O_APPEND descriptor and
fsync'd before the next, so the file is always a sequence of complete lines, except that a crash
in the middle of a write can leave one torn line at the very end. Readers skip that torn last line
with a warning (its trajectory is simply regenerated on resume); a malformed line anywhere else is
real damage and stops the read with the file and line number. Before its first append, a store
cuts such a torn tail off, so new lines never land behind it. One writing process per file.
Each line is one record of bon.records (schema bon.trajectory/1), the one serializer for trajectories.

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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bon.errors import BonError
from bon.records import dumps as dump_record
from bon.records import trajectory_from_record, trajectory_to_record
from bon.types import Trajectory

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


def dumps(t: Trajectory) -> bytes:
    """One trajectory as one JSONL line (bon.records' serializer)."""
    return dump_record(trajectory_to_record(t))


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError (a write torn inside a character)
        return None
    return value if isinstance(value, dict) else None


def records(path: str | os.PathLike[str], what: str = "trajectory") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a torn last line is skipped with a warning
    (`what` names the kind of record it held)."""
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
        log.warning("%s:%d: ignoring a torn last line (an interrupted write); its %s is missing",
                    file, bad[0], what)


def load(path: str | os.PathLike[str]) -> dict[tuple[str, int], Trajectory]:
    """The finished trajectories in a store, by (task_id, sample); {} when the file does not exist yet.

    A pair written twice (a rerun appending to the same file) keeps the later line."""
    file = Path(path)
    if not file.exists():
        return {}
    out: dict[tuple[str, int], Trajectory] = {}
    for lineno, r in records(file):
        t = trajectory_from_record(r, f"{file}:{lineno}")
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
        t = trajectory_from_record(r, where, sample=next_sample.get(str(task_id), 0))
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


def _fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AppendOnlyFile:
    """An append-only file of JSONL lines, safe against a crash at any moment (see the module's docstring).

    Shared by the trajectory store and the judgement store (bon.judges.store)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._repaired = False

    def append(self, line: bytes) -> None:
        """Write one complete line in one call and fsync it; returns once it is on disk."""
        with self._lock:
            if not self._repaired:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                repair_tail(self.path)
                self._repaired = True
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, line)
                while written < len(line):  # a short write (disk full, signal): finish the line
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path.parent)


def write_atomically(path: str | os.PathLike[str], lines: Iterable[bytes]) -> None:
    """Replace `path` with these lines all at once: a crash leaves the old file or the new one, never a mix."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "wb") as f:
        for line in lines:
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, target)
    _fsync_dir(target.parent)


class TrajectoryStore:
    """An append-only JSONL file of finished trajectories, safe against a crash at any moment."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = AppendOnlyFile(self.path)

    def __repr__(self) -> str:
        return f"TrajectoryStore({str(self.path)!r})"

    def load(self) -> dict[tuple[str, int], Trajectory]:
        return load(self.path)

    def append(self, trajectory: Trajectory) -> None:
        """Write the trajectory's line and fsync it; returns once it is on disk."""
        self._file.append(dumps(trajectory))

    async def aappend(self, trajectory: Trajectory) -> None:
        """`append` on a worker thread, so fsync never stalls the event loop."""
        await asyncio.to_thread(self.append, trajectory)
