"""Judges that compare a task's candidates with each other and pick one: list-wise and pairwise.

`ListwiseJudge` shows all N candidates of a task in one call (each as a compact transcript, see
bon.judges.transcript) and asks which is most likely to have the correct final answer. LLM judges
favour some positions, so `permutations=k` shows the candidates in k different orders (the first
is the sample order, the second its reverse, the rest shuffled; all deterministic from `seed` and
the task id) and takes the majority of the picks, mapped back to sample indices.

`PairwiseJudge` runs a knockout tournament of such comparisons between two candidates: candidates
in sample order are paired, winners advance, an odd one out gets a bye; N candidates take N - 1
matches. With permutations >= 2 each match is shown in both orders.

Rules shared by both:
* a tie among the most-voted candidates goes to the lowest sample index, and is recorded
  (`tie=True`, and said in `reason`);
* a failed API call or an unusable reply is a failed vote: counted and explained, never a pick.
  A list-wise verdict fails (pick None) only when no permutation gave a usable vote. A pairwise
  match with no usable vote lets the lower sample index advance, with a note; the tournament's
  verdict fails when no match at all gave a usable vote.

Each permutation is one `LLMClient.complete` call with its own sample index, so it has its own
cache entry: a rerun with the same settings makes no request, and raising `permutations` only
pays for the new orders. Calls, tokens and cost are counted in the client's `Stats` like every
other call; each verdict also carries its own calls and tokens.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import string
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bon.errors import BonError
from bon.judges.parse import _last_verdict
from bon.judges.transcript import MIN_CHARS, compact, shorten
from bon.llm.cache import key_params
from bon.llm.client import CallResult, LLMClient
from bon.types import Trajectory

PROMPT_VERSION = 1
DEFAULT_MAX_CHARS = 4000
PICK_KEYS = ("best", "choice", "pick", "winner")

TEMPLATE = """You will compare {n} attempts by an AI agent at the same task. Each attempt used tools and ended \
with a final answer (or with none). Choose the attempt whose final answer is most likely to be correct.

The task:
{question}

Each attempt is shown shortened: the agent's steps (its messages and the tools it called), what the \
tools returned (failed tool calls are marked TOOL ERROR) and its final answer. Long texts are cut.

{attempts}
=== End of attempts ===

How to choose: trust evidence, not tone. Prefer the attempt whose final answer is backed by what its \
tools actually returned, that noticed and recovered from its errors, and that answers exactly what the \
task asks. An attempt with no final answer cannot be correct. Length, confidence and the order in which \
the attempts are listed are not evidence.

Give a short justification, then one fenced JSON block as the very last thing, in this form:
```json
{{"best": "<one of {labels}>", "reason": "<one sentence>"}}
```"""


@dataclass(frozen=True)
class ListwiseVerdict:
    """Which candidate of a task a comparing judge picked, and how the vote went.

    `pick` is a sample index (None when the verdict failed). `votes` maps sample index -> usable
    votes (list-wise: permutations that chose it; pairwise: matches it won). `raw` holds every
    reply in call order (None for a failed call). Tokens count every call, cache hits included
    (what the method costs); the client's `Stats` counts what this run spent."""

    judge: str
    task_id: str
    pick: int | None
    status: Literal["ok", "failed"]
    reason: str = ""
    votes: Mapping[int, int] = field(default_factory=dict)
    tie: bool = False
    calls: int = 0
    failed_votes: int = 0
    explanation: str = ""  # the judge's own reason for the pick (from the first vote for it)
    raw: tuple[str | None, ...] = ()
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass(frozen=True)
class _Vote:
    """One call's outcome: the sample it chose, or why it gave none."""

    sample: int | None
    reason: str
    explanation: str
    call: CallResult


@dataclass(frozen=True)
class _Match:
    """The combined votes of one comparison (all its permutations)."""

    pick: int | None
    votes: dict[int, int]
    tie: bool
    failures: list[str]
    explanation: str
    calls: list[CallResult]
    raw: list[str | None]


def labels_for(n: int) -> list[str]:
    """Letters for up to 26 candidates, numbers beyond (a label must be unambiguous in a reply)."""
    return list(string.ascii_uppercase[:n]) if n <= 26 else [str(i + 1) for i in range(n)]


