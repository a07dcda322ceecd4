"""`dataset=gaia`: a local copy of GAIA (the dataset is gated, so nothing is downloaded).

`dataset.path` may be the repository root as users get it (a `git clone` of the Hugging Face
repository or a `huggingface_hub` snapshot, with `2023/validation/` and `2023/test/` below it) or
one split directory. A split directory holds metadata.jsonl or metadata.parquet (the format since
October 2025) with task_id, Question, Level, "Final answer" and file_name, and the attached
files beside it. The test split's answers are withheld ("?"): its tasks get no reference
answer, and a run writes a submission instead.

A clone made without Git LFS holds small pointer files instead of the parquet and the attachments;
those are refused by name (never parsed, and never shown to the agent as if they were the file).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from bon import jsonl
from bon.errors import BonError
from bon.types import Task

WHERE_TO_GET = ("GAIA is gated: accept its terms at https://huggingface.co/datasets/gaia-benchmark/GAIA, download it "
                "(git clone with Git LFS, or huggingface_hub's snapshot_download), and set dataset.path to the "
                "download's root or to its 2023/validation directory")
HIDDEN = {"", "?"}
SPLITS = ("validation", "test")
METADATA = ("metadata.jsonl", "metadata.parquet")
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def is_lfs_pointer(path: Path) -> bool:
    """True for a Git LFS pointer file (what a clone without LFS holds instead of the real file)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False


def _lfs_error(path: Path, root: Path, more: int = 0) -> BonError:
    others = f" (and {more} more file(s) like it)" if more else ""
    return BonError(f"{path} is a Git LFS pointer, not the file itself{others}: the copy was cloned without Git LFS. "
                    f"Run `git lfs install && git lfs pull` in {root} (or download with huggingface_hub's "
                    f"snapshot_download), then run again")


def _has_metadata(directory: Path) -> bool:
    return any((directory / name).is_file() for name in METADATA)


def split_dir(path: str | None, split: str | None = None) -> Path:
    """The split directory a `dataset.path` (root, snapshot root or split directory) and `dataset.split` name."""
    if not path or path == "???":
        raise BonError(f"dataset=gaia needs dataset.path. {WHERE_TO_GET}")
    if split is not None and split not in SPLITS:
        raise BonError(f"dataset.split must be one of {', '.join(SPLITS)} or null, got {split!r}")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise BonError(f"dataset.path={root} is not a directory. {WHERE_TO_GET}")
    if _has_metadata(root):
        if split is not None and root.name in SPLITS and root.name != split:
            raise BonError(f"dataset.path={root} is the {root.name} split but dataset.split={split}: point "
                           f"dataset.path at the GAIA root (or at its {split} directory)")
        return root
    wanted = split or "validation"
    for candidate in (root / "2023" / wanted, root / wanted):
        if candidate.is_dir():
            if not _has_metadata(candidate):
                raise BonError(f"{candidate} has no metadata.jsonl or metadata.parquet. {WHERE_TO_GET}")
            return candidate
    raise BonError(f"dataset.path={root} holds no GAIA split: expected metadata.jsonl or metadata.parquet there, "
                   f"or a 2023/{wanted}/ directory below it. {WHERE_TO_GET}")


def _repo_root(directory: Path) -> Path:
    """Where `git lfs pull` should run: the clone's root if there is one, else the split directory."""
    for parent in (directory, *directory.parents):
        if (parent / ".git").exists():
            return parent
    return directory


def _rows(directory: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    jsonl_path, parquet_path = (directory / name for name in METADATA)
    path = jsonl_path if jsonl_path.is_file() else parquet_path
    if is_lfs_pointer(path):
        raise _lfs_error(path, _repo_root(directory))
    if path is jsonl_path:
        for lineno, record in jsonl.read(path):
            yield f"{path}:{lineno}", record
        return
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a damaged file
        raise BonError(f"{path} could not be read as parquet ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); download it again") from None
    for i, record in enumerate(frame.iter_rows(named=True), 1):
        yield f"{path} row {i}", record


def load(path: str | None, level: int | str | None = None, split: str | None = None) -> list[Task]:
    """GAIA tasks of one split, optionally of one level (1, 2 or 3)."""
    directory = split_dir(path, split)
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
        files: tuple[str, ...] = ()
        if r.get("file_name"):
            attached = directory / str(r["file_name"])
            if not attached.is_file():
                raise BonError(f"{where}: attached file {attached} is missing")
            files = (str(attached),)
        tasks.append(Task(str(r["task_id"]), str(r["Question"]), answer, files, {"level": int(r["Level"])}))
    if not tasks:
        raise BonError(f"no GAIA tasks in {directory}" + (f" at level {level}" if level is not None else ""))
    pointers = [Path(f) for t in tasks for f in t.files if is_lfs_pointer(Path(f))]
    if pointers:
        raise _lfs_error(pointers[0], _repo_root(directory), len(pointers) - 1)
    return tasks

