"""A dataset of tasks for an agent (dataset=builtin, tasks, gaia): its tasks and how it scores an answer.

Scoring belongs to the dataset, not to the agent: the generator is handed `TaskSet.score` to mark each
trajectory it writes, and the pipeline scores replayed trajectories again with it, so a trajectory's
`success` always follows the dataset's rules and references. Every dataset here scores by GAIA's
answer rules (bon.scoring.gaia); a dataset with other rules passes its own `scorer`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from bon import config
from bon.config import BuiltinDataset, GaiaDataset, TasksDataset
from bon.scoring.gaia import question_scorer
from bon.shard import empty as shard_empty
from bon.shard import in_shard
from bon.shard import of as shard_of
from bon.types import Task, Trajectory

Scorer = Callable[[str | None, str], bool]  # (answer or None, reference) -> correct


@dataclass(frozen=True)
class TaskSet:
    """The tasks of one run and the rule that scores an answer against a task's reference."""

    name: str
    tasks: tuple[Task, ...]
    scorer: Scorer = question_scorer
    shard: tuple[int, int] = (0, 1)  # (dataset.shard, dataset.num_shards): `tasks` holds this shard's only

    def keeps(self, task_id: str) -> bool:
        """Whether a task belongs to this run's shard (e.g. a replayed trajectory's; bon.shard)."""
        return in_shard(task_id, *self.shard)

    def score(self, task: Task, answer: str | None) -> bool | None:
        """Whether `answer` is correct for `task`; None when the task has no reference (not scored)."""
        return None if task.answer is None else self.scorer(answer, task.answer)

    def scored(self, trajectories: Iterable[Trajectory]) -> list[Trajectory]:
        """The trajectories with `success` set from this dataset's references (those of tasks it does not
        have keep their own). A replayed trajectory's recorded `success` is not trusted over the dataset."""
        by_id = {t.id: t for t in self.tasks}
        return [t if t.task_id not in by_id else dataclasses.replace(t, success=self.score(by_id[t.task_id], t.answer))
                for t in trajectories]

    @property
    def unanswered(self) -> bool:
        """Tasks but no reference answers (GAIA's test split): nothing to score, a submission to write."""
        return bool(self.tasks) and all(t.answer is None for t in self.tasks)


def _builtin(dataset: Any) -> list[Task]:
    from bon.datasets import builtin

    return builtin.load(dataset.n_tasks, dataset.task_ids)


def _gaia(dataset: Any) -> list[Task]:
    from bon.datasets import gaia

    return gaia.load(dataset.path, dataset.level, dataset.split)


def _task_file(dataset: Any) -> list[Task]:
    from bon.datasets import tasks

    return tasks.load(dataset.path)


TaskDataset = Union[BuiltinDataset, GaiaDataset, TasksDataset]
LOADERS: dict[str, Callable[[Any], list[Task]]] = {"builtin": _builtin, "gaia": _gaia, "tasks": _task_file}
SCHEMAS: dict[str, type] = {"builtin": BuiltinDataset, "gaia": GaiaDataset, "tasks": TasksDataset}


def load(dataset: TaskDataset | Mapping[str, Any], replaying: bool = False) -> TaskSet:
    """The configured dataset's tasks. Replaying dataset=tasks without a file gives no tasks: the
    trajectories' own `success` is then all there is."""
    if isinstance(dataset, Mapping):
        dataset = config.typed(SCHEMAS[str(dataset.get("name"))], dataset, "dataset.")
    part = shard_of(dataset)
    if isinstance(dataset, TasksDataset) and replaying and dataset.path in (None, "???"):
        return TaskSet(dataset.name, (), shard=part)
    tasks = LOADERS[dataset.name](dataset)
    kept = tuple(t for t in tasks if in_shard(t.id, *part))
    if tasks and not kept:
        raise shard_empty(dataset, len(tasks))
    return TaskSet(dataset.name, kept, shard=part)
