"""Predictor `judge`: a live LLM judge (the run's `judge` config) predicts T for every logged episode.

Each ReHAC episode is rendered as a chat transcript (system: the task's instructions; user: the question;
one assistant message per step with its Thought and Action; one `tool` message per Observation) and
judged once, through the same client, cache and accounting as the live pipeline. The prediction is 1 when
the judge's FINAL_RESULT is +1 and 0 when it is -1; in `prm` mode the step labels are kept in the record but
only FINAL_RESULT is used.

What the judge must not see: the environment announces the outcome in the observation of the finishing
step ("Episode finished, reward = 1") and InterCode ends with a `reward = x` line. Both are removed, so the
judge predicts the outcome instead of reading it. Who took each step (agent or human) is not shown either.

A judgement that failed (API error after retries, unusable reply) is recorded with its reason and gives no
prediction (None): the episode is not a candidate for the judge selector, and never gets a guessed label.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bon import config
from bon.config import LLMJudge
from bon.errors import BonError
from bon.generators.store import write_atomically
from bon.records import dumps, judgement_to_record
from bon.rehac.episodes import Episode, Question
from bon.types import Judgement, Trajectory

REACT_INSTRUCTIONS = (
    "Answer the question below by alternating Thought, Action and Observation steps. A Thought reasons "
    "about the current situation; an Action is one of Search[entity] (returns the first paragraph of the "
    "entity's Wikipedia page, or similar page titles), Lookup[keyword] (returns the next sentence holding "
    "the keyword on the current page) and Finish[answer] (gives the answer and ends the episode). For a "
    "yes/no question the answer is true or false.")
_OUTCOME = re.compile(r"(?:Episode finished, )?reward = [-+0-9.eE]+\s*$")


def _observation(step_text: str) -> str:
    """The observation without the environment's announcement of the reward."""
    return _OUTCOME.sub("", step_text).rstrip()


def to_trajectory(ep: Episode) -> Trajectory:
    """The episode as OpenAI-format messages (one assistant message per step), with the outcome hidden."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": ep.preamble or REACT_INSTRUCTIONS},
                                      {"role": "user", "content": f"Question: {ep.question}"}]
    for i, step in enumerate(ep.steps, 1):
        text = f"Action {i}: {step.action}"
        if step.thought is not None:
            text = f"Thought {i}: {step.thought}\n{text}"
        messages.append({"role": "assistant", "content": text})
        observation = _observation(step.observation or "")
        if observation:
            messages.append({"role": "tool", "name": "environment", "content": f"Observation {i}: {observation}"})
    return Trajectory(task_id=ep.question_id, sample=0, messages=tuple(messages), answer=ep.answer,
                      metadata={"episode": ep.key})


def check_config(judge_cfg: Mapping[str, Any]) -> None:
    """Fail before any work when the run's judge cannot serve as a predictor."""
    if judge_cfg.get("kind") != "llm":
        raise BonError(f"dataset.predictors lists 'judge', which needs a live LLM judge (e.g. judge=deepseek or "
                       f"judge=local judge.api_base=...); got judge={judge_cfg.get('name')!r} of kind "
                       f"{judge_cfg.get('kind')!r}")
    from bon.build import make_client  # builds no session: checks the key and the client options

    make_client(config.typed(LLMJudge, judge_cfg, "judge."), None, "judge")

def judge_episodes(questions: Sequence[Question], judge_cfg: Mapping[str, Any], cache_cfg: Any,
                   out_path: Path) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Predicted T per episode key (None when its judgement failed) and the judge stage's usage.

    Every judgement is written to `out_path`: one bon.judgement/1 record (bon.records) per episode, with the
    episode's key, its question and predicted_t before the judgement's own fields."""
    from bon import build  # imports litellm only on this path

    check_config(judge_cfg)
    eps = [ep for q in questions for ep in q.episodes]
    judgements, usage = build.judge_trajectories(judge_cfg, cache_cfg, [to_trajectory(ep) for ep in eps])
    predicted = {ep.key: _prediction(j) for ep, j in zip(eps, judgements)}
    write_atomically(out_path, (dumps(judgement_to_record(j, episode=ep.key, question=ep.question_id,
                                                          predicted_t=predicted[ep.key]))
                                for ep, j in zip(eps, judgements)))
    usage["judgements_failed"] = sum(p is None for p in predicted.values())
    return predicted, usage


def _prediction(j: Judgement) -> float | None:
    if j.failed or j.final_label not in (1, -1):
        return None
    return 1.0 if j.final_label == 1 else 0.0
