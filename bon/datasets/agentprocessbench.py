"""AgentProcessBench replay: human labels, hotpotqa trajectories and recorded judge outputs.

Reads the upstream repository layout as released:
    data/AnswerOnly/<subset>_final.jsonl           human step and final labels (all subsets)
    data/AgentProcessBench/hotpotqa.jsonl          full trajectories (hotpotqa only)
    eval/results/<judge dir>/<subset>__*.jsonl     one recorded LLM judge per directory
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from bon import jsonl
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
    return {d.name.strip(): d for d in sorted(base.iterdir()) if d.is_dir()}


def resolve_judges(root: Path, name: str) -> list[str]:
    """Canonical judge names for `judge.name`: a stripped directory name, its slug, or 'all'."""
    dirs = judge_dirs(root)
    if name == "all":
        return list(dirs)
    wanted = name.strip()
    for canonical in dirs:
        if wanted == canonical or slug(wanted) == slug(canonical):
            return [canonical]
    raise unknown_choice("judge", name, [*dirs, "all"])


def _labels(raw: object, where: str, allow_null: bool) -> dict[int, int | None]:
    if not isinstance(raw, dict):
        raise BonError(f"{where}: step_labels must be an object of message index -> label, got {raw!r}")
    labels: dict[int, int | None] = {}
    for key, value in raw.items():
        if not str(key).isdigit():
            raise BonError(f"{where}: step label key {key!r} is not a message index")
        if value is None and allow_null:
            labels[int(key)] = None
        elif not isinstance(value, int) or isinstance(value, bool) or value not in VALID_LABELS:
            raise BonError(f"{where}: step {key} has label {value!r}; labels must be -1, 0 or 1")
        else:
            labels[int(key)] = int(value)
    return labels


def _final(raw: object, where: str) -> int | None:
    if raw is None or raw == 0:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw not in (-1, 1):
        raise BonError(f"{where}: final_label {raw!r}; must be -1, 0 or 1")
    return int(raw)


@functools.lru_cache(maxsize=None)
def load_records(root: Path, subset: str) -> tuple[Record, ...]:
    """The human-labelled trajectories of one subset, with answers where trajectories exist."""
    path = root / "data" / "AnswerOnly" / f"{subset}_final.jsonl"
    answers = _answers(root) if subset == "hotpotqa" else {}
    records = []
    for lineno, r in jsonl.read(path):
        where = f"{path}:{lineno} (record {r.get('record_id')!r})"
        missing = [k for k in ("record_id", "query_index", "sample_index", "step_labels", "final_label") if k not in r]
        if missing:
            raise BonError(f"{where}: missing field(s) {missing}")
        labels = _labels(r["step_labels"], where, allow_null=False)
        human = Judgement(HUMAN, labels, _final(r["final_label"], where))
        records.append(Record(subset, f"{subset}:{r['query_index']}", int(r["sample_index"]), r["record_id"],
                              tuple(sorted(labels)), human, answers.get(r["record_id"])))
    if not records:
        raise BonError(f"{path} holds no records")
    return tuple(records)


def _answers(root: Path) -> dict[str, str | None]:
    """Final answers of the hotpotqa trajectories, keyed like the label files."""
    return {record_id: t.answer for record_id, t in trajectories(root).items()}


@functools.lru_cache(maxsize=None)
def trajectories(root: Path) -> dict[str, Trajectory]:
    """The released full trajectories (hotpotqa only), by record_id; {} when the file is absent."""
    path = root / "data" / "AgentProcessBench" / "hotpotqa.jsonl"
    if not path.exists():
        return {}
    out = {}
    for lineno, r in jsonl.read(path):
        if not isinstance(r.get("messages"), list):
            raise BonError(f"{path}:{lineno}: `messages` must be a list of chat messages")
        out[f"{r['data_source']}:{r['query_index']}:{r['sample_index']}"] = Trajectory(
            task_id=f"hotpotqa:{r['query_index']}", sample=int(r["sample_index"]), messages=tuple(r["messages"]),
            answer=r.get("answer_text"), success=r.get("final_label") == 1,
            metadata={"question": r.get("question"), "ground_truth": r.get("ground_truth"), "tools": r.get("tools")})
    return out


@functools.lru_cache(maxsize=None)
def load_judge(root: Path, judge: str, subset: str) -> dict[str, Judgement]:
    """A recorded judge's judgements for one subset, by record_id; failures stay failures."""
    directory = judge_dirs(root)[judge]
    files = sorted(directory.glob(f"{subset}__*.jsonl"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise BonError(f"expected one {subset}__*.jsonl in {directory}, found {found}")
    out: dict[str, Judgement] = {}
    seen: dict[str, int] = {}
    for lineno, r in jsonl.read(files[0]):
        where = f"{files[0]}:{lineno} (record {r.get('record_id')!r})"
        if not isinstance(r.get("record_id"), str):
            raise BonError(f"{where}: missing or non-string record_id")
        if r["record_id"] in seen:
            raise BonError(f"{where}: duplicate record_id, first seen on line {seen[r['record_id']]}")
        seen[r["record_id"]] = lineno
        labels = _labels(r.get("step_labels") or {}, where, allow_null=True)
        comment = str(r.get("comment") or "")
        failed = comment.startswith(FAILED_PREFIX)
        out[r["record_id"]] = Judgement(
            judge, labels, _final(r.get("final_label"), where),
            status="failed" if failed else "ok", reason=comment[len(FAILED_PREFIX):].strip() if failed else "",
        )
    return out


def judgement_for(root: Path, judge: str, record: Record) -> Judgement:
    """The judge's judgement of one record; a record the judge never produced is a failed judgement."""
    if judge == HUMAN:
        return record.human
    found = load_judge(root, judge, record.subset).get(record.record_id)
    return found or Judgement(judge, status="failed", reason="no recorded judgement for this trajectory")
