"""The comparing stage of `selector=listwise` / `selector=pairwise`: one verdict per task, as a column.

After the step judge has labelled every trajectory, a comparing judge (bon.judges.listwise) sees each
task's candidates side by side and picks one. The pick becomes the candidate column `listwise_pick`
(1 picked, 0 not, null where the task's verdict failed or no call was possible); the selector keeps
the picked candidate and otherwise falls back to its `fallback` selector, so a failed verdict never
becomes a pick: it is counted, and the fallback decides that task.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from bon.config import LLMJudge
from bon.console import say
from bon.judges.listwise import DEFAULT_MAX_CHARS, ListwiseJudge, ListwiseVerdict, PairwiseJudge
from bon.selectors import Selector
from bon.types import Trajectory

COLUMN = "listwise_pick"
JUDGES: dict[str, type[ListwiseJudge] | type[PairwiseJudge]] = {"listwise": ListwiseJudge,
                                                                "pairwise": PairwiseJudge}


def comparing_judge(selector: Selector, options: LLMJudge, client: Any) -> ListwiseJudge | PairwiseJudge:
    """The comparing judge a selector asks for, on the run's judge model (`judge.permutations` orders,
    each candidate shortened to `judge.max_chars`)."""
    kind = JUDGES[str(selector.verdicts)]
    return kind(client, str(options.name or options.model), permutations=options.permutations,
                max_chars=options.max_chars or DEFAULT_MAX_CHARS, temperature=options.temperature)


def question_of(trajectory: Trajectory) -> str:
    """The task as the agent saw it: its first user message (so replayed trajectories need no task file)."""
    for m in trajectory.messages:
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return ""


def groups(trajectories: Sequence[Trajectory]) -> list[tuple[str, list[Trajectory]]]:
    """Each task's candidates that have a step (a generation that failed before any step is not shown)."""
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        if t.step_indices:
            by_task.setdefault(t.task_id, []).append(t)
    return [(question_of(ts[0]), ts) for ts in by_task.values()]


async def decide(judge: ListwiseJudge | PairwiseJudge, trajectories: Sequence[Trajectory],
                 out_dir: Path) -> tuple[list[ListwiseVerdict], dict[str, Any]]:
    """A verdict per task (the response cache makes a rerun free), written to verdicts.jsonl, and its tally."""
    todo = groups(trajectories)
    verdicts = await judge.pick_all(todo, progress=True)
    with (out_dir / "verdicts.jsonl").open("w", encoding="utf-8") as out:
        for verdict in verdicts:
            out.write(json.dumps({**asdict(verdict), "kind": judge.kind}, ensure_ascii=False) + "\n")
    failed, without = sum(v.failed for v in verdicts), len({t.task_id for t in trajectories}) - len(verdicts)
    tally = {"kind": judge.kind, "permutations": judge.permutations, "tasks": len(verdicts), "failed": failed,
             "ties": sum(v.tie for v in verdicts), "without_candidates": without,
             "fell_back": failed + without}  # tasks the selector's fallback decides
    say(f"{judge.kind} {judge.name}: {tally['tasks']} tasks, {tally['failed']} verdicts failed, {tally['ties']} ties")
    return verdicts, tally


def with_picks(table: pl.DataFrame, verdicts: Sequence[ListwiseVerdict]) -> pl.DataFrame:
    """The candidate table with `listwise_pick`: 1 for the picked sample, 0 for the others of a task
    with a verdict, null for every candidate of a task whose verdict failed or was not made."""
    picked = {v.task_id: v.pick for v in verdicts if not v.failed}
    values = [None if task not in picked else int(picked[task] == sample)
              for task, sample in table.select("task_id", "sample").iter_rows()]
    return table.with_columns(pl.Series(COLUMN, values, dtype=pl.Int8))
