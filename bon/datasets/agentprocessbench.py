"""AgentProcessBench replay: human labels, hotpotqa trajectories and recorded judge outputs.

Reads the upstream repository layout as released:
    data/AnswerOnly/<subset>_final.jsonl           human step and final labels (all subsets)
    data/AgentProcessBench/hotpotqa.jsonl          full trajectories (hotpotqa only)
    eval/results/<judge dir>/<subset>__*.jsonl     one recorded LLM judge per directory
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bon import jsonl
from bon.datasets import apb_cache
from bon.datasets.apb_cache import LabelColumns
from bon.errors import BonError, unknown_choice
from bon.types import VALID_LABELS, Judgement, Trajectory

SUBSETS = ("hotpotqa", "gaia_dev", "bfcl", "tau2")
FAILED_PREFIX = "llm_annotate_failed:"
HUMAN = "human"


@dataclass(frozen=True)
class Record:
    """One of the 1,000 trajectories: where it sits, its steps, and its human labels."""

    subset: str
    task_id: str
    sample: int
    record_id: str
    steps: tuple[int, ...]
    human: Judgement
    answer: str | None

    @property
    def success(self) -> bool:
        return self.human.final_label == 1


def subsets(choice: str) -> tuple[str, ...]:
    """Expand `dataset.subset` (one subset or 'all')."""
    if choice == "all":
        return SUBSETS
    if choice not in SUBSETS:
        raise unknown_choice("subset", choice, (*SUBSETS, "all"))
    return (choice,)


def slug(name: str) -> str:
    """'GPT-5.2-Thinking (medium) ' -> 'gpt-5.2-thinking-medium'."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def judge_dirs(root: Path) -> dict[str, Path]:
    """Recorded judges by their stripped directory name."""
    base = root / "eval" / "results"
    if not base.is_dir():
        raise BonError(f"no recorded judges: {base} is not a directory")
    dirs: dict[str, Path] = {}
    with os.scandir(base) as entries:  # scandir: no stat per entry (prm_eval lists the judges once per file)
        names = sorted(e.name for e in entries if e.is_dir())
    for name in names:
        if name.strip() in dirs:
            raise BonError(f"judge directories {dirs[name.strip()].name!r} and {name!r} in {base} "
                           f"differ only in surrounding spaces; keep one")
        dirs[name.strip()] = base / name
    return dirs


def resolve_judges(root: Path, name: str) -> list[str]:
    """Canonical judge names for `judge.name`: a stripped directory name, its slug, or 'all'."""
    dirs = judge_dirs(root)
    if name == "all":
        return list(dirs)
    wanted = name.strip()
    if wanted in dirs:
        return [wanted]
    matches = [canonical for canonical in dirs if slug(wanted) == slug(canonical)]
    if len(matches) > 1:
        raise BonError(f"judge {name!r} matches several recorded judges ({', '.join(matches)}); use the exact name")
    if matches:
        return matches
    raise unknown_choice("judge", name, [*dirs, "all"])


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) per non-blank line, parsed by orjson (3-4x faster than json on the 20 MB of judges).

    Any line orjson refuses (bad JSON or UTF-8, NaN, a lone surrogate) or that is not an object sends
    the whole file through bon.jsonl.read, which accepts what json accepts and names the bad line.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return list(jsonl.read(path))  # reports the file it cannot read
    out = []
    try:
        for lineno, raw in enumerate(data.splitlines(), 1):  # \n, \r\n and a lone \r end a line, as in jsonl.read
            if raw.strip():
                record = orjson.loads(raw)
                if type(record) is not dict:
                    return list(jsonl.read(path))
                out.append((lineno, record))
    except orjson.JSONDecodeError:
        return list(jsonl.read(path))
    return out


_LABEL_VALUES = frozenset({-1, 0, 1, None})


