"""The per-task directory that file-reading tools are confined to.

Attached files may sit anywhere (a GAIA split keeps every task's files, and its answers, in one
directory), so each task gets a directory of its own holding copies of exactly its attachments
under their base names. Tools see only that directory, and the agent refers to files by name.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from bon.errors import BonError
from bon.types import Task


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "task"


def materialize(task: Task, root: Path) -> Path | None:
    """Copy the task's attached files into a fresh `root/<task id>/`; None when it has none."""
    if not task.files:
        return None
    names = [Path(f).name for f in task.files]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise BonError(f"task {task.id}: two attached files share the name {', '.join(clash)}; "
                       "tools address files by name, so rename one")
    target = root / _safe(task.id)
    suffix = 0
    while target.exists():  # two ids that sanitise alike
        suffix += 1
        target = root / f"{_safe(task.id)}.{suffix}"
    target.mkdir(parents=True)
    for source, name in zip(task.files, names):
        path = Path(source).expanduser()
        if not path.is_file():
            raise BonError(f"task {task.id}: attached file {path} does not exist")
        shutil.copyfile(path, target / name)
    return target
