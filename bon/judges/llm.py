"""A live LLM judge: one chat call per trajectory (or k, voted), parsed into a `Judgement`.

`LLMJudge` builds the prompt with `bon.judges.prompt`, sends it through an `LLMClient` (limits,
retries, cache and accounting live there) and reads the reply with `bon.judges.parse`. A reply
that is unusable, or an API call that failed after its retries, gives a failed Judgement with the
reason; no label is ever guessed.

Self-consistency (`samples=k`): k calls that differ only in their sample index (so each has its
own cache entry and, at temperature > 0, its own draw). The usable samples vote:

* a step gets the label most samples gave it; on a tie, the most conservative of the tied labels
  wins, in the order -1 < 0 < +1 (e.g. {+1, -1} -> -1, {0, +1} -> 0);
* FINAL_RESULT likewise: majority, and a tie (possible with an even number of usable samples)
  goes to -1.

Both rules only ever return a label that some sample gave. The judgement fails when fewer than
`quorum` samples are usable (default: a strict majority of k, i.e. k // 2 + 1).

What the vote looked like (usable samples, share of steps on which they disagreed, the split
votes) is returned in `JudgeResult.meta` by `assess`/`assess_all`; `Judgement` itself has no
field for it. With k > 1 `Judgement.raw` is a JSON object holding every sample's reply and the
same agreement figures, so whatever persists judgements keeps them too. With k = 1 `raw` is the
judge's reply text (after a re-ask, the reply the labels came from).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bon.errors import BonError
from bon.judges import prompt as prompts
from bon.judges.parse import parse
from bon.llm.cache import key_params
from bon.llm.client import CallResult, LLMClient
from bon.types import Judgement, Trajectory

log = logging.getLogger(__name__)

MODES = ("prm", "orm")
# Tie-break order: the first of the tied labels in this order wins (the most conservative).
CONSERVATIVE_ORDER = (-1, 0, 1)
REASK = ("I could not use your reply: {reason}. Answer again with only the fenced JSON block, "
         "nothing else{what}.")


@dataclass(frozen=True)
class JudgeResult:
    """A Judgement plus what is known about how it was reached (votes, re-asks, tokens)."""

    judgement: Judgement
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sample:
    """One sample's outcome: its parsed judgement and the calls it took."""

    judgement: Judgement
    replies: tuple[str | None, ...]
    calls: tuple[CallResult, ...]


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first leaf exception of a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def vote(labels: Iterable[int]) -> int | None:
    """The most frequent label; a tie goes to the earliest tied label in CONSERVATIVE_ORDER.
    None when there are no labels."""
    counts = Counter(labels)
    if not counts:
        return None
    top = max(counts.values())
    return next(lab for lab in CONSERVATIVE_ORDER if counts.get(lab) == top)


