"""Best-of-N, step-level search and list-wise selection as async functions for your own agent code.

    import bon
    result = await bon.best_of_n("What is 6 times 7?", agent, judge, n=8)
    result.trajectory, result.answer, result.compute

No Hydra, no files: every function takes your task, agent and judge, runs them through the same
generators, judges, selectors, cache and accounting as `python -m bon.run`, and returns plain data.

What counts as an agent and a judge:

* agent: a `bon.generators.agent.AgentGenerator`, or any callable `async (task: Task, sample: int) ->
  Trajectory` (the trajectory must carry `task.id` and `sample`). Step-level search (`beam`,
  `stepwise`, `dvts`) proposes steps through the agent's model, so there it must be an AgentGenerator.
* judge: a `bon.judges.llm.LLMJudge`, or any callable `async (trajectory: Trajectory) -> Judgement`.
  A callable that cannot judge should return `Judgement(name, status="failed", reason=...)`: it is
  counted, and the selector ranks it worst; an exception it raises propagates.
* task: a `bon.types.Task`, or a plain question string (its id is a hash of the question, so reruns
  and list-wise orders are reproducible).

Names are flat (`bon.beam`, not `bon.search.beam`): bon already has two modules called `search`
(bon.generators.search, the strategies these functions run; bon.tools.search, the agent's web-search
tool), and a third `bon.search` that is not a module (so `import bon.search` would fail) would
confuse more than it groups.

Compute: calls and tokens count what each call took when first made, cache hits included (the
method's cost, the same on a cached rerun); `cache_hits` says how many were served from the cache.
A plain callable that reports nothing is counted in `unreported`; an agent may report its own calls
by setting the AgentGenerator's metadata keys (llm_calls, cached_calls, prompt_tokens,
completion_tokens, cost_usd).
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from bon.candidates import candidate
from bon.errors import BonError
from bon.generators.agent import AgentGenerator
from bon.generators.search import SearchGenerator, compute_by_task
from bon.judges.listwise import ListwiseJudge, ListwiseVerdict, PairwiseJudge, _ComparingJudge
from bon.judges.llm import LLMJudge
from bon.llm import LLMClient
from bon.selectors import Selector, two_stage
from bon.selectors import get as get_selector
from bon.types import Judgement, Task, Trajectory
from bon.verdicts import question_of

Agent = Union[AgentGenerator, Callable[[Task, int], Awaitable[Trajectory]]]
Judge = Union[LLMJudge, Callable[[Trajectory], Awaitable[Judgement]]]
T = TypeVar("T")
SelectorLike = Union[Selector, str, Callable[[Sequence[Mapping[str, Any]]], int]]

__all__ = ["Compute", "Result", "beam", "best_of_n", "dvts", "listwise", "pairwise", "stepwise"]


@dataclass(frozen=True)
class Compute:
    """What a method spent on one task: agent and judge calls and tokens, cache hits included."""

    agent_calls: int = 0
    agent_tokens: int = 0
    judge_calls: int = 0
    judge_tokens: int = 0
    cache_hits: int = 0  # of those calls, how many the response cache answered (no request made)
    cost_usd: float | None = 0.0  # None when some call had no known price
    unreported: int = 0  # agent or judge results from a plain callable that said nothing of its cost

    @property
    def calls(self) -> int:
        return self.agent_calls + self.judge_calls

    @property
    def tokens(self) -> int:
        return self.agent_tokens + self.judge_tokens


@dataclass(frozen=True)
class Result:
    """One task's candidates, their judgements, the selector's pick and what it all cost.

    `candidates[i]` was judged by `judgements[i]` into candidate-table row `rows[i]` (the columns of
    bon.candidates.SCHEMA, what the selector read); `index` is the pick's position, `trajectory` the
    pick itself. Pass `result` to `bon.listwise` to let a comparing judge pick among the same candidates."""

    method: str
    task: Task
    trajectory: Trajectory
    index: int
    candidates: tuple[Trajectory, ...]
    judgements: tuple[Judgement, ...]
    rows: tuple[Mapping[str, Any], ...]
    selector: str
    compute: Compute = field(default_factory=Compute)

    @property
    def answer(self) -> str | None:
        return self.trajectory.answer

    @property
    def judge_failures(self) -> int:
        """Candidates whose judgement failed (the selector saw them as unjudged, never as labelled)."""
        return sum(j.failed for j in self.judgements)

    def __str__(self) -> str:
        c = self.compute
        failed = f"; {self.judge_failures} judgement(s) failed" if self.judge_failures else ""
        cost = "" if c.cost_usd is None or not c.cost_usd else f", ${c.cost_usd:.4f}"
        return (f"{self.method}: sample {self.trajectory.sample} of {len(self.candidates)} picked by {self.selector}, "
                f"answer {self.answer!r}{failed}; {c.calls} calls ({c.cache_hits} cached), {c.tokens} tokens{cost}")


# --------------------------------------------------------------------------- Best-of-N


async def best_of_n(task: Task | str, agent: Agent, judge: Judge, selector: SelectorLike = two_stage,
                    n: int = 8) -> Result:
    """Sample `n` trajectories with `agent` (samples 0..n-1), judge each with `judge`, pick one with
    `selector` (a bon.selectors Selector, a built-in's name, or any `rows -> index` callable)."""
    task = as_task(task)
    _count("n", n)
    generate = _agent_fn(agent)
    tally = _Tally()
    assess = _judge_fn(judge, tally)  # bad input fails here, before any call is paid for
    pick = _selector(selector)
    admit = asyncio.Semaphore(max(1, int(getattr(agent, "concurrency", n) or n)))

    async def one(sample: int) -> Trajectory:
        async with admit:
            return _checked(await _maybe_await(generate(task, sample)), task, sample)

    trajectories = await _all([one(s) for s in range(n)])
    tally.agents(trajectories)
    return await _judge_and_pick("best_of_n", task, trajectories, assess, pick, selector, tally)


# --------------------------------------------------------------------------- step-level search


async def beam(task: Task | str, agent: AgentGenerator, judge: LLMJudge, width: int = 4, expand: int = 4,
               selector: SelectorLike = two_stage) -> Result:
    """Beam search of `width` branches, each proposing `expand` candidate steps that `judge` labels before
    their tools run (bon.generators.search); its `width` finished trajectories are then judged whole and
    one is picked by `selector`."""
    _count("width", width)
    return await _search("beam", task, agent, judge, width, expand, selector)


async def stepwise(task: Task | str, agent: AgentGenerator, judge: LLMJudge, n: int = 1, expand: int = 4,
                   selector: SelectorLike = two_stage) -> Result:
    """Step-wise Best-of-N: `n` independent runs, each keeping the judge's best of `expand` candidate steps at
    every step; the `n` trajectories are then judged whole and one is picked by `selector`."""
    _count("n", n)
    return await _search("stepwise", task, agent, judge, n, expand, selector)


async def dvts(task: Task | str, agent: AgentGenerator, judge: LLMJudge, n: int = 4, expand: int = 4,
               selector: SelectorLike = two_stage) -> Result:
    """DVTS: `n` independent width-1 subtrees with `expand` expansions (the same procedure as `stepwise`, see
    bon.generators.search), judged whole, one picked by `selector`."""
    _count("n", n)
    return await _search("dvts", task, agent, judge, n, expand, selector)


async def _search(method: str, task: Task | str, agent: Any, judge: Any, n: int, expand: int,
                  selector: SelectorLike) -> Result:
    task = as_task(task)
    _count("expand", expand)
    if not isinstance(agent, AgentGenerator):
        raise BonError(f"bon.{method} needs a bon AgentGenerator as agent (search proposes steps through its "
                       f"model), got {_name(agent)}")
    if not isinstance(judge, LLMJudge) or judge.mode != "prm":
        got = f"mode {judge.mode!r}" if isinstance(judge, LLMJudge) else _name(judge)
        raise BonError(f"bon.{method} needs an LLMJudge in prm mode as judge (it labels each proposed step), "
                       f"got {got}")
    tally = _Tally()
    assess = _judge_fn(judge, tally)
    pick = _selector(selector)
    search = SearchGenerator(
        agent.client, list(agent.tools.values()), judge, method=method, k=expand, n=n, max_steps=agent.max_steps,
        temperature=agent.temperature, seed=agent.seed, system_prompt=agent.system_prompt,
        trajectory_timeout_s=agent.trajectory_timeout_s, tool_timeout_s=agent.tool_timeout_s,
        concurrency=agent.concurrency, score=agent.score)
    trajectories = await _all([search.generate(task, s) for s in range(n)])
    tally.agents(trajectories)  # the search's totals: every proposal and every prefix judged
    return await _judge_and_pick(method, task, trajectories, assess, pick, selector, tally)


# --------------------------------------------------------------------------- comparing judges


async def listwise(candidates: Sequence[Trajectory] | Result, judge: Any, question: str | None = None,
                   permutations: int | None = None) -> ListwiseVerdict:
    """One call shows all candidates of a task and names the best (`permutations` orders, majority vote).

    `judge`: a ListwiseJudge, or an LLMJudge / LLMClient whose model then judges. `permutations=None`
    keeps the judge's own setting (1 for a new one). `question` defaults to the candidates' first user
    message (a Result's task question). The verdict's `pick` is a sample index, None when it failed."""
    return await _compare(ListwiseJudge, candidates, judge, question, permutations)


async def pairwise(candidates: Sequence[Trajectory] | Result, judge: Any, question: str | None = None,
                   permutations: int | None = None) -> ListwiseVerdict:
    """A knockout tournament of two-candidate comparisons (N - 1 matches); arguments as `listwise`."""
    return await _compare(PairwiseJudge, candidates, judge, question, permutations)


async def _compare(kind: type[ListwiseJudge] | type[PairwiseJudge], candidates: Sequence[Trajectory] | Result,
                   judge: Any, question: str | None, permutations: int | None) -> ListwiseVerdict:
    if isinstance(candidates, Result):
        question = candidates.task.question if question is None else question
        candidates = candidates.candidates
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
        raise BonError(f"bon.{kind.kind}: candidates must be a list of Trajectory (or a Result), got "
                       f"{_name(candidates)}")
    stray = next((c for c in candidates if not isinstance(c, Trajectory)), None)
    if stray is not None:
        raise BonError(f"bon.{kind.kind}: every candidate must be a bon.types.Trajectory, got {_name(stray)}")
    comparing = _comparing_judge(kind, judge, permutations)
    if question is None:
        question = question_of(candidates[0]) if candidates else ""
    return await comparing.pick(question, candidates)


def _comparing_judge(kind: type[ListwiseJudge] | type[PairwiseJudge], judge: Any,
                     permutations: int | None) -> ListwiseJudge | PairwiseJudge:
    """The judge as a comparing judge of `kind`: as given when it already is one with these permutations,
    else one with the same model and settings."""
    if isinstance(judge, kind) and permutations in (None, judge.permutations):
        return judge
    if isinstance(judge, _ComparingJudge):
        return kind(judge.client, judge.name, permutations=permutations or judge.permutations,
                    max_chars=judge.max_chars, seed=judge.seed, **judge.params)
    if isinstance(judge, LLMJudge):
        return kind(judge.client, judge.name, permutations=permutations or 1)
    if isinstance(judge, LLMClient):
        return kind(judge, judge.model, permutations=permutations or 1)
    raise BonError(f"bon.{kind.kind}: judge must be a ListwiseJudge, PairwiseJudge, LLMJudge or LLMClient, "
                   f"got {_name(judge)}")


# --------------------------------------------------------------------------- shared steps


def as_task(task: Task | str) -> Task:
    """A Task as given, or one made from a question string (id: a hash of the question, stable across runs)."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str) and task.strip():
        return Task(id="q-" + hashlib.sha256(task.encode("utf-8")).hexdigest()[:12], question=task)
    raise BonError(f"task must be a bon.types.Task or a non-empty question string, got {task!r:.80}")


async def _judge_and_pick(method: str, task: Task, trajectories: list[Trajectory],
                          assess: Callable[[Trajectory], Coroutine[Any, Any, Judgement]],
                          pick: Callable[[Sequence[Mapping[str, Any]]], int], selector: SelectorLike,
                          tally: _Tally) -> Result:
    judgements = await _all([assess(t) for t in trajectories])
    rows = [candidate(t, j) for t, j in zip(trajectories, judgements)]
    index = pick(rows)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(rows):
        raise BonError(f"selector {_selector_name(selector)} returned {index!r}; it must return a position "
                       f"0..{len(rows) - 1} in the candidate rows")
    return Result(method, task, trajectories[index], index, tuple(trajectories), tuple(judgements), tuple(rows),
                  _selector_name(selector), tally.frozen())


def _agent_fn(agent: Any) -> Callable[[Task, int], Any]:
    generate = getattr(agent, "generate", None)
    if callable(generate):
        return generate
    if callable(agent):
        return agent
    raise BonError(f"agent must be a bon AgentGenerator or a callable async (task, sample) -> Trajectory, "
                   f"got {_name(agent)}")


def _judge_fn(judge: Any, tally: _Tally) -> Callable[[Trajectory], Coroutine[Any, Any, Judgement]]:
    """An async trajectory -> Judgement that also adds the call's compute to `tally`."""
    if isinstance(judge, LLMJudge):
        async def assess(t: Trajectory) -> Judgement:
            result = await judge.assess(t)
            tally.judge(result.meta)
            return result.judgement
        return assess
    fn = getattr(judge, "judge", None)
    fn = fn if callable(fn) else judge if callable(judge) else None
    if fn is None:
        raise BonError(f"judge must be a bon LLMJudge or a callable async (trajectory) -> Judgement, "
                       f"got {_name(judge)}")

    async def plain(t: Trajectory) -> Judgement:
        judgement = await _maybe_await(fn(t))
        if not isinstance(judgement, Judgement):
            raise BonError(f"judge returned {_name(judgement)} for sample {t.sample}, not a bon.types.Judgement")
        tally.unreported += 1
        return judgement
    return plain


def _selector(selector: Any) -> Callable[[Sequence[Mapping[str, Any]]], int]:
    if isinstance(selector, str):
        selector = get_selector(selector)
    if isinstance(selector, Selector) and selector.verdicts is not None:
        raise BonError(f"selector {selector.name!r} needs a comparing judge's verdict; pick with "
                       f"`await bon.{selector.verdicts}(result, judge)` on a best_of_n result instead")
    if not callable(selector):
        raise BonError(f"selector must be a bon Selector, a selector name or a callable rows -> index, "
                       f"got {_name(selector)}")
    return selector


def _selector_name(selector: Any) -> str:
    return str(getattr(selector, "name", None) or getattr(selector, "__name__", None) or type(selector).__name__)


def _checked(trajectory: Any, task: Task, sample: int) -> Trajectory:
    if not isinstance(trajectory, Trajectory):
        raise BonError(f"agent returned {_name(trajectory)} for sample {sample}, not a bon.types.Trajectory")
    if (trajectory.task_id, trajectory.sample) != (task.id, sample):
        raise BonError(f"agent returned a trajectory of task {trajectory.task_id!r} sample {trajectory.sample} "
                       f"when asked for task {task.id!r} sample {sample}; set Trajectory(task.id, sample, ...)")
    return trajectory


def _count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BonError(f"{name} must be an integer >= 1, got {value!r}")


def _name(obj: Any) -> str:
    return f"{type(obj).__name__} {obj!r:.60}"


async def _all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently, results in order; the first failure cancels the rest (no further calls are paid
    for) and is raised as itself, not wrapped in an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [t.result() for t in tasks]


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class _Tally:
    """Adds up a task's compute from the trajectories' metadata and the judges' results."""

    def __init__(self) -> None:
        self.agent_calls = self.agent_tokens = self.judge_calls = self.judge_tokens = 0
        self.cache_hits = self.unreported = 0
        self.cost: float | None = 0.0

    def _add_cost(self, cost: Any) -> None:
        self.cost = None if self.cost is None or cost is None else self.cost + float(cost)

    def agents(self, trajectories: Sequence[Trajectory]) -> None:
        """Agent (and search-judge) compute: each search unit once (bon.generators.search.compute_by_task)."""
        reported = [t for t in trajectories if "search" in t.metadata or "llm_calls" in t.metadata]
        self.unreported += len(trajectories) - len(reported)
        for row in compute_by_task(reported).values():
            self.agent_calls += row["agent_calls"]
            self.agent_tokens += row["agent_tokens"]
            self.judge_calls += row["judge_calls"]
            self.judge_tokens += row["judge_tokens"]
            self._add_cost(row["cost_usd"])
        units: set[tuple[str, Any]] = set()
        for t in reported:
            search = t.metadata.get("search")
            if search is None:
                self.cache_hits += int(t.metadata.get("cached_calls") or 0)
            elif (str(search.get("method")), search.get("unit")) not in units:
                units.add((str(search.get("method")), search.get("unit")))
                self.cache_hits += int(search.get("agent_cached") or 0) + int(search.get("judge_cached") or 0)

    def judge(self, meta: Mapping[str, Any]) -> None:
        compute = meta.get("compute") or {}
        self.judge_calls += int(meta.get("calls") or 0)
        self.cache_hits += int(meta.get("cache_hits") or 0)
        self.judge_tokens += int(compute.get("prompt_tokens") or 0) + int(compute.get("completion_tokens") or 0)
        self._add_cost(compute.get("cost_usd"))

    def frozen(self) -> Compute:
        cost = None if self.cost is None else round(self.cost, 8)
        return Compute(self.agent_calls, self.agent_tokens, self.judge_calls, self.judge_tokens, self.cache_hits,
                       cost, self.unreported)
