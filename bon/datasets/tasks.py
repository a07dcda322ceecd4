"""`dataset=tasks`: your own tasks as JSONL lines of {task_id, question, answer?, files?}.

A task without an answer is generated and judged but not scored (left out of accuracy, and the
run says how many); an answer must be a scalar (string or number), since it is compared as text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bon import jsonl
from bon.errors import BonError
from bon.types import Task


def load(path: str | None) -> list[Task]:
    """Tasks in file order; errors name the file and line."""
    if not path or path == "???":
        raise BonError("dataset=tasks needs dataset.path=<file.jsonl> with one {task_id, question, answer?} per line")
    file = Path(path).expanduser().resolve()
    if file.is_dir():
        raise BonError(f"dataset.path {file} is a directory; point it at a JSONL file of tasks")
    if not file.is_file():
        raise BonError(f"dataset.path: no such file {file}")
    return _read(file)


def _read(file: Path) -> list[Task]:
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for lineno, r in jsonl.read(file):
        where = f"{file}:{lineno}"
        task_id, question = r.get("task_id"), r.get("question")
        if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or not isinstance(question, str):
            raise BonError(f"{where}: needs a string or integer task_id and a string question")
        if str(task_id) in seen:
            raise BonError(f"{where}: duplicate task_id {task_id!r} (first on line {seen[str(task_id)]})")
        seen[str(task_id)] = lineno
        files = r.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise BonError(f"{where}: files must be a list of paths")
        tasks.append(Task(str(task_id), question, _answer(r.get("answer"), where), tuple(files),
                          {k: v for k, v in r.items() if k not in ("task_id", "question", "answer", "files")}))
    if not tasks:
        raise BonError(f"{file} holds no tasks")
    return tasks


def _answer(value: Any, where: str) -> str | None:
    """The reference answer as text; None (no answer: the task is not scored) stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):  # booleans too: compared as their text
        return str(value)
    kind = "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__
    raise BonError(f"{where}: answer must be a string or a number, got {kind} ({value!r}); "
                   f"give the reference answer itself, e.g. \"answer\": \"5\"")
