"""The advantage table ReHAC learns from: at a state, is handing the next step to the human worth it?

A state is a question plus the (actor, action) of every earlier step. In a deterministic environment the
actions fix the observations; thoughts are left out so sampled data with reworded thoughts still meets at
one state. For each state where both actors took the next step in some logged episode, each actor's
Q is the mean return over the episodes that continue from the state with that actor (uniformly over
logged episodes, as ReHAC's `data_preprocess.py` averages), and the advantage is Q(human) - Q(agent).

Two ways to charge the human cost, both written:
- `advantage`: the whole episode's return, R = T - lambda*C with C every human step of the episode
  (so later human steps count too: ΔT - lambda*ΔC);
- `advantage_cost_so_far`: ReHAC's preprocessing charges only the human steps up to and including the
  decision, which makes the cost difference exactly one step (ΔT - lambda).
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bon.rehac.episodes import AGENT, HUMAN, Episode, Question

State = tuple[str, tuple[tuple[str, str], ...]]  # (question id, ((actor, action), ...) of earlier steps)

CSV_COLUMNS = ("question_id", "step", "prefix_actors", "prefix_actions", "n_agent", "n_human",
               "t_agent", "t_human", "c_agent", "c_human", "q_agent", "q_human", "advantage",
               "advantage_cost_so_far")


@dataclass(frozen=True)
class StateAdvantage:
    """One state seen with both actors next; `step` is the 1-based number of the step being decided."""

    question_id: str
    prefix: tuple[tuple[str, str], ...]
    n_agent: int
    n_human: int
    t_agent: float
    t_human: float
    c_agent: float
    c_human: float

    @property
    def step(self) -> int:
        return len(self.prefix) + 1

    def q(self, actor: str, lam: float) -> float:
        return (self.t_human - lam * self.c_human) if actor == HUMAN else (self.t_agent - lam * self.c_agent)

    def advantage(self, lam: float) -> float:
        """Q(human) - Q(agent) with whole-episode returns."""
        return self.q(HUMAN, lam) - self.q(AGENT, lam)

    def advantage_cost_so_far(self, lam: float) -> float:
        """ReHAC's charging: only the human step being decided differs in cost."""
        return (self.t_human - self.t_agent) - lam


def advantage_table(questions: Sequence[Question], reward: str) -> tuple[list[StateAdvantage], int]:
    """States seen with both actors next (question order, then prefix order), and the number of states seen."""
    rows: list[StateAdvantage] = []
    n_states = 0
    for q in questions:
        nexts: dict[tuple[tuple[str, str], ...], dict[str, list[Episode]]] = {}
        for ep in q.episodes:
            prefix: tuple[tuple[str, str], ...] = ()
            for step in ep.steps:
                nexts.setdefault(prefix, {AGENT: [], HUMAN: []})[step.actor].append(ep)
                prefix = prefix + ((step.actor, step.action),)
        n_states += len(nexts)
        for prefix, by_actor in sorted(nexts.items(), key=lambda item: len(item[0])):
            agent, human = by_actor[AGENT], by_actor[HUMAN]
            if not agent or not human:
                continue
            rows.append(StateAdvantage(
                q.id, prefix, len(agent), len(human),
                float(np.mean([ep.task_reward(reward) for ep in agent])),
                float(np.mean([ep.task_reward(reward) for ep in human])),
                float(np.mean([ep.n_human for ep in agent])), float(np.mean([ep.n_human for ep in human]))))
    return rows, n_states


def _compact(prefix: tuple[tuple[str, str], ...]) -> str:
    return "".join("H" if actor == HUMAN else "A" for actor, _ in prefix)


def write_csv(rows: Sequence[StateAdvantage], lam: float, path: Path) -> Path:
    """One line per state; Q and advantages at `lam` (T and C columns let any other lambda be recomputed)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.question_id, r.step, _compact(r.prefix), " || ".join(a for _, a in r.prefix),
                             r.n_agent, r.n_human, f"{r.t_agent:.6g}", f"{r.t_human:.6g}", f"{r.c_agent:.6g}",
                             f"{r.c_human:.6g}", f"{r.q(AGENT, lam):.6g}", f"{r.q(HUMAN, lam):.6g}",
                             f"{r.advantage(lam):.6g}", f"{r.advantage_cost_so_far(lam):.6g}"])
    return path


def summary_by_step(rows: Sequence[StateAdvantage], lam: float) -> list[dict[str, Any]]:
    """Per decided step: states, mean advantage (both chargings), mean ΔT and ΔC, share where human is better."""
    out = []
    for step in sorted({r.step for r in rows}):
        mine = [r for r in rows if r.step == step]
        adv = np.array([r.advantage(lam) for r in mine])
        out.append({"step": step, "n_states": len(mine), "mean_advantage": float(adv.mean()),
                    "mean_advantage_cost_so_far": float(np.mean([r.advantage_cost_so_far(lam) for r in mine])),
                    "mean_delta_t": float(np.mean([r.t_human - r.t_agent for r in mine])),
                    "mean_delta_c": float(np.mean([r.c_human - r.c_agent for r in mine])),
                    "share_human_better": float(np.mean(adv > 1e-12)),
                    "share_agent_better": float(np.mean(adv < -1e-12))})
    return out