def _labels(raw: object, where: str, allow_null: bool) -> dict[int, int | None]:
    if not isinstance(raw, dict):
        raise BonError(f"{where}: step_labels must be an object of message index -> label, got {raw!r}")
    labels: dict[int, int | None] = {}
    for key, value in raw.items():
        if not (str(key).isascii() and str(key).isdigit()):
            raise BonError(f"{where}: step label key {key!r} is not a message index")
        if value is None and allow_null:
            labels[int(key)] = None
        elif not isinstance(value, int) or isinstance(value, bool) or value not in VALID_LABELS:
            raise BonError(f"{where}: step {key} has label {value!r}; labels must be -1, 0 or 1")
        else:
            labels[int(key)] = int(value)
    return labels


_FINALS = (-1, 0, 1)  # final_label values; 0 (or null) means none given


def _final(raw: object, where: str) -> int | None:
    if raw is None or raw == 0:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw not in (-1, 1):
        raise BonError(f"{where}: final_label {raw!r}; must be -1, 0 or 1")
    return int(raw)


def _index(r: dict[str, Any], key: str, where: str) -> int:
    """A non-negative integer index field (query_index, sample_index); digit strings are accepted."""
    value = r.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BonError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    return value


def _check_unique(seen: dict, key: object, what: str, path: Path, lineno: int) -> None:
    """Refuse a second record for the same key, naming both lines."""
    if key in seen:
        raise BonError(f"{path}:{lineno}: duplicate {what}, already on line {seen[key]} ({path}:{seen[key]})")
    seen[key] = lineno


@functools.cache
def load_records(root: Path, subset: str) -> tuple[Record, ...]:
    """The human-labelled trajectories of one subset, with answers where trajectories exist."""
    path = root / "data" / "AnswerOnly" / f"{subset}_final.jsonl"
    answers = _answers(root) if subset == "hotpotqa" else {}
    records = []
    seen: dict[object, int] = {}
    for lineno, r in _read(path):
        where = f"{path}:{lineno} (record {r.get('record_id')!r})"
        missing = [k for k in ("record_id", "query_index", "sample_index", "step_labels", "final_label") if k not in r]
        if missing:
            raise BonError(f"{where}: missing field(s) {missing}")
        query, sample = _index(r, "query_index", where), _index(r, "sample_index", where)
        _check_unique(seen, (query, sample), f"(query_index, sample_index) = ({query}, {sample})", path, lineno)
        _check_unique(seen, r["record_id"], f"record_id {r['record_id']!r}", path, lineno)
        labels = _labels(r["step_labels"], where, allow_null=False)
        human = Judgement(HUMAN, labels, _final(r["final_label"], where))
        records.append(Record(subset, f"{subset}:{query}", sample, r["record_id"],
                              tuple(sorted(labels)), human, answers.get(r["record_id"])))
    if not records:
        raise BonError(f"{path} holds no records")
    return tuple(records)


def _answers(root: Path) -> dict[str, str | None]:
    """Final answers of the hotpotqa trajectories, keyed like the label files."""
    return {record_id: t.answer for record_id, t in trajectories(root).items()}


@functools.cache
def trajectories(root: Path) -> dict[str, Trajectory]:
    """The released full trajectories (hotpotqa only), by record_id; {} when the file is absent.

    The label files' record_id is `<data_source>:<query_index>:<sample_index>`, so all three are needed.
    """
    path = root / "data" / "AgentProcessBench" / "hotpotqa.jsonl"
    if not path.exists():
        return {}
    out = {}
    seen: dict[object, int] = {}
    for lineno, r in _read(path):
        where = f"{path}:{lineno}"
        missing = [k for k in ("data_source", "query_index", "sample_index", "messages") if k not in r]
        if missing:
            raise BonError(f"{where}: missing field(s) {missing}; data_source, query_index and sample_index "
                           f"form the record_id that matches data/AnswerOnly/hotpotqa_final.jsonl")
        if not isinstance(r["data_source"], str) or not r["data_source"]:
            raise BonError(f"{where}: data_source must be a non-empty string, got {r['data_source']!r}")
        if not isinstance(r["messages"], list):
            raise BonError(f"{where}: `messages` must be a list of chat messages")
        query, sample = _index(r, "query_index", where), _index(r, "sample_index", where)
        _check_unique(seen, (query, sample), f"(query_index, sample_index) = ({query}, {sample})", path, lineno)
        out[f"{r['data_source']}:{query}:{sample}"] = Trajectory(
            task_id=f"hotpotqa:{query}", sample=sample, messages=tuple(r["messages"]),
            answer=r.get("answer_text"), success=r.get("final_label") == 1,
            metadata={"question": r.get("question"), "ground_truth": r.get("ground_truth"), "tools": r.get("tools")})
    return out


