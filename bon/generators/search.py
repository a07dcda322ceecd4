"""Step-level search during generation: step-wise Best-of-N, beam search and DVTS, guided by a PRM judge.

At each step the agent proposes k candidate next assistant messages; the process judge labels each one
as the last step of its prefix BEFORE any of its tool calls runs (no side effects): the trajectory cut
after the candidate, judged with the usual rubric and parser, plus a note that the last step's tool
calls have not run (bon.judges.llm `assess_prefix`; the agent's tool schemas are shown to the judge).
The best are kept, only their tool calls run, and the search goes on. Every method
ends like the plain agent (final_answer or a FINAL ANSWER line, a reply without a tool call, the step
limit, an LLM failure, the time limit) and yields ordinary `Trajectory`s, which the judges and
selectors then treat like any others.

What `n` (trajectories per task) and `k` (candidates per step) mean:

* stepwise: n independent runs per task, each keeping the best of k candidates at every step.
  n=1 is the paper's step-wise Best-of-N (Zhu et al. 2025, arXiv 2506.12928).
* dvts: n independent subtrees, each a beam of width 1 with k expansions, and bon's selector picks
  among their n trajectories. With these definitions a DVTS subtree runs exactly the procedure of one
  step-wise run: both names are accepted so configs read like the paper (DVTS: n > 1 subtrees with a
  final selection; step-wise Best-of-N: n = 1, many candidates), and the method is recorded.
* beam: one search per task of width n: at every step each live branch proposes k candidates (the
  root n*k), and the best n (minus branches already finished) survive, from any parent. A finished
  branch keeps its slot, so the task ends with exactly n trajectories; sample i is the i-th branch
  to finish.

Which candidate wins (highest first): the judge's label of the candidate step (+1 > 0 > -1 > a failed
judge call), then the share of +1 labels over every step of its prefix in that same judgement, then
(beam) a candidate that repeats a better one of the same parent word for word comes after every
distinct one, then the lower parent slot and candidate index. A failed judge call is counted and
recorded as a None label; it is never turned into a label.

Reproducible and cached: candidate j at step t of slot p is drawn with sample index
cantor(p, cantor(t, j)) (p: the trajectory's sample, or the beam's parent slot), distinct for every
triple whatever n, k and max_steps are, so a rerun is served entirely from the response cache and a
rerun with a larger k reuses the smaller run's candidates. The judge's cache entry is keyed on its
prompt, so an identical prefix is judged once (concurrent identical requests share one call, too).

Branches that share a prefix have separate tool state: each has its own copy of the task's attached
files (copied when a branch forks, before any tool of the new step runs), passed to tools as
`ToolContext.files_dir`. A task without attachments has no such directory (None), as in the plain agent.

Cost (issue 14, compute-matched comparison): a search unit is one trajectory (stepwise, dvts) or one
task (beam). `metadata["search"]` holds the unit's totals, the discarded candidates and pruned
branches included: agent calls and tokens, judge calls, cache hits, failures and tokens, and dollars
when priced. Tokens count what each call took when first made, so a cached rerun reports the same
compute; a unit counts each distinct prefix it judged once (`judge_repeats`: candidates whose prefix
it had already judged), even when the cache or another unit's identical request served it, so the
figures depend on the replies only, not on timing. The top-level llm_calls/tokens/cost fields hold the
unit's agent totals. A beam unit's totals are repeated on each of its n trajectories: count each unit
once (`compute_by_task`). The kept steps' labels are in `metadata["search_labels"]` (message index ->
label, None where the judge call failed).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bon.errors import BonError, unknown_choice
from bon.generators.agent import AgentGenerator, _Episode, _with_call_ids
from bon.judges.llm import JudgeResult
from bon.llm import CallResult, LLMClient
from bon.tools.base import Tool, ToolContext
from bon.types import Task, Trajectory

log = logging.getLogger(__name__)

METHODS = ("stepwise", "beam", "dvts")
_LABEL_RANK = {1: 3, 0: 2, -1: 1}  # a failed judge call ranks 0: below any label


def cantor(a: int, b: int) -> int:
    """The Cantor pairing of two naturals: a distinct natural for every pair."""
    return (a + b) * (a + b + 1) // 2 + b


def candidate_sample(slot: int, step: int, candidate: int) -> int:
    """The sample index (cache key, seed offset) of one candidate draw."""
    return cantor(slot, cantor(step, candidate))


@dataclass
class _Cost:
    """One search unit's spending: every agent draw (kept or not) and every judge call."""

    agent_calls: int = 0
    agent_cached: int = 0
    agent_errors: int = 0
    agent_prompt_tokens: int = 0
    agent_completion_tokens: int = 0
    agent_cost: float | None = 0.0
    agent_latency_s: float = 0.0
    judged: int = 0  # candidates labelled (or whose judgement failed)
    judge_repeats: int = 0  # of those, a prefix this unit had already judged: no further compute
    judge_calls: int = 0
    judge_cached: int = 0
    judge_failures: int = 0  # candidates whose judgement failed (no label)
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    judge_cost: float | None = 0.0

    def agent(self, r: CallResult) -> None:
        self.agent_calls += 1
        self.agent_cached += r.cached
        self.agent_latency_s += r.latency_s
        if not r.ok:
            self.agent_errors += 1
            return
        self.agent_prompt_tokens += r.prompt_tokens
        self.agent_completion_tokens += r.completion_tokens
        self.agent_cost = None if self.agent_cost is None or r.cost_usd is None else self.agent_cost + r.cost_usd

    judge_keys: set[str] = field(default_factory=set)  # the prompts this unit has judged

    def judge(self, result: JudgeResult, repeat: bool) -> None:
        self.judged += 1
        self.judge_failures += result.judgement.failed
        if repeat:
            self.judge_repeats += 1
            return
        meta = result.meta
        compute = meta.get("compute") or {}
        self.judge_calls += int(meta.get("calls", 0))
        self.judge_cached += int(meta.get("cache_hits", 0))
        self.judge_prompt_tokens += int(compute.get("prompt_tokens", 0))
        self.judge_completion_tokens += int(compute.get("completion_tokens", 0))
        cost = compute.get("cost_usd")
        self.judge_cost = None if self.judge_cost is None or cost is None else self.judge_cost + cost

    def fields(self) -> dict[str, Any]:
        total = None if self.agent_cost is None or self.judge_cost is None else self.agent_cost + self.judge_cost
        return {
            "agent_calls": self.agent_calls, "agent_cached": self.agent_cached, "agent_errors": self.agent_errors,
            "agent_prompt_tokens": self.agent_prompt_tokens, "agent_completion_tokens": self.agent_completion_tokens,
            "agent_cost_usd": _round(self.agent_cost),
            "judged": self.judged, "judge_repeats": self.judge_repeats, "judge_calls": self.judge_calls,
            "judge_cached": self.judge_cached, "judge_failures": self.judge_failures,
            "judge_prompt_tokens": self.judge_prompt_tokens, "judge_completion_tokens": self.judge_completion_tokens,
            "judge_cost_usd": _round(self.judge_cost),
            "tokens": (self.agent_prompt_tokens + self.agent_completion_tokens + self.judge_prompt_tokens
                       + self.judge_completion_tokens),
            "cost_usd": _round(total),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 8)


