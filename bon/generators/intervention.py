"""Human-agent collaboration in the agent loop: before each step a policy decides who acts.

The "human" is whatever stands in for one: a person at the terminal, or a stronger model. Every
handover costs one unit (ReHAC's C = number of human steps), so a run reports the task reward T,
the cost C and R = T - lambda * C. The PRM-triggered policy is where process judges pay off: a
step the judge labels -1 is exactly the moment help is worth its price.

Decisions are reproducible: the fixed-rate policy draws from a hash of (seed, task, sample, step),
and the judge's and stand-in model's replies go through the response cache like any other call.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bon import config
from bon.config import Intervention
from bon.errors import BonError
from bon.llm import CallResult, LLMClient
from bon.types import Task, Trajectory

AGENT, HUMAN = "agent", "human"


@dataclass
class StepState:
    """What a policy sees before step `step` (0-based): the conversation so far and who acted."""

    task: Task
    sample: int
    step: int
    messages: Sequence[Mapping[str, Any]]
    actors: list[str] = field(default_factory=list)  # one per earlier step
    max_steps: int | None = None  # the agent's step limit
    reflections: int = 0  # reflection prompts the agent has read so far (intervention=reflect)

    @property
    def interventions(self) -> int:
        return self.actors.count(HUMAN)


@dataclass(frozen=True)
class Decision:
    actor: str  # AGENT or HUMAN
    why: str = ""
    label: int | None = None  # the online judge's label of the previous step, if one was asked
    judge_failed: bool = False
    reflect: str | None = None  # a message the agent reads before it takes the step (intervention=reflect)


class Policy(Protocol):
    name: str
    hands_over: bool  # whether it ever hands a step to the helper (else it needs none)

    async def decide(self, state: StepState) -> Decision: ...


class Never:
    """The agent alone (the baseline every collaboration policy is compared with)."""

    name = "never"
    hands_over = False

    async def decide(self, state: StepState) -> Decision:
        return Decision(AGENT)


class FixedRate:
    """Hand each step over with probability `rate`, independently (reproducible per seed)."""

    name = "rate"
    hands_over = True

    def __init__(self, rate: float, seed: int = 0) -> None:
        if not 0 <= rate <= 1:
            raise BonError(f"intervention.rate must be between 0 and 1, got {rate}")
        self.rate, self.seed = float(rate), int(seed)

    def draw(self, state: StepState) -> float:
        key = f"{self.seed}\x00{state.task.id}\x00{state.sample}\x00{state.step}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2 ** 64

    async def decide(self, state: StepState) -> Decision:
        u = self.draw(state)
        return Decision(HUMAN, f"draw {u:.3f} < rate {self.rate:g}") if u < self.rate else Decision(AGENT)


class PRMTriggered:
    """Ask an online process judge about the agent's last step; a -1 hands the next step over.

    Only a step the agent took is judged (a human step is trusted). A failed judge call is not a
    label: the agent goes on, and the failure is recorded and counted.
    """

    name = "prm"
    hands_over = True

    def __init__(self, judge: Any) -> None:
        self.judge = judge

    async def decide(self, state: StepState) -> Decision:
        if not state.actors or state.actors[-1] != AGENT:
            return Decision(AGENT)
        partial = Trajectory(task_id=state.task.id, sample=state.sample, messages=tuple(state.messages))
        judgement = await self.judge.judge(partial)
        if judgement.failed:
            return Decision(AGENT, f"judge failed: {judgement.reason}", judge_failed=True)
        last = partial.step_indices[-1]
        label = judgement.step_labels.get(last)
        if label == -1:
            return Decision(HUMAN, f"judge labelled step {last} -1", label=-1)
        return Decision(AGENT, label=label)


class Budgeted:
    """Another policy, but at most `budget` interventions per trajectory."""

    def __init__(self, inner: Policy, budget: int) -> None:
        if budget < 0:
            raise BonError(f"intervention.budget must be >= 0, got {budget}")
        self.inner, self.budget = inner, int(budget)
        self.name = f"{inner.name}+budget{budget}"
        self.hands_over = inner.hands_over

    async def decide(self, state: StepState) -> Decision:
        decision = await self.inner.decide(state)
        if decision.actor == HUMAN and state.interventions >= self.budget:
            return Decision(AGENT, f"budget of {self.budget} spent ({decision.why})", decision.label,
                            decision.judge_failed)
        if decision.reflect is not None and state.reflections >= self.budget:
            return Decision(AGENT, f"budget of {self.budget} reflections spent", decision.label, decision.judge_failed)
        return decision


REFLECT_ON_ERROR = (
    "A reviewer checking your work judged your last step (message {index}) to be wrong or unhelpful. "
    "Before you go on, stop and reflect in a few sentences: what in that step, or in the steps it relied "
    "on, is likely mistaken, and what will you do differently? Then continue the task, correcting "
    "course where needed.")
REFLECT_NEAR_LIMIT = (
    "You have {left} step(s) left before this attempt is stopped without an answer. Reflect briefly on "
    "what you have established so far; if it is enough, give your final answer now, otherwise use the "
    "remaining steps on what matters most.")


class Reflect:
    """Sequential revision without a helper: the agent itself is asked to reflect and go on.

    An online process judge labels the agent's last step; after a -1 the agent reads a short
    reflection prompt before its next step. When `near_limit` steps remain before the step limit, it
    is reminded to conclude (once). A failed judge call is counted and no reflection is asked. With
    `budget`, at most that many reflections per trajectory.
    """

    name = "reflect"
    hands_over = False

    def __init__(self, judge: Any, near_limit: int = 2) -> None:
        if near_limit < 0:
            raise BonError(f"intervention.near_limit must be >= 0, got {near_limit}")
        self.judge, self.near_limit = judge, int(near_limit)

    async def decide(self, state: StepState) -> Decision:
        decision = await PRMTriggered(self.judge).decide(state)
        if decision.actor == HUMAN:  # the judge said -1: the agent reflects instead of handing over
            last = [i for i, m in enumerate(state.messages) if m.get("role") == "assistant"][-1]
            return Decision(AGENT, decision.why, label=-1, reflect=REFLECT_ON_ERROR.format(index=last))
        left = None if state.max_steps is None else state.max_steps - state.step
        if self.near_limit and left == self.near_limit:
            return Decision(AGENT, f"{left} steps left", decision.label, decision.judge_failed,
                            reflect=REFLECT_NEAR_LIMIT.format(left=left))
        return decision


# --------------------------------------------------------------------------- who acts for the human


class ModelHelper:
    """A stronger model standing in for the human: it sees the same conversation and tools."""

    kind = "model"

    def __init__(self, client: LLMClient, **params: Any) -> None:
        self.client, self.params = client, params

    async def act(self, messages: Sequence[Mapping[str, Any]], tools: list[dict[str, Any]] | None,
                  sample: int) -> CallResult:
        return await self.client.complete(messages, tools=tools, sample=sample, **self.params)


HUMAN_HELP = (
    "Your step. Type one line:\n"
    "  answer: <text>                 give the final answer\n"
    "  <tool> {json arguments}        call a tool, e.g. calculator {\"expression\": \"6*7\"}\n"
    "  anything else                  say it to the agent as this step\n"
)


class TerminalHuman:
    """A person at the terminal takes the step; `read` and `write` are swappable for tests."""

    kind = "terminal"

    def __init__(self, read: Callable[[], str] | None = None, write: Callable[[str], Any] | None = None) -> None:
        self.read = read or sys.stdin.readline
        self.write = write or sys.stderr.write
        self._lock = asyncio.Lock()  # one prompt at a time, however many trajectories run

    async def act(self, messages: Sequence[Mapping[str, Any]], tools: list[dict[str, Any]] | None,
                  sample: int) -> CallResult:
        names = [t["function"]["name"] for t in tools or []]
        async with self._lock:
            self.write(_render_for_human(messages, names, sample))
            line = (await asyncio.to_thread(self.read)).strip()
        return CallResult(status="ok", model="human", message=parse_human_line(line, names), cost_usd=0.0)


def _render_for_human(messages: Sequence[Mapping[str, Any]], tools: list[str], sample: int) -> str:
    question = next((m.get("content") for m in messages if m.get("role") == "user"), "")
    recent = [m for m in messages[-4:] if m.get("role") in ("assistant", "tool")]
    lines = [f"\n=== you are asked to take a step (sample {sample}) ===", f"task: {question}"]
    for m in recent:
        text = m.get("content") or json.dumps(m.get("tool_calls") or "")
        lines.append(f"[{m.get('role')}] {str(text)[:800]}")
    lines.append(f"tools: {', '.join(tools) or 'none'}")
    return "\n".join(lines) + "\n" + HUMAN_HELP + "> "


def parse_human_line(line: str, tools: Sequence[str]) -> dict[str, Any]:
    """The assistant message a typed line stands for (a final answer, a tool call, or plain text)."""
    head, _, rest = line.partition(" ")
    if line.lower().startswith("answer:"):
        answer = line.split(":", 1)[1].strip()
        if "final_answer" in tools:
            return _call("final_answer", {"answer": answer})
        return {"role": "assistant", "content": f"FINAL ANSWER: {answer}"}
    if head in tools:
        try:
            arguments = json.loads(rest) if rest.strip() else {}
        except json.JSONDecodeError:
            arguments = None
        if isinstance(arguments, dict):
            return _call(head, arguments)
    return {"role": "assistant", "content": line}


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)}}]}


# --------------------------------------------------------------------------- from config

JUDGED = ("prm", "reflect")  # policies that ask the run's judge about each agent step, online
HANDING_OVER = ("rate", "prm", "budgeted")  # policies whose handed-over steps a helper takes


def policy_from_config(options: Intervention | Mapping[str, Any], judge: Any = None) -> Policy:
    """`intervention.policy` (none | rate | prm | reflect) with an optional `intervention.budget`."""
    options = config.typed(Intervention, options, "intervention.")
    kind = options.policy
    policy: Policy
    if kind == "none":
        policy = Never()
    elif kind == "rate":
        policy = FixedRate(float(options.rate or 0.0), options.seed)
    else:
        if judge is None:
            raise BonError(f"intervention.policy={kind} needs an online judge (the run's judge=...)")
        policy = PRMTriggered(judge) if kind == "prm" else Reflect(judge, options.near_limit)
    return policy if options.budget is None else Budgeted(policy, options.budget)


def reward_summary(trajectories: Sequence[Trajectory], lam: float) -> dict[str, Any]:
    """Mean T, C and R = T - lambda*C over trajectories with a known outcome, plus the intervention rate."""
    scored = [t for t in trajectories if t.success is not None]
    steps = sum(len(t.metadata.get("actors") or []) for t in trajectories)
    human = sum(int(t.metadata.get("interventions") or 0) for t in trajectories)
    out: dict[str, Any] = {"lambda": lam, "n": len(trajectories), "n_scored": len(scored),
                           "interventions": human, "steps": steps,
                           "reflections": sum(int(t.metadata.get("reflections") or 0) for t in trajectories),
                           "intervention_rate": human / steps if steps else None,
                           "judge_failures": sum(int(t.metadata.get("online_judge_failures") or 0)
                                                 for t in trajectories)}
    if scored:
        T = [float(bool(t.success)) for t in scored]
        C = [float(t.metadata.get("interventions") or 0) for t in scored]
        out.update(T=sum(T) / len(T), C=sum(C) / len(C), R=sum(t - lam * c for t, c in zip(T, C)) / len(T))
    else:
        out.update(T=None, C=None, R=None, note="no reference answers: T and R cannot be computed")
    return out
