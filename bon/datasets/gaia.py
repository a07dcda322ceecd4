"""`dataset=gaia`: a local GAIA split directory (the dataset is gated, so nothing is downloaded).

The directory holds metadata.jsonl (or metadata.parquet) with task_id, Question, Level,
"Final answer" and file_name, and the attached files beside it. The test split's answers are
withheld ("?"): its tasks get no reference answer, and a run writes a submission file instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from bon import jsonl
from bon.errors import BonError
from bon.types import Task

WHERE_TO_GET = ("GAIA is gated: accept its terms at https://huggingface.co/datasets/gaia-benchmark/GAIA, "
                "download it, and set dataset.path=/path/to/GAIA/2023/validation")
HIDDEN = {"", "?"}


def _rows(directory: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    if (directory / "metadata.jsonl").is_file():
        path = directory / "metadata.jsonl"
        for lineno, record in jsonl.read(path):
            yield f"{path}:{lineno}", record
    elif (directory / "metadata.parquet").is_file():
        import polars as pl

        path = directory / "metadata.parquet"
        for i, record in enumerate(pl.read_parquet(path).iter_rows(named=True), 1):
            yield f"{path} row {i}", record
    else:
        raise BonError(f"{directory} has no metadata.jsonl or metadata.parquet. {WHERE_TO_GET}")


def load(path: str | None, level: int | str | None = None) -> list[Task]:
    """GAIA tasks, optionally of one level (1, 2 or 3)."""
    if not path or path == "???":
        raise BonError(f"dataset=gaia needs dataset.path. {WHERE_TO_GET}")
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise BonError(f"dataset.path={directory} is not a directory. {WHERE_TO_GET}")
    if level not in (None, 1, 2, 3, "1", "2", "3"):
        raise BonError(f"dataset.level must be 1, 2, 3 or null, got {level!r}")
    tasks = []
    for where, r in _rows(directory):
        missing = [k for k in ("task_id", "Question", "Level") if r.get(k) in (None, "")]
        if missing:
            raise BonError(f"{where}: missing field(s) {missing}")
        if level is not None and str(r["Level"]) != str(level):
            continue
        answer = r.get("Final answer")
        answer = None if answer is None or str(answer).strip() in HIDDEN else str(answer)
        files = ()
        if r.get("file_name"):
            attached = directory / str(r["file_name"])
            if not attached.is_file():
                raise BonError(f"{where}: attached file {attached} is missing")
            files = (str(attached),)
        tasks.append(Task(str(r["task_id"]), str(r["Question"]), answer, files, {"level": int(r["Level"])}))
    if not tasks:
        raise BonError(f"no GAIA tasks in {directory}" + (f" at level {level}" if level is not None else ""))
    return tasks