class LLMJudge:
    """Labels trajectories with an LLM: every step and the outcome (`prm`) or the outcome only (`orm`).

    `prompt_path` replaces the built-in template (see bon.judges.prompt); `max_chars` cuts each
    message's text in the prompt; `reask` allows one follow-up call when a reply cannot be
    parsed; `temperature` and `params` go to every call (and so into the cache key).
    """

    def __init__(self, client: LLMClient, name: str, mode: Literal["prm", "orm"] = "prm", samples: int = 1,
                 prompt_path: str | None = None, max_chars: int | None = None, reask: bool = False,
                 temperature: float | None = None, quorum: int | None = None, **params: Any) -> None:
        if mode not in MODES:
            raise BonError(f"judge mode must be one of {', '.join(MODES)}, got {mode!r}")
        if samples < 1:
            raise BonError(f"judge samples must be >= 1, got {samples}")
        quorum = samples // 2 + 1 if quorum is None else quorum
        if not 1 <= quorum <= samples:
            raise BonError(f"judge quorum must be between 1 and samples={samples}, got {quorum}")
        if max_chars is not None and max_chars < 1:
            raise BonError(f"judge max_chars must be >= 1 (or unset), got {max_chars}")
        self.client = client
        self.name = name
        self.mode = mode
        self.samples = samples
        self.quorum = quorum
        self.max_chars = max_chars
        self.reask = reask
        self.params = dict(params)
        if temperature is not None:
            self.params["temperature"] = temperature
        self.template = prompts.load_template(mode, prompt_path)
        prompts.build(self.template, [], [])  # a template that cannot be filled fails now, not mid-run
        effective = {**client.params, **self.params}.get("temperature")
        if samples > 1 and effective == 0:
            log.warning("judge %s: samples=%d at temperature 0 will mostly repeat one answer", name, samples)

    def __repr__(self) -> str:
        return (f"LLMJudge(name={self.name!r}, mode={self.mode!r}, samples={self.samples}, quorum={self.quorum}, "
                f"reask={self.reask}, model={self.client.model!r})")

    # -- public API
    async def judge(self, trajectory: Trajectory) -> Judgement:
        """The judgement of one trajectory (ok, or failed with the reason)."""
        return (await self.assess(trajectory)).judgement

    async def judge_all(self, trajectories: Sequence[Trajectory], progress: bool = True,
                        on_done: Callable[[Trajectory, Judgement], Awaitable[None]] | None = None) -> list[Judgement]:
        """Judgements for all trajectories, in their order; `on_done` is awaited as each one finishes
        (to save it at once, so a killed run keeps what it judged)."""
        async def done(t: Trajectory, result: JudgeResult) -> None:
            if on_done is not None:
                await on_done(t, result.judgement)
        return [r.judgement for r in await self.assess_all(trajectories, progress, done)]

    def fingerprint(self, trajectory: Trajectory) -> str:
        """SHA-256 of what decides this judge's verdict on the trajectory: the model, the prompt it is sent
        (the rendered transcript, template and cut), the steps to label, and mode, samples, quorum, re-ask
        and sampling parameters. A stored judgement with the same fingerprint can stand in for a new one."""
        messages, steps = self.request(trajectory)
        doc = {"v": 1, "model": self.client.model, "mode": self.mode, "samples": self.samples,
               "quorum": self.quorum, "reask": self.reask, "params": key_params({**self.client.params, **self.params}),
               "messages": messages, "steps": steps}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def request(self, trajectory: Trajectory, prefix: bool = False) -> tuple[list[dict[str, Any]], list[int]]:
        """The messages sent to the judge for a trajectory, and the steps it must label (`prefix`: see
        `assess_prefix`)."""
        steps = trajectory.step_indices if self.mode == "prm" else []
        metadata = trajectory.metadata or {}
        errors = {str(c.get("id")): str(c["error_kind"]) for c in metadata.get("tool_calls") or []
                  if isinstance(c, Mapping) and c.get("error_kind")}
        text = prompts.build(self.template, trajectory.messages, steps, tools=metadata.get("tools"),
                             max_chars=self.max_chars, tool_errors=errors, prefix=prefix)
        return [{"role": "user", "content": text}], steps

    async def cached(self, trajectory: Trajectory) -> int:
        """How many of the trajectory's first-round calls (one per sample) the response cache answers."""
        messages, _ = self.request(trajectory)
        hits = [await self.client.cached(messages, sample=i, **self.params) for i in range(self.samples)]
        return sum(hits)

    async def assess(self, trajectory: Trajectory) -> JudgeResult:
        """Like `judge`, with the votes, re-asks and token counts in `meta`."""
        messages, steps = self.request(trajectory)
        runs = await asyncio.gather(*(self._sample(messages, steps, i) for i in range(self.samples)))
        return self._combine(list(runs), steps)

    async def assess_prefix(self, trajectory: Trajectory) -> JudgeResult:
        """`assess` of an unfinished trajectory whose last step is proposed and not yet carried out (step-level
        search): the same rubric and parser, every step labelled, and the prompt says the last step's tool
        calls have not run (bon.judges.prompt.PREFIX_NOTE). Its label is the one that step's fate hangs on."""
        messages, steps = self.request(trajectory, prefix=True)
        runs = await asyncio.gather(*(self._sample(messages, steps, i) for i in range(self.samples)))
        return self._combine(list(runs), steps)

    async def assess_all(self, trajectories: Sequence[Trajectory], progress: bool = True,
                         on_done: Callable[[Trajectory, JudgeResult], Awaitable[None]] | None = None
                         ) -> list[JudgeResult]:
        """`assess` for every trajectory, concurrently, in their order (`on_done` awaited as each finishes).

        The client's limiter bounds the requests in flight; here we only bound how many
        trajectories are started at once (4x the client's concurrency), so prompts for a huge
        batch are not all built up front. The bar shows judgements done and failed, plus the
        client's tokens and cost."""
        trajectories = list(trajectories)
        from tqdm.auto import tqdm  # noqa: PLC0415 - only needed here

        window = asyncio.Semaphore(max(1, 4 * self.client.limiter.concurrency))
        failed = 0
        bar = tqdm(total=len(trajectories), desc=f"judge {self.name}", unit="traj", disable=not progress,
                   dynamic_ncols=True)

        async def one(t: Trajectory) -> JudgeResult:
            nonlocal failed
            async with window:
                result = await self.assess(t)
            if on_done is not None:
                await on_done(t, result)
            failed += result.judgement.failed
            postfix = getattr(self.client.stats, "postfix", None)
            bar.set_postfix({**(postfix() if postfix else {}), "failed": str(failed)}, refresh=False)
            bar.update(1)
            return result

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(t)) for t in trajectories]
        except* BonError as stop:  # the endpoint is down (bon.llm.guards): stop at once, one line
            raise _first(stop) from None
        finally:
            bar.close()
        return [t.result() for t in tasks]

    # -- internals
    async def _call(self, messages: list[dict[str, Any]], sample: int) -> CallResult:
        return await self.client.complete(messages, sample=sample, **self.params)

    async def _sample(self, messages: list[dict[str, Any]], steps: list[int], sample: int) -> _Sample:
        """One sample: a call, parsed; on an unusable reply and with `reask`, one follow-up call."""
        first = await self._call(messages, sample)
        if not first.ok:
            return _Sample(self._api_failed(first), (None,), (first,))
        reply = first.content or ""
        judgement = parse(reply, self.name, steps, self.mode)
        if not judgement.failed or not self.reask:
            return _Sample(judgement, (reply,), (first,))
        what = f", labelling steps {', '.join(map(str, steps))} and FINAL_RESULT" if self.mode == "prm" \
            else ", with FINAL_RESULT"
        follow_up = [*messages, {"role": "assistant", "content": reply},
                     {"role": "user", "content": REASK.format(reason=judgement.reason, what=what)}]
        second = await self._call(follow_up, sample)
        if not second.ok:
            failed = self._api_failed(second)
            return _Sample(Judgement(self.name, status="failed", raw=reply,
                                     reason=f"{judgement.reason}; re-ask failed: {failed.reason}"),
                           (reply, None), (first, second))
        reply2 = second.content or ""
        judgement2 = parse(reply2, self.name, steps, self.mode)
        if judgement2.failed:
            judgement2 = Judgement(self.name, status="failed", raw=reply2,
                                   reason=f"{judgement2.reason} (after a re-ask)")
        return _Sample(judgement2, (reply, reply2), (first, second))

    def _api_failed(self, result: CallResult) -> Judgement:
        return Judgement(self.name, status="failed", reason=f"api: {result.reason or 'error'}")

    def _combine(self, runs: list[_Sample], steps: list[int]) -> JudgeResult:
        """One judgement from the samples: the only one, or the vote of the usable ones."""
        calls = [c for r in runs for c in r.calls]
        costs = [c.cost_usd for c in calls if not c.cached and c.ok]
        meta: dict[str, Any] = {
            "samples": self.samples,
            "ok_samples": sum(not r.judgement.failed for r in runs),
            "sample_status": ["ok" if not r.judgement.failed else r.judgement.reason for r in runs],
            "reasks": sum(len(r.replies) - 1 for r in runs),
            "calls": len(calls),
            "cache_hits": sum(c.cached for c in calls),
            "prompt_tokens": sum(c.prompt_tokens for c in calls if not c.cached),
            "completion_tokens": sum(c.completion_tokens for c in calls if not c.cached),
            "cost_usd": None if any(c is None for c in costs) else sum(costs),
            "api_errors": [c.error for c in calls if not c.ok],
            # what the calls took when first made, cache hits included: a method's compute, the same on a rerun
            "compute": {"prompt_tokens": sum(c.prompt_tokens for c in calls if c.ok),
                        "completion_tokens": sum(c.completion_tokens for c in calls if c.ok),
                        "cost_usd": None if any(c.ok and c.cost_usd is None for c in calls)
                        else sum(c.cost_usd or 0.0 for c in calls if c.ok)},
        }
        if self.samples == 1:
            return JudgeResult(runs[0].judgement, meta)

        ok = [r.judgement for r in runs if not r.judgement.failed]
        split = {i: Counter(j.step_labels[i] for j in ok) for i in steps} if ok else {}
        split = {i: c for i, c in split.items() if len(c) > 1}
        finals = Counter(j.final_label for j in ok)
        agreement = {
            "ok_samples": len(ok),
            "quorum": self.quorum,
            # share of steps on which the usable samples did not all agree (None: fewer than 2 samples or no steps)
            "step_disagreement": len(split) / len(steps) if len(ok) >= 2 and steps else None,
            "final_disagreement": len(finals) > 1 if len(ok) >= 2 else None,
            "final_votes": {str(k): v for k, v in sorted(finals.items())},
            "split_steps": {str(i): {str(k): v for k, v in sorted(c.items())} for i, c in split.items()},
        }
        meta.update(agreement)
        raw = json.dumps({"replies": [r.replies[-1] for r in runs], **agreement}, ensure_ascii=False)
        if len(ok) < self.quorum:
            reasons = Counter(r.judgement.reason for r in runs if r.judgement.failed)
            why = "; ".join(f"{reason} (x{n})" if n > 1 else reason for reason, n in reasons.items())
            return JudgeResult(Judgement(self.name, status="failed", raw=raw,
                                         reason=f"{len(ok)} of {self.samples} samples usable, quorum "
                                                f"{self.quorum}: {why}"), meta)
        labels = {i: vote(label for j in ok if (label := j.step_labels[i]) is not None) for i in steps}
        final = vote(j.final_label for j in ok if j.final_label is not None)
        return JudgeResult(Judgement(self.name, labels, final, raw=raw), meta)