@functools.cache
def load_judge(root: Path, judge: str, subset: str) -> dict[str, Judgement]:
    """A recorded judge's judgements for one subset, by record_id; failures stay failures.

    A file with no judgement of this subset's trajectories (empty, or of another subset) is an
    error: reading it as 250 failed calls would print an accuracy for a judge that never ran.
    """
    path = _judge_file(root, judge, subset)
    out = _judgements(judge, path)
    _check_judges_subset(out, path, subset, {r.record_id for r in load_records(root, subset)})
    return out


def _judge_file(root: Path, judge: str, subset: str, directory: Path | None = None) -> Path:
    directory = directory or judge_dirs(root)[judge]
    files = sorted(directory.glob(f"{subset}__*.jsonl"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise BonError(f"expected one {subset}__*.jsonl in {directory}, found {found}")
    return files[0]


def _judgements(judge: str, path: Path) -> dict[str, Judgement]:
    """A judge file's judgements by record_id, every record checked; bad input names its line."""
    rows = _read(path)
    out = _judgements_checked_at_once(judge, rows)
    if out is None:  # something is wrong: the record-by-record reading names the line and raises
        out = _judgements_one_by_one(judge, rows, path)
    return out


def _check_judges_subset(record_ids: Collection[str], path: Path, subset: str, human: Collection[str]) -> None:
    """Refuse an empty judge file, or one of no trajectory of this subset."""
    if not record_ids:
        raise BonError(f"{path} holds no judgements (empty file): re-download it or remove the judge directory")
    if not any(r in human for r in record_ids):
        raise BonError(f"{path}: none of its {len(record_ids)} judgements is of a {subset} trajectory in "
                       f"data/AnswerOnly/{subset}_final.jsonl (record_id such as {next(iter(record_ids))!r})")


@functools.cache
def human_columns(root: Path, subset: str) -> LabelColumns:
    """The human labels of one subset as flat arrays, from the label cache when the files are unchanged.

    For hotpotqa the released trajectories are part of the entry's sources: `load_records` checks them.
    """
    sources = [root / "data" / "AnswerOnly" / f"{subset}_final.jsonl"]
    if subset == "hotpotqa":
        sources.append(root / "data" / "AgentProcessBench" / "hotpotqa.jsonl")
    return apb_cache.cached(sources, lambda: LabelColumns.from_judgements(
        (r.record_id, r.human) for r in load_records(root, subset)))


def judge_columns(root: Path, judge: str, subset: str, directory: Path | None = None) -> LabelColumns:
    """`load_judge` as flat arrays (the human labels for judge 'human'), from the label cache when unchanged.

    `directory`: the judge's, if the caller has listed them already (judge_dirs).
    """
    if judge == HUMAN:
        return human_columns(root, subset)
    path = _judge_file(root, judge, subset, directory)
    columns = apb_cache.cached([path], lambda: _judge_file_columns(judge, path))
    human = human_columns(root, subset).record_ids
    _check_judges_subset(columns.record_ids, path, subset, set(human))
    return columns


def _judgement(judge: str, labels: dict[int, int | None], final: int | None, comment: object) -> Judgement:
    reason = _failure(comment)
    return Judgement(judge, labels, final or None, status="ok" if reason is None else "failed", reason=reason or "")


def _failure(comment: object) -> str | None:
    """Why the recorded call failed (its comment says llm_annotate_failed: ...); None when it did not."""
    text = str(comment or "")
    return text[len(FAILED_PREFIX):].strip() if text.startswith(FAILED_PREFIX) else None


def _checked_at_once(rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[str], list[dict], list[int | None]] | None:
    """(record_ids, step_labels, final_labels) when the whole file is valid, each check run once over all its
    records; else None.

    Valid: string record_ids without repeats, step_labels objects of ASCII message index -> -1/0/1/null,
    final_label -1/0/1/null (as `_judgements_one_by_one` checks them one record at a time).
    """
    ids: list[Any] = [r.get("record_id") for _, r in rows]
    raws = [r.get("step_labels") or {} for _, r in rows]
    finals = [r.get("final_label") for _, r in rows]
    keys = [k for raw in raws if type(raw) is dict for k in raw]
    values = [v for raw in raws if type(raw) is dict for v in raw.values()]
    text = "".join(keys)
    valid = (set(map(type, ids)) <= {str} and len(set(ids)) == len(ids) and set(map(type, raws)) <= {dict}
             and "" not in keys and (not text or (text.isascii() and text.isdigit()))
             and set(map(type, values)) <= {int, type(None)} and set(values) <= _LABEL_VALUES
             and set(map(type, finals)) <= {int, type(None)} and set(finals) <= {*_FINALS, None})
    return (ids, raws, finals) if valid else None


def _judgements_checked_at_once(judge: str, rows: list[tuple[int, dict[str, Any]]]) -> dict[str, Judgement] | None:
    """The judgements when the whole file is valid (`_checked_at_once`); else None."""
    checked = _checked_at_once(rows)
    if checked is None:
        return None
    out = {}
    for rid, raw, final, (_, r) in zip(*checked, rows):
        labels = dict(zip(map(int, raw), raw.values()))
        comment = r.get("comment")
        plain = not (comment and str(comment).startswith(FAILED_PREFIX))  # most records: no _judgement call
        out[rid] = Judgement(judge, labels, final or None) if plain else _judgement(judge, labels, final, comment)
    return out


def _judge_file_columns(judge: str, path: Path) -> LabelColumns:
    """`_judgements` of a judge file as flat arrays, without a Judgement per record when the file is valid."""
    rows = _read(path)
    checked = _checked_at_once(rows)
    if checked is None:  # the record-by-record reading names the bad line and raises
        return LabelColumns.from_judgements(_judgements_one_by_one(judge, rows, path).items())
    ids, raws, finals = checked
    return LabelColumns.from_labels(ids, [dict(zip(map(int, raw), raw.values())) for raw in raws], finals,
                                    [_failure(r.get("comment")) for _, r in rows])


def _judgements_one_by_one(judge: str, rows: list[tuple[int, dict[str, Any]]], path: Path) -> dict[str, Judgement]:
    """Check each record in turn and raise a BonError naming the first bad line."""
    out: dict[str, Judgement] = {}
    seen: dict[object, int] = {}
    for lineno, r in rows:
        where = f"{path}:{lineno} (record {r.get('record_id')!r})"
        if not isinstance(r.get("record_id"), str):
            raise BonError(f"{where}: missing or non-string record_id")
        _check_unique(seen, r["record_id"], f"record_id {r['record_id']!r}", path, lineno)
        labels = _labels(r.get("step_labels") or {}, where, allow_null=True)
        out[r["record_id"]] = _judgement(judge, labels, _final(r.get("final_label"), where), r.get("comment"))
    return out


def judgements_for(root: Path, judge: str, records: Iterable[Record]) -> list[Judgement]:
    """`judgement_for` of each record, looking each subset's file up once."""
    if judge == HUMAN:
        return [record.human for record in records]
    files: dict[str, dict[str, Judgement]] = {}
    out = []
    for record in records:
        found = files.get(record.subset)
        if found is None:
            found = files[record.subset] = load_judge(root, judge, record.subset)
        out.append(found.get(record.record_id))
    return [j or _never_judged(judge) for j in out]


def _never_judged(judge: str) -> Judgement:
    return Judgement(judge, status="failed", reason="no recorded judgement for this trajectory")


def judgement_for(root: Path, judge: str, record: Record) -> Judgement:
    """The judge's judgement of one record; a record the judge never produced is a failed judgement."""
    if judge == HUMAN:
        return record.human
    return load_judge(root, judge, record.subset).get(record.record_id) or _never_judged(judge)