@dataclass
class _Branch:
    """One partial trajectory: its episode, its own files, and the labels of the steps it kept."""

    ep: _Episode
    files_dir: Path | None
    labels: dict[str, int | None] = field(default_factory=dict)  # message index -> label of the kept step

    def fork(self, files_dir: Path | None) -> _Branch:
        ep = _Episode(messages=list(self.ep.messages), tool_calls=list(self.ep.tool_calls))
        return _Branch(ep, files_dir, dict(self.labels))


@dataclass
class _Candidate:
    parent: int  # slot of the branch that proposed it
    index: int  # its candidate number at that parent
    message: dict[str, Any]
    label: int | None = None
    share: float = 0.0  # share of +1 over the prefix's steps
    repeat: bool = False  # word for word the same as an earlier candidate of the same parent

    def rank(self) -> tuple[bool, int, float, int, int]:
        """Sort key: best first (see the module docstring)."""
        label = 0 if self.label is None else _LABEL_RANK[self.label]
        return (self.repeat, -label, -self.share, self.parent, self.index)


def _identity(message: dict[str, Any]) -> str:
    """What makes two proposed steps the same (tool call ids aside)."""
    calls = [(c["function"].get("name"), c["function"].get("arguments")) for c in message.get("tool_calls") or []]
    return json.dumps([message.get("content"), calls], sort_keys=True, default=str)


