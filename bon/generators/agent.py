"""`AgentGenerator`: a tool-calling agent loop through `LLMClient`, N sampled trajectories per task.

The loop speaks the OpenAI function-calling format (system/user/assistant/tool messages, tool calls
with JSON-string arguments, tool messages linked by `tool_call_id`), so its trajectories can be
judged and replayed like any recorded ones. It never raises for a failure of the model or a tool:
every episode ends with a `stop_reason` and whatever messages it had, since a failed attempt is a
candidate a selector must be able to see (and count).

stop_reason: "answer" (final_answer tool or a `FINAL ANSWER:` line), "no_tool_call" (a plain text
reply without that line), "step_limit", "error" (an LLM call failed; `error_kind` is the call's
failure kind) or "timeout" (the per-trajectory time limit).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bon.errors import BonError
from bon.generators.intervention import AGENT, HUMAN, Policy, StepState
from bon.generators.store import TrajectoryStore
from bon.llm import CallResult, LLMClient
from bon.tools import workspace
from bon.tools.base import SKIPPED, Tool, ToolContext, ToolResult, run_tool
from bon.types import Task, Trajectory

log = logging.getLogger(__name__)

STOP_REASONS = ("answer", "no_tool_call", "step_limit", "error", "timeout")
FAILED_STOPS = frozenset({"error", "timeout"})

DEFAULT_SYSTEM_PROMPT = (
    "You solve tasks step by step, using the tools you are given when they help. Think briefly, then "
    "call a tool or answer. When you know the answer, call final_answer with it (keep it short: a number, "
    "a name or a phrase). If you cannot call tools, end your reply with a line of the form\n"
    "FINAL ANSWER: <answer>"
)

# "FINAL ANSWER: x", also wrapped in markdown emphasis or quoted ("**Final answer:** x", "> FINAL_ANSWER: x").
_FINAL_LINE = re.compile(r"^[ \t>*_#]*final[ _]answer[ \t*_]*:[ \t*_]*(.*?)[ \t*_]*$", re.IGNORECASE | re.MULTILINE)


def final_answer_line(text: str | None) -> str | None:
    """The answer on the last `FINAL ANSWER:` line (or the next line, if that one is empty)."""
    matches = list(_FINAL_LINE.finditer(text or ""))
    if not matches:
        return None
    last = matches[-1]
    answer = last.group(1).strip()
    if not answer:
        rest = [line.strip(" \t*_") for line in (text or "")[last.end():].splitlines()]
        answer = next((line for line in rest if line), "")
    return answer or None


@dataclass
class _Episode:
    """What one episode has produced so far; survives a timeout that cancels the loop mid-call."""

    messages: list[dict[str, Any]]
    answer: str | None = None
    answer_source: str | None = None
    stop_reason: str | None = None
    error_kind: str | None = None
    error: str | None = None
    llm_calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    llm_latency_s: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)  # who took each step: "agent" or "human"
    online_labels: dict[str, int | None] = field(default_factory=dict)  # step index -> online judge label
    online_judge_failures: int = 0
    reflections: int = 0  # reflection prompts inserted before a step (intervention=reflect)

    def count(self, r: CallResult) -> None:
        self.llm_calls += 1
        self.cached_calls += r.cached
        self.llm_latency_s += r.latency_s
        if r.ok:
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            if r.cost_usd is None:
                self.cost_known = False
            else:
                self.cost_usd += r.cost_usd

    def stop(self, reason: str, error_kind: str | None = None, error: str | None = None) -> None:
        self.stop_reason, self.error_kind, self.error = reason, error_kind, error


class AgentGenerator:
    """N tool-calling trajectories per task from one model.

    `seed` (if given) is sent as `seed + sample`, and the sample index reaches the response cache,
    so each sample is a distinct, reproducible draw. `system_prompt=None` uses DEFAULT_SYSTEM_PROMPT;
    "" sends no system message. `concurrency` bounds the trajectories in flight (default: the
    client's request concurrency); the per-trajectory clock starts once a trajectory is admitted,
    so queueing behind other trajectories never counts against its timeout. With a store,
    `retry_failed` generates again the samples that ended in an error or a timeout (say, an outage)
    instead of reusing them; only finished samples are reused. `score` is the dataset's rule
    (bon.datasets.taskset.TaskSet.score) that sets each trajectory's `success`; without one it stays None.
    """

    def __init__(self, client: LLMClient, tools: Sequence[Tool], n: int = 1, max_steps: int = 20,
                 temperature: float | None = None, seed: int | None = None, system_prompt: str | None = None,
                 trajectory_timeout_s: float = 600.0, tool_timeout_s: float | None = 60.0,
                 concurrency: int | None = None, intervention: Policy | None = None,
                 helper: Any = None, retry_failed: bool = True,
                 score: Callable[[Task, str | None], bool | None] | None = None) -> None:
        if n < 1:
            raise BonError(f"generator.n must be >= 1, got {n}")
        if max_steps < 1:
            raise BonError(f"generator.max_steps must be >= 1, got {max_steps}")
        if trajectory_timeout_s <= 0:
            raise BonError(f"the trajectory timeout must be > 0 seconds, got {trajectory_timeout_s}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise BonError(f"tool names must be unique, got {names}")
        self.client = client
        self.tools = {t.name: t for t in tools}
        self.schemas = [t.openai_schema() for t in tools]
        self.n = n
        self.max_steps = max_steps
        self.temperature = temperature
        self.seed = seed
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.trajectory_timeout_s = float(trajectory_timeout_s)
        self.tool_timeout_s = tool_timeout_s
        self.concurrency: int = concurrency or int(getattr(client.limiter, "concurrency", 16) or 16)
        if intervention is not None and intervention.hands_over and helper is None:
            raise BonError("an intervention policy needs a helper to take the human's steps "
                           "(intervention.helper: a stronger model, or kind=terminal)")
        self.intervention = intervention
        self.helper = helper
        self.retry_failed = retry_failed
        self.score = score
        self._files: dict[str, Path | None] = {}
        self._workspace: Path | None = None

    @property
    def models(self) -> list[str]:
        """The model names this generator's trajectories carry (one; a mixture has several)."""
        return [self.client.model]

    def files_dir(self, task: Task) -> Path | None:
        """The task's own directory of attachments (copied once per run), which file tools are confined to."""
        if task.id not in self._files:
            if self._workspace is None and task.files:
                self._workspace = Path(tempfile.mkdtemp(prefix="bon-files-"))
                weakref.finalize(self, shutil.rmtree, self._workspace, ignore_errors=True)
            self._files[task.id] = (workspace.materialize(task, self._workspace)
                                    if task.files and self._workspace is not None else None)
        return self._files[task.id]

    async def aclose(self) -> None:
        """Close tools that hold connections and delete the copies of attached files."""
        for tool in self.tools.values():
            close = getattr(tool, "aclose", None)
            if close is not None:
                await close()
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace, self._files = None, {}

    def opening(self, task: Task) -> list[dict[str, Any]]:
        """The system and user messages every sample of `task` starts from."""
        question = task.question
        if task.files:
            names = "\n".join(f"- {Path(f).name}" for f in task.files)
            question += f"\n\nAttached files (refer to them by these names):\n{names}"
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": question}]

    async def generate(self, task: Task, sample: int) -> Trajectory:
        """One episode; always returns a trajectory (failures are recorded, not raised)."""
        ep = _Episode(messages=self.opening(task))
        started = time.perf_counter()
        scope = asyncio.timeout(self.trajectory_timeout_s)
        try:
            async with scope:
                await self._loop(task, sample, ep)
        except TimeoutError:
            if not scope.expired():
                raise
            ep.stop("timeout", "timeout", f"the trajectory took longer than {self.trajectory_timeout_s:g} s")
        return self._trajectory(task, sample, ep, time.perf_counter() - started)

    def params(self, sample: int) -> dict[str, Any]:
        """The sampling parameters of every call of one sample (they reach the cache key)."""
        params: dict[str, Any] = {}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.seed is not None:
            params["seed"] = self.seed + sample
        return params

    async def first_call_cached(self, task: Task, sample: int) -> bool:
        """Whether the sample's first model call is already in the response cache (for the run's plan;
        later calls depend on the replies, so they cannot be known before)."""
        return await self.client.cached(self.opening(task), self.schemas or None, sample, **self.params(sample))

    def todo(self, tasks: Iterable[Task], stored: dict[tuple[str, int], Trajectory]) -> list[tuple[Task, int]]:
        """The (task, sample) pairs to generate: those not in `stored`, or failed there (retry_failed)."""
        return [(t, s) for t in tasks for s in range(self.n) if not self._reusable(stored.get((t.id, s)))]

    def _reusable(self, stored: Trajectory | None) -> bool:
        if stored is None:
            return False
        return not (self.retry_failed and stored.metadata.get("stop_reason") in FAILED_STOPS)

    async def _loop(self, task: Task, sample: int, ep: _Episode) -> None:
        params = self.params(sample)
        context = ToolContext(task=task, sample=sample, files_dir=self.files_dir(task), model=self.client.model)
        for step in range(self.max_steps):
            actor = await self._who_acts(task, sample, step, ep)
            if actor == HUMAN:
                r = await self.helper.act(ep.messages, self.schemas or None, sample)
            else:
                r = await self.client.complete(ep.messages, tools=self.schemas or None, sample=sample, **params)
            ep.count(r)
            ep.actors.append(actor)
            if not r.ok or r.message is None:
                ep.stop("error", r.reason or "error", r.error)
                return
            if await self._take_step(r.message, step, context, ep):
                return
        ep.stop("step_limit")

    async def _take_step(self, reply: dict[str, Any], step: int, context: ToolContext, ep: _Episode) -> bool:
        """Append the assistant message and run its tool calls; True when it ended the episode.
        (Shared with bon.generators.search, which runs only the step it chose.)"""
        message, calls = _with_call_ids(reply, step)
        ep.messages.append(message)
        if not calls:
            ep.answer = final_answer_line(message.get("content"))
            ep.answer_source = "final_answer_line" if ep.answer is not None else None
            ep.stop("answer" if ep.answer is not None else "no_tool_call")
            return True
        images: list[dict[str, Any]] = []
        for call in calls:
            images += await self._run_call(call, context, ep)
        if images:  # tool messages carry text only: images a tool returned follow them as a user message
            ep.messages.append({"role": "user", "content": [
                {"type": "text", "text": "The image(s) returned by the tool call(s) above:"}, *images]})
        if ep.answer is not None:
            ep.stop("answer")
            return True
        return False

    async def _who_acts(self, task: Task, sample: int, step: int, ep: _Episode) -> str:
        if self.intervention is None:
            return AGENT
        decision = await self.intervention.decide(StepState(task, sample, step, ep.messages, list(ep.actors),
                                                            self.max_steps, ep.reflections))
        if decision.judge_failed:
            ep.online_judge_failures += 1
        if decision.label is not None or decision.judge_failed:
            last = [i for i, m in enumerate(ep.messages) if m.get("role") == "assistant"][-1]
            ep.online_labels[str(last)] = decision.label
        if decision.reflect is not None:  # the agent reads it before it takes this step
            ep.messages.append({"role": "user", "content": decision.reflect})
            ep.reflections += 1
        return decision.actor

    async def _run_call(self, call: dict[str, Any], context: ToolContext, ep: _Episode) -> list[dict[str, Any]]:
        """Run one tool call, record its message; the image content parts it returned."""
        name = call["function"].get("name") or ""
        if ep.answer is not None:  # an earlier call in this message already ended the episode
            result = ToolResult.error(SKIPPED, "not run: final_answer already ended the episode")
        else:
            result = await run_tool(self.tools, name, call["function"].get("arguments"), context,
                                    self.tool_timeout_s)
            if result.answer is not None and result.error_kind is None:
                ep.answer, ep.answer_source = str(result.answer), "final_answer_tool"
        ep.messages.append({"role": "tool", "tool_call_id": call["id"], "name": name, "content": result.content})
        ep.tool_calls.append({"id": call["id"], "name": name, "error_kind": result.error_kind})
        return [{"type": "image_url", "image_url": {"url": url}} for url in result.images]

    def _trajectory(self, task: Task, sample: int, ep: _Episode, wall_s: float) -> Trajectory:
        metadata = {
            "model": self.client.model, "stop_reason": ep.stop_reason, "error_kind": ep.error_kind,
            "error": ep.error, "answer_source": ep.answer_source,
            "n_steps": sum(m.get("role") == "assistant" for m in ep.messages),
            "llm_calls": ep.llm_calls, "cached_calls": ep.cached_calls,
            "prompt_tokens": ep.prompt_tokens, "completion_tokens": ep.completion_tokens,
            "cost_usd": round(ep.cost_usd, 8) if ep.cost_known else None,
            "latency_s": round(wall_s, 4), "llm_latency_s": round(ep.llm_latency_s, 4),
            "tool_calls": ep.tool_calls, "tool_errors": sum(c["error_kind"] is not None for c in ep.tool_calls),
            "temperature": self.temperature, "seed": None if self.seed is None else self.seed + sample,
        }
        if self.intervention is not None:
            metadata.update(actors=ep.actors, interventions=ep.actors.count(HUMAN),
                            intervention_policy=self.intervention.name, online_labels=ep.online_labels,
                            online_judge_failures=ep.online_judge_failures, reflections=ep.reflections,
                            helper=getattr(getattr(self.helper, "client", None), "model", None)
                            or getattr(self.helper, "kind", None))
        return Trajectory(task_id=task.id, sample=sample, messages=tuple(ep.messages), answer=ep.answer,
                          success=None if self.score is None else self.score(task, ep.answer), metadata=metadata)

    async def generate_all(self, tasks: Iterable[Task], store: TrajectoryStore | str | os.PathLike[str] | None = None,
                           progress: bool = True) -> list[Trajectory]:
        """`n` trajectories per task, ordered by task then sample.

        With a store, pairs already in it are loaded instead of generated (resume), and each new
        trajectory is appended as soon as it finishes, so a killed run loses only those in flight.
        """
        tasks = list(tasks)
        ids = [t.id for t in tasks]
        if len(set(ids)) != len(ids):
            raise BonError("task ids must be unique: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
        if store is not None and not isinstance(store, TrajectoryStore):
            store = TrajectoryStore(store)
        stored = store.load() if store is not None else {}
        todo = self.todo(tasks, stored)
        again = {(t.id, s) for t, s in todo}
        results = {(t.id, s): stored[(t.id, s)] for t in tasks for s in range(self.n)
                   if (t.id, s) in stored and (t.id, s) not in again}
        retried = sum(key in stored for key in again)
        if retried:
            log.info("%s: generating again %d sample(s) that ended in an error or a timeout", store, retried)
        for task in {t.id: t for t, _ in todo}.values():
            self.files_dir(task)  # a missing attachment fails here, before any call is made
        other = sorted({str(t.metadata.get("model")) for t in results.values()} - set(self.models))
        if other:
            log.warning("%s holds trajectories from model(s) %s, not %s; they are reused as they are",
                        store, ", ".join(other), " or ".join(self.models))
        admit = asyncio.Semaphore(self.concurrency)
        failed = sum(t.metadata.get("stop_reason") in FAILED_STOPS for t in results.values())
        bar = tqdm(total=len(tasks) * self.n, initial=len(results), disable=not progress, unit="traj",
                   desc=f"generate {self.client.model}", file=sys.stderr, dynamic_ncols=True)

        async def one(task: Task, sample: int) -> None:
            nonlocal failed
            async with admit:
                trajectory = await self.generate(task, sample)
            if store is not None:
                await store.aappend(trajectory)
            results[(task.id, sample)] = trajectory
            failed += trajectory.metadata["stop_reason"] in FAILED_STOPS
            bar.update(1)
            bar.set_postfix({"errors": str(failed), **self.client.stats.postfix()}, refresh=False)

        try:
            async with asyncio.TaskGroup() as group:
                for task, sample in todo:
                    group.create_task(one(task, sample))
        except* BonError as stop:  # the endpoint is down (bon.llm.guards): one line, not a group
            raise _first(stop) from None
        finally:
            bar.close()
        return [results[(t.id, s)] for t in tasks for s in range(self.n)]


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first leaf exception of a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _with_call_ids(message: dict[str, Any], step: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A copy of the assistant message whose tool calls all have ids (some servers omit them)."""
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        function = dict(call.get("function") or {})
        calls.append({**call, "id": call.get("id") or f"call_{step}_{i}", "type": call.get("type") or "function",
                      "function": function})
    out = {k: v for k, v in message.items() if k != "tool_calls"}
    if calls:
        out["tool_calls"] = calls
    return out, calls