def orders(n: int, k: int, seed: str) -> list[tuple[int, ...]]:
    """k orders of positions 0..n-1: the identity, its reverse, then distinct shuffles (repeats only once
    all n! orders are used). The first j orders do not depend on k, so a larger k reuses them."""
    out: list[tuple[int, ...]] = [tuple(range(n))]
    if k > 1 and n > 1:
        out.append(tuple(reversed(range(n))))
    rng = random.Random(seed)
    distinct = 1
    for i in range(2, n + 1):
        distinct *= i
    while len(out) < k:
        candidate = list(range(n))
        rng.shuffle(candidate)
        if tuple(candidate) not in out or len(set(out)) >= distinct:
            out.append(tuple(candidate))
    return out[:k]


def _combine(results: Sequence[_Vote]) -> _Match:
    """Majority of the usable votes; a tie goes to the lowest sample index."""
    votes = Counter(v.sample for v in results if v.sample is not None)
    failures = [v.reason for v in results if v.sample is None]
    calls = [v.call for v in results]
    raw = [v.call.content if v.call.ok else None for v in results]
    if not votes:
        return _Match(None, {}, False, failures, "", calls, raw)
    top = max(votes.values())
    tied = sorted(s for s, c in votes.items() if c == top)
    pick = tied[0]
    explanation = next(v.explanation for v in results if v.sample == pick)
    return _Match(pick, dict(sorted(votes.items())), len(tied) > 1, failures, explanation, calls, raw)


def _summarise(failures: Sequence[str]) -> str:
    counts = Counter(failures)
    return "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in counts.items())


