"""What a run's method costs per task, so methods can be compared at equal compute (issue 14 §5).

A method's cost is every call it needs, whether this run made it or the response cache answered it:
a rerun from the cache costs nothing to run, but the method it measures costs the same. Per stage:

* generation -- the agent's calls, discarded search candidates included, and a step-level search's
  judge calls (bon.generators.search.compute_by_task; each beam counted once);
* online judging, intervention -- an online judge's and a helper's calls during generation
  (intervention=prm / reflect / rate);
* judging -- the step judge's calls over the finished trajectories;
* selection -- a comparing judge's calls (selector=listwise / pairwise).

Best-of-N with k of the N samples costs k times what one sample costs (its generation and judging),
so one plain run also prices every point of its best-of-k curve. A comparing judge's cost is known at
k = N only, and a search unit is not made of independent samples, so those methods are single points.
`complete` is false, with a note, when some cost is unknown: a model without a price, or judgements
reused from judgements.jsonl (no call was made, so none was counted).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bon.types import Trajectory


def _part(calls: float, tokens: float, usd: float | None) -> dict[str, Any]:
    return {"calls": calls, "tokens": tokens, "usd": None if usd is None else round(usd, 8)}


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def from_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's cost from its client's `Stats.to_dict()`: the live calls plus what the cache answered."""
    unpriced = stats["unpriced"] or stats.get("cached_unpriced", 0)
    usd = None if unpriced else stats["cost_usd"] + stats["saved_cost_usd"]
    return _part(int(stats["calls"]), int(stats["tokens"]) + int(stats.get("cached_tokens", 0)), usd)


def generation(trajectories: Sequence[Trajectory]) -> dict[str, Any]:
    """The agent's calls (and a search's judge calls) over all trajectories, cache hits included."""
    from bon.generators.search import compute_by_task

    calls, tokens, usd = 0, 0, 0.0
    priced = True
    for task in compute_by_task(trajectories).values():
        calls += task["agent_calls"] + task["judge_calls"]
        tokens += task["tokens"]
        if task["cost_usd"] is None:
            priced = False
        else:
            usd += task["cost_usd"]
    return _part(calls, tokens, usd if priced else None)


def _per(part: Mapping[str, Any], n: int) -> dict[str, Any]:
    if n == 0:
        return _part(0, 0, None)
    return _part(part["calls"] / n, part["tokens"] / n, None if part["usd"] is None else part["usd"] / n)


def summary(trajectories: Sequence[Trajectory], stages: Mapping[str, Mapping[str, Any]], method: str,
            curve: bool, reused_judgements: int = 0) -> dict[str, Any]:
    """The run's `compute` block: cost per stage, per task, and (when `curve`) per sample of Best-of-N."""
    n_tasks = len({t.task_id for t in trajectories})
    total = _part(0, 0, 0.0)
    for part in stages.values():
        total = _part(total["calls"] + part["calls"], total["tokens"] + part["tokens"],
                      _plus(total["usd"], part["usd"]))
    notes = []
    if reused_judgements:
        notes.append(f"{reused_judgements} judgements were reused from judgements.jsonl, so their calls are not "
                     f"counted")
    if total["usd"] is None:
        notes.append("some calls have no known price, so USD is not given")
    out: dict[str, Any] = {"method": method, "tasks": n_tasks, "trajectories": len(trajectories),
                           "stages": {k: dict(v) for k, v in stages.items()}, "per_task": _per(total, n_tasks),
                           "complete": not notes, "note": "; ".join(notes)}
    if curve:  # Best-of-N: k samples cost k times one sample's generation and judging
        sample = [part for name, part in stages.items() if name != "selection"]  # paid once per sample
        usd: float | None = 0.0
        for p in sample:
            usd = _plus(usd, p["usd"])
        out["per_sample"] = _per(_part(sum(p["calls"] for p in sample), sum(p["tokens"] for p in sample), usd),
                                 len(trajectories))
    return out


def curve_points(compute: Mapping[str, Any], ks: Sequence[int]) -> list[float]:
    """Tokens per task of best-of-k for each k (a Best-of-N run's per-sample cost times k)."""
    return [k * compute["per_sample"]["tokens"] for k in ks]
