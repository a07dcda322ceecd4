"""`dataset=builtin`: bon's own GAIA-style tasks, shipped inside the package, for a first live run.

23 questions written for bon (15 with an attached csv, xlsx, json, pdf, docx or txt file) that an
agent solves with inspect_file, python, calculator and final_answer, without the web. Each needs a
few tool steps (read the file, compute, answer), so a trajectory has a process for a judge to grade.
Reference answers use GAIA's format and are scored with its rules (bon.scoring.gaia).
The files are made by experiments/make_builtin_tasks.py; tests/test_builtin.py recomputes every answer.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bon import jsonl
from bon.errors import BonError
from bon.types import Task

DATA_DIR = Path(__file__).resolve().parent / "builtin_tasks"
TASKS_FILE = DATA_DIR / "tasks.jsonl"
FILES_DIR = DATA_DIR / "files"


def all_tasks() -> list[Task]:
    """Every built-in task, in file order, with its attachment as an absolute path."""
    tasks = []
    for lineno, r in jsonl.read(TASKS_FILE):
        files = (str(FILES_DIR / r["file_name"]),) if r.get("file_name") else ()
        if files and not Path(files[0]).is_file():
            raise BonError(f"{TASKS_FILE}:{lineno}: the task's file {files[0]} is missing from this installation "
                           f"of bon; reinstall it")
        tasks.append(Task(str(r["task_id"]), str(r["question"]), str(r["answer"]), files, {"source": "builtin"}))
    return tasks


def load(n_tasks: Any = None, task_ids: Sequence[str] | str | None = None) -> list[Task]:
    """The built-in tasks: all of them, the listed `task_ids`, or the first `n_tasks` of those."""
    tasks = all_tasks()
    if task_ids:
        wanted = [task_ids] if isinstance(task_ids, str) else [str(t) for t in task_ids]
        known = {t.id for t in tasks}
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise BonError(f"dataset.task_ids: unknown built-in task(s) {unknown}; "
                           f"valid: {tasks[0].id} .. {tasks[-1].id}")
        tasks = [t for t in tasks if t.id in set(wanted)]
    if n_tasks is not None:
        if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 1:
            raise BonError(f"dataset.n_tasks must be a positive integer or null (all {len(tasks)}), got {n_tasks!r}")
        tasks = tasks[:n_tasks]
    return tasks