class SearchGenerator(AgentGenerator):
    """`n` trajectories per task found by step-level search with a process judge (module docstring).

    `judge` is an LLMJudge in prm mode on its own client; `method` is stepwise, beam or dvts; `k` the
    candidates proposed per live branch and step. Every other option is AgentGenerator's (n, max_steps,
    temperature, seed, system_prompt, trajectory_timeout_s (here per search unit), tool_timeout_s,
    concurrency, retry_failed, score); interventions are not combined with search.
    """

    def __init__(self, client: LLMClient, tools: Sequence[Tool], judge: Any, method: str = "stepwise",
                 k: int = 4, **options: Any) -> None:
        if method not in METHODS:
            raise unknown_choice("generator.search", method, METHODS)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BonError(f"generator.search_k must be an integer >= 1, got {k!r}")
        if options.get("intervention") is not None or options.get("helper") is not None:
            raise BonError(f"generator.search={method} cannot be combined with an intervention policy")
        if judge is None or not hasattr(judge, "assess_prefix"):
            raise BonError(f"generator.search={method} needs a process judge (an LLM judge) to label candidate steps")
        if getattr(judge, "mode", "prm") != "prm":
            raise BonError(f"generator.search={method} needs a judge in prm mode (step labels), got mode "
                           f"{getattr(judge, 'mode', None)!r}")
        super().__init__(client, tools, **options)
        self.judge = judge
        self.method = method
        self.k = k
        self.width = self.n if method == "beam" else 1
        effective = {**client.params, **self.params(0)}.get("temperature")
        if k > 1 and effective == 0:
            log.warning("search with k=%d candidates at temperature 0 will mostly propose one step", k)
        self._beams: dict[str, tuple[asyncio.Future[list[Trajectory]], set[int]]] = {}
        self._judging: dict[str, asyncio.Future[JudgeResult]] = {}

    # -- what AgentGenerator's generate_all calls
    async def generate(self, task: Task, sample: int) -> Trajectory:
        """One trajectory; for beam, sample `sample` of the task's one search (started by whichever asks first)."""
        if self.method != "beam":
            return (await self._search(task, slot=sample, samples=[sample]))[0]
        entry = self._beams.get(task.id)
        if entry is None:
            search = asyncio.ensure_future(self._search(task, slot=0, samples=list(range(self.n))))
            entry = self._beams[task.id] = (search, set(range(self.n)))
        future, waiting = entry
        try:
            return (await asyncio.shield(future))[sample]
        finally:
            waiting.discard(sample)
            if not waiting:
                self._beams.pop(task.id, None)

    async def first_call_cached(self, task: Task, sample: int) -> bool:
        slot = 0 if self.method == "beam" else sample
        index = candidate_sample(slot, 0, 0)
        return await self.client.cached(self.opening(task), self.schemas or None, index, **self.params(index))

    def todo(self, tasks: Iterable[Task], stored: dict[tuple[str, int], Trajectory]) -> list[tuple[Task, int]]:
        """As AgentGenerator's; for beam a task's samples come from one search, so all are redone or none."""
        pairs = super().todo(tasks, stored)
        if self.method != "beam":
            return pairs
        redo = {t.id: t for t, _ in pairs}
        return [(t, s) for t in redo.values() for s in range(self.n)]

    # -- the search
    async def _search(self, task: Task, slot: int, samples: list[int]) -> list[Trajectory]:
        """One search unit: `len(samples)` finished trajectories (width), numbered `samples` in finishing order."""
        started = time.perf_counter()
        cost = _Cost()
        root = Path(tempfile.mkdtemp(prefix="bon-search-"))
        try:
            source = self.files_dir(task)
            first_dir = None
            if source is not None:
                first_dir = root / "b0"
                shutil.copytree(source, first_dir, symlinks=True)
            live = [_Branch(_Episode(messages=self.opening(task)), first_dir)]
            finished: list[_Branch] = []
            steps = 0
            scope = asyncio.timeout(self.trajectory_timeout_s)
            try:
                async with scope:
                    for step in range(self.max_steps):
                        if not live:
                            break
                        steps = step + 1
                        per_parent = self.k * self.width if step == 0 else self.k
                        open_slots = self.width - len(finished)
                        chosen, ended = await self._choose(task, slot, live, step, per_parent, open_slots, cost, root)
                        finished += ended
                        live = [branch for branch, _ in chosen]
                        done = await asyncio.gather(*(self._take_step(message, step, self._context(task, samples[0], b),
                                                                      b.ep) for b, message in chosen))
                        finished += [b for b, end in zip(live, done) if end]
                        live = [b for b, end in zip(live, done) if not end]
                    for branch in live:
                        branch.ep.stop("step_limit")
            except TimeoutError:
                if not scope.expired():
                    raise
                for branch in live:
                    if branch.ep.stop_reason is None:
                        branch.ep.stop("timeout", "timeout",
                                       f"the search took longer than {self.trajectory_timeout_s:g} s")
            finished += live
            # a unit always yields its width: a beam stopped before it grew (time limit at the root) repeats
            # its last branch, so every sample is recorded with how it ended
            finished += [finished[-1]] * (len(samples) - len(finished))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        wall = time.perf_counter() - started
        return [self._finish(task, sample, slot, branch, cost, steps, wall)
                for sample, branch in zip(samples, finished)]

    def _context(self, task: Task, sample: int, branch: _Branch) -> ToolContext:
        return ToolContext(task=task, sample=sample, files_dir=branch.files_dir, model=self.client.model)

    async def _choose(self, task: Task, slot: int, live: list[_Branch], step: int, per_parent: int, open_slots: int,
                      cost: _Cost, root: Path) -> tuple[list[tuple[_Branch, dict[str, Any]]], list[_Branch]]:
        """Propose and judge this step's candidates for `open_slots` slots: the kept (branch, message) pairs,
        forked and ready to run, and the branches that ended with an error because a parent's proposals all
        failed (a slot no usable candidate can fill ends that way too, so a unit always yields its width)."""
        jobs = [(p, j) for p in range(len(live)) for j in range(per_parent)]
        replies = await asyncio.gather(*(self._propose(live[p], slot + p, step, j) for p, j in jobs))
        candidates: list[_Candidate] = []
        last_failure: dict[int, CallResult] = {}
        for (p, j), r in zip(jobs, replies):
            cost.agent(r)
            if r.ok and r.message is not None:
                candidates.append(_Candidate(p, j, _with_call_ids(r.message, step)[0]))
            else:
                last_failure[p] = r
        ended = []
        for p, branch in enumerate(live):
            if not any(c.parent == p for c in candidates):
                r = last_failure[p]
                branch.ep.stop("error", r.reason or "error", r.error)
                ended.append(branch)
        slots = open_slots - len(ended)
        failed_parent = next(iter(last_failure), None)
        while len(candidates) < slots and failed_parent is not None:  # the root's draws failed (beam)
            r = last_failure[failed_parent]
            orphan = live[failed_parent].fork(None)
            orphan.ep.stop("error", r.reason or "error", r.error)
            ended.append(orphan)
            slots -= 1
        seen: set[tuple[int, str]] = set()
        for c in candidates:
            key = (c.parent, _identity(c.message))
            c.repeat = key in seen
            seen.add(key)
        await asyncio.gather(*(self._label(task, live[c.parent], c, cost) for c in candidates))
        kept = sorted(candidates, key=_Candidate.rank)[:slots]
        chosen, used = [], set()
        for c in kept:  # the first child takes its parent's files; a further child gets a copy
            parent = live[c.parent]
            files = parent.files_dir
            if files is not None and c.parent in used:
                copy = root / f"b{step}_{c.parent}_{c.index}"
                shutil.copytree(files, copy, symlinks=True)
                files = copy
            used.add(c.parent)
            child = parent.fork(files)
            child.labels[str(len(child.ep.messages))] = c.label
            chosen.append((child, c.message))
        return chosen, ended

    async def _propose(self, branch: _Branch, slot: int, step: int, candidate: int) -> CallResult:
        index = candidate_sample(slot, step, candidate)
        return await self.client.complete(branch.ep.messages, tools=self.schemas or None, sample=index,
                                          **self.params(index))

    async def _label(self, task: Task, parent: _Branch, candidate: _Candidate, cost: _Cost) -> None:
        """The judge's label of the candidate as the last step of its prefix (no tool of it has run)."""
        messages = (*parent.ep.messages, candidate.message)
        prefix = Trajectory(task.id, 0, messages, metadata={"tool_calls": parent.ep.tool_calls,
                                                            "tools": self.schemas})
        request, _ = self.judge.request(prefix, prefix=True)
        key = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode("utf-8")).hexdigest()
        repeat = key in cost.judge_keys
        cost.judge_keys.add(key)
        result = await self._judge_once(key, prefix)
        cost.judge(result, repeat)
        judgement = result.judgement
        if judgement.failed:
            return
        labels = [label for label in judgement.step_labels.values() if label is not None]
        candidate.label = judgement.step_labels.get(len(messages) - 1)
        candidate.share = sum(label == 1 for label in labels) / len(labels) if labels else 0.0

    async def _judge_once(self, key: str, prefix: Trajectory) -> JudgeResult:
        """The judge's verdict on a prefix (`key`: its prompt's hash). An identical prompt already in flight,
        from this unit or another, is awaited rather than sent again; finished ones are in the response cache."""
        pending = self._judging.get(key)
        if pending is None:
            pending = self._judging[key] = asyncio.ensure_future(self.judge.assess_prefix(prefix))
            pending.add_done_callback(lambda _: self._judging.pop(key, None))
        return await asyncio.shield(pending)

    def _finish(self, task: Task, sample: int, unit: int, branch: _Branch, cost: _Cost, steps: int,
                wall_s: float) -> Trajectory:
        """The branch as an ordinary trajectory; the unit's agent totals in the usual fields, the search's in
        `metadata["search"]` (`seed` is the base: candidate draws add their sample index to it)."""
        ep = branch.ep
        ep.llm_calls, ep.cached_calls = cost.agent_calls, cost.agent_cached
        ep.prompt_tokens, ep.completion_tokens = cost.agent_prompt_tokens, cost.agent_completion_tokens
        ep.cost_usd, ep.cost_known = cost.agent_cost or 0.0, cost.agent_cost is not None
        ep.llm_latency_s = cost.agent_latency_s
        trajectory = self._trajectory(task, sample, ep, wall_s)
        search = {"method": self.method, "k": self.k, "width": self.width, "unit": unit,
                  "unit_trajectories": self.width, "search_steps": steps, **cost.fields()}
        metadata = {**trajectory.metadata, "seed": self.seed, "search": search, "search_labels": branch.labels}
        return replace(trajectory, metadata=metadata)


