"""Core plain-data types shared by every stage: tasks, trajectories and judgements.

They are frozen so a stage can never quietly edit what an earlier stage produced.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Label = Literal[-1, 0, 1]
VALID_LABELS: frozenset[int] = frozenset({-1, 0, 1})


@dataclass(frozen=True)
class Task:
    """One problem to solve; `answer` is the reference answer when one is known."""

    id: str
    question: str = ""
    answer: str | None = None
    files: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trajectory:
    """One sampled attempt at a task, as OpenAI chat messages.

    A step is an assistant message, addressed by its absolute index in `messages`
    (the AgentProcessBench convention), so labels survive any re-rendering.
    """

    task_id: str
    sample: int
    messages: tuple[Mapping[str, Any], ...] = ()
    answer: str | None = None
    success: bool | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def step_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m.get("role") == "assistant"]


@dataclass(frozen=True)
class Judgement:
    """What one judge said about one trajectory.

    `step_labels` maps absolute message index -> label; a step the judge did not
    label is simply absent (or None). A failed judgement keeps status "failed" and
    its reason; it is never converted into labels.
    """

    judge: str
    step_labels: Mapping[int, int | None] = field(default_factory=dict)
    final_label: int | None = None
    status: Literal["ok", "failed"] = "ok"
    reason: str = ""
    raw: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"