class _ComparingJudge:
    """What list-wise and pairwise judges share: the prompt, one comparison with its permutations,
    the verdict, and running many tasks concurrently."""

    kind = "listwise"

    def __init__(self, client: LLMClient, name: str, permutations: int = 1, max_chars: int = DEFAULT_MAX_CHARS,
                 seed: int = 0, temperature: float | None = None, **params: Any) -> None:
        if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
            raise BonError(f"judge permutations must be an integer >= 1, got {permutations!r}")
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < MIN_CHARS:
            raise BonError(f"judge max_chars must be an integer >= {MIN_CHARS} for a {self.kind} judge "
                           f"(characters per candidate), got {max_chars!r}")
        self.client = client
        self.name = name
        self.permutations = permutations
        self.max_chars = max_chars
        self.seed = seed
        self.params = dict(params)
        if temperature is not None:
            self.params["temperature"] = temperature

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, permutations={self.permutations}, "
                f"max_chars={self.max_chars}, seed={self.seed}, model={self.client.model!r})")

    # -- identity
    def identity(self) -> dict[str, Any]:
        """What decides this judge's verdicts, apart from the candidates themselves."""
        return {"kind": self.kind, "name": self.name, "model": self.client.model, "prompt_version": PROMPT_VERSION,
                "permutations": self.permutations, "max_chars": self.max_chars, "seed": self.seed,
                "params": key_params({**self.client.params, **self.params})}

    def fingerprint(self, question: str, trajectories: Sequence[Trajectory]) -> str:
        """SHA-256 of the judge's identity and what it is shown for this task (question, sample indices,
        compact transcripts). A stored verdict with the same fingerprint can stand in for a new one."""
        shown = [[t.sample, compact(t, self.max_chars)] for t in _candidates(trajectories)]
        doc = {"v": 1, **self.identity(), "question": question, "candidates": shown}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- the prompt
    def request(self, question: str, shown: Sequence[Trajectory]) -> list[dict[str, Any]]:
        """The messages for one comparison of `shown`, in that order."""
        labels = labels_for(len(shown))
        attempts = "\n".join(f"=== Attempt {lab} ===\n{compact(t, self.max_chars)}" for lab, t in zip(labels, shown))
        text = TEMPLATE.format(n=len(shown), question=shorten(question, self.max_chars) or "(not given)",
                               attempts=attempts, labels=", ".join(labels))
        return [{"role": "user", "content": text}]

    def _read(self, reply: str, shown: Sequence[Trajectory]) -> tuple[int | None, str, str]:
        """(sample index, failure reason, the judge's reason) from a reply."""
        verdict = _last_verdict(reply or "")
        if verdict is None:
            return None, "no JSON verdict in the reply", ""
        named = next((verdict[k] for k in PICK_KEYS if k in verdict), None)
        if named is None:
            return None, "the verdict names no attempt (no \"best\")", ""
        labels = labels_for(len(shown))
        token = str(named).strip().strip(".").upper()
        for prefix in ("ATTEMPT ", "ATTEMPT"):
            token = token.removeprefix(prefix).strip()
        if isinstance(named, bool) or token not in labels:
            return None, f"the verdict names {named!r}, not one of {', '.join(labels)}", ""
        reason = verdict.get("reason")
        return shown[labels.index(token)].sample, "", str(reason) if reason is not None else ""

    # -- one comparison
    async def _vote(self, question: str, shown: Sequence[Trajectory], sample: int) -> _Vote:
        call = await self.client.complete(self.request(question, shown), sample=sample, **self.params)
        if not call.ok:
            return _Vote(None, f"api: {call.reason or 'error'}", "", call)
        pick, failure, explanation = self._read(call.content or "", shown)
        return _Vote(pick, failure, explanation, call)

    async def _compare(self, question: str, candidates: Sequence[Trajectory]) -> _Match:
        """All permutations of one comparison, voted."""
        seed = f"{self.seed}:{candidates[0].task_id}:{','.join(str(t.sample) for t in candidates)}"
        shown = [[candidates[i] for i in order] for order in orders(len(candidates), self.permutations, seed)]
        results = await asyncio.gather(*(self._vote(question, s, p) for p, s in enumerate(shown)))
        return _combine(results)

    def _verdict(self, task_id: str, pick: int | None, reason: str, votes: Mapping[int, int], tie: bool,
                 failures: Sequence[str], explanation: str, calls: Sequence[CallResult],
                 raw: Sequence[str | None]) -> ListwiseVerdict:
        return ListwiseVerdict(
            judge=self.name, task_id=task_id, pick=pick, status="ok" if pick is not None else "failed",
            reason=reason, votes=dict(votes), tie=tie, calls=len(calls), failed_votes=len(failures),
            explanation=explanation, raw=tuple(raw), cache_hits=sum(c.cached for c in calls),
            prompt_tokens=sum(c.prompt_tokens for c in calls),
            completion_tokens=sum(c.completion_tokens for c in calls))

    # -- public API
    async def pick(self, question: str, trajectories: Sequence[Trajectory]) -> ListwiseVerdict:
        """The verdict for one task's candidates (all of the same task, distinct sample indices)."""
        candidates = _candidates(trajectories)
        if len(candidates) == 1:
            return self._verdict(candidates[0].task_id, candidates[0].sample, "one candidate: no call needed",
                                 {}, False, [], "", [], [])
        return await self._pick(question, candidates)

    async def _pick(self, question: str, candidates: list[Trajectory]) -> ListwiseVerdict:
        raise NotImplementedError

    async def pick_all(self, groups: Sequence[tuple[str, Sequence[Trajectory]]],
                       on_done: Callable[[ListwiseVerdict], Awaitable[None]] | None = None,
                       progress: bool = False) -> list[ListwiseVerdict]:
        """`pick` for every (question, candidates) group, concurrently, in their order; `on_done` is
        awaited as each verdict arrives (to save it at once). The client's limiter bounds the requests
        in flight; here only the number of tasks started at once is bounded."""
        from tqdm.auto import tqdm

        groups = list(groups)
        for _, trajectories in groups:
            _candidates(trajectories)  # bad input fails before any call
        window = asyncio.Semaphore(max(1, 4 * self.client.limiter.concurrency))
        failed = 0
        bar = tqdm(total=len(groups), desc=f"{self.kind} {self.name}", unit="task", disable=not progress,
                   dynamic_ncols=True)

        async def one(question: str, trajectories: Sequence[Trajectory]) -> ListwiseVerdict:
            nonlocal failed
            async with window:
                verdict = await self.pick(question, trajectories)
            if on_done is not None:
                await on_done(verdict)
            failed += verdict.failed
            bar.set_postfix({**self.client.stats.postfix(), "failed": str(failed)}, refresh=False)
            bar.update(1)
            return verdict

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(q, ts)) for q, ts in groups]
        except* BonError as stop:  # the endpoint is down (bon.llm.guards): stop at once, one line
            raise _first(stop) from None
        finally:
            bar.close()
        return [t.result() for t in tasks]


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _candidates(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    """The candidates in sample order; one task, distinct sample indices, at least one."""
    candidates = sorted(trajectories, key=lambda t: t.sample)
    if not candidates:
        raise BonError("a comparing judge needs at least one candidate per task, got none")
    tasks = sorted({str(t.task_id) for t in candidates})
    if len(tasks) > 1:
        raise BonError(f"candidates of one comparison must share a task, got tasks {', '.join(tasks[:5])}")
    samples = [t.sample for t in candidates]
    if len(set(samples)) != len(samples):
        dupes = sorted({s for s in samples if samples.count(s) > 1})
        raise BonError(f"task {tasks[0]}: sample indices must be distinct, got duplicates {dupes}")
    return candidates


class ListwiseJudge(_ComparingJudge):
    """One call shows all of a task's candidates and names the best; `permutations` orders, majority."""

    kind = "listwise"

    async def _pick(self, question: str, candidates: list[Trajectory]) -> ListwiseVerdict:
        m = await self._compare(question, candidates)
        task = candidates[0].task_id
        if m.pick is None:
            return self._verdict(task, None, f"no usable vote in {len(m.calls)} call(s): {_summarise(m.failures)}",
                                 {}, False, m.failures, "", m.calls, m.raw)
        notes = []
        if m.tie:
            tied = [s for s, c in m.votes.items() if c == m.votes[m.pick]]
            notes.append(f"tie between samples {', '.join(map(str, tied))}: the lowest sample index wins")
        if m.failures:
            notes.append(f"{len(m.failures)} of {len(m.calls)} votes failed: {_summarise(m.failures)}")
        return self._verdict(task, m.pick, "; ".join(notes), m.votes, m.tie, m.failures, m.explanation,
                             m.calls, m.raw)

    async def cached(self, question: str, trajectories: Sequence[Trajectory]) -> int:
        """How many of this task's calls (one per permutation) the response cache answers."""
        candidates = _candidates(trajectories)
        if len(candidates) == 1:
            return 0
        seed = f"{self.seed}:{candidates[0].task_id}:{','.join(str(t.sample) for t in candidates)}"
        hits = [await self.client.cached(self.request(question, [candidates[i] for i in order]), sample=p,
                                         **self.params)
                for p, order in enumerate(orders(len(candidates), self.permutations, seed))]
        return sum(hits)


class PairwiseJudge(_ComparingJudge):
    """A knockout tournament of two-candidate comparisons; N candidates take N - 1 matches."""

    kind = "pairwise"

    async def _pick(self, question: str, candidates: list[Trajectory]) -> ListwiseVerdict:
        alive, wins = candidates, Counter[int]()
        calls: list[CallResult] = []
        raw: list[str | None] = []
        failures: list[str] = []
        notes: list[str] = []
        usable, tie, explanation = 0, False, ""
        while len(alive) > 1:
            pairs = [alive[i:i + 2] for i in range(0, len(alive) - 1, 2)]
            matches = await asyncio.gather(*(self._compare(question, pair) for pair in pairs))
            winners = []
            for pair, m in zip(pairs, matches):
                a, b = pair[0].sample, pair[1].sample
                calls += m.calls
                raw += m.raw
                failures += m.failures
                if m.pick is None:
                    notes.append(f"match {a} v {b} failed ({_summarise(m.failures)}): {a} advances")
                    winners.append(pair[0])
                    continue
                usable += 1
                wins[m.pick] += 1
                explanation = m.explanation
                if m.tie:
                    tie = True
                    notes.append(f"match {a} v {b} tied: {m.pick} advances")
                winners.append(pair[0] if m.pick == a else pair[1])
            alive = winners + ([alive[-1]] if len(alive) % 2 else [])
        task = candidates[0].task_id
        if usable == 0:
            return self._verdict(task, None, f"no match gave a usable vote: {_summarise(failures)}", {}, False,
                                 failures, "", calls, raw)
        if failures:
            notes.append(f"{len(failures)} of {len(calls)} votes failed")
        return self._verdict(task, alive[0].sample, "; ".join(notes), dict(sorted(wins.items())), tie, failures,
                             explanation, calls, raw)