def compute_by_task(trajectories: Iterable[Trajectory]) -> dict[str, dict[str, Any]]:
    """Per task: the agent's and the judge's calls, tokens and dollars, each search unit counted once.

    A trajectory without search metadata (plain Best-of-N) is its own unit with no judge calls, so plain
    and searched runs compare on the same terms. `cost_usd` is None when any part is unpriced."""
    out: dict[str, dict[str, Any]] = {}
    counted: set[tuple[str, str, Any]] = set()
    for t in trajectories:
        md = t.metadata or {}
        search = md.get("search")
        if search is not None:
            unit = (t.task_id, str(search.get("method")), search.get("unit"))
            if unit in counted:
                continue  # another trajectory of a beam already counted
            counted.add(unit)
        row = out.setdefault(t.task_id, {"units": 0, "agent_calls": 0, "judge_calls": 0, "agent_tokens": 0,
                                         "judge_tokens": 0, "tokens": 0, "cost_usd": 0.0})
        if search is None:
            agent_tokens, judge_tokens = int(md.get("prompt_tokens") or 0) + int(md.get("completion_tokens") or 0), 0
            calls, judge_calls, cost = int(md.get("llm_calls") or 0), 0, md.get("cost_usd")
        else:
            agent_tokens = int(search["agent_prompt_tokens"]) + int(search["agent_completion_tokens"])
            judge_tokens = int(search["judge_prompt_tokens"]) + int(search["judge_completion_tokens"])
            calls, judge_calls, cost = int(search["agent_calls"]), int(search["judge_calls"]), search["cost_usd"]
        row["units"] += 1
        row["agent_calls"] += calls
        row["judge_calls"] += judge_calls
        row["agent_tokens"] += agent_tokens
        row["judge_tokens"] += judge_tokens
        row["tokens"] += agent_tokens + judge_tokens
        row["cost_usd"] = None if row["cost_usd"] is None or cost is None else row["cost_usd"] + cost
    return out
