"""`dataset=tasks`: your own tasks as JSONL lines of {task_id, question, answer?, files?}."""
from __future__ import annotations

from pathlib import Path

from bon import jsonl
from bon.errors import BonError
from bon.types import Task


def load(path: str | None) -> list[Task]:
    """Tasks in file order; errors name the file and line."""
    if not path or path == "???":
        raise BonError("dataset=tasks needs dataset.path=<file.jsonl> with one {task_id, question, answer?} per line")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise BonError(f"dataset.path: no such file {file}")
    tasks, seen = [], {}
    for lineno, r in jsonl.read(file):
        where = f"{file}:{lineno}"
        task_id, question = r.get("task_id"), r.get("question")
        if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or not isinstance(question, str):
            raise BonError(f"{where}: needs a string or integer task_id and a string question")
        if str(task_id) in seen:
            raise BonError(f"{where}: duplicate task_id {task_id!r} (first on line {seen[str(task_id)]})")
        seen[str(task_id)] = lineno
        answer = r.get("answer")
        files = r.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise BonError(f"{where}: files must be a list of paths")
        tasks.append(Task(str(task_id), question, None if answer is None else str(answer), tuple(files),
                          {k: v for k, v in r.items() if k not in ("task_id", "question", "answer", "files")}))
    if not tasks:
        raise BonError(f"{file} holds no tasks")
    return tasks
