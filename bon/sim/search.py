"""Step-level search in the simulator: step-wise Best-of-N, beam search and DVTS (SYNTHETIC DATA).

How far to trust it: the simulator was validated for selecting among finished trajectories only
(README, "The synthetic benchmark"). Nothing here was checked against real step-level search: the
step dynamics below are an assumption, derived from the calibrated chains but not measured. Use it to
see how methods move with judge quality, k and n, not to predict what search buys on a real agent.

The model. In bon.sim.model an attempt has a hidden track (on or off), fixed for the attempt; its true
step labels follow that track's label chain and its length that track's length distribution. Told
step by step, the same model reads: before step t+1 the track is on with its posterior probability
given the task's difficulty (the prior), the true labels so far and the fact that the attempt has
not stopped (Bayes with the two chains and length distributions); the step's label follows the
track's chain from the previous label; the attempt stops after it with the track's hazard. A search
proposes k candidate steps from one prefix, which the whole-trajectory data cannot settle: do they
share the prefix's hidden track? Here each candidate keeps its parent's track with probability
`track_memory` and otherwise draws one from the posterior. With one candidate per step (k=1) this is
exactly the whole-trajectory model whatever `track_memory` is (a test checks it); the option decides
what choosing a step can buy:

* track_memory=1: an attempt's quality is set by its first step; later choices can only steer clear
  of ending on an uncorrected error (the pessimistic end for search);
* track_memory=0: an attempt's future depends only on its visible labels, so keeping a +1 step makes
  the rest more likely on track and a -1 step less (the optimistic end).

The simulated judge labels every candidate through its confusion matrix (positive bias applied); a call
fails with `fail_rate` and then gives no label (ranked below any label, never turned into one). The kept
candidate is chosen as bon.generators.search does: the judge's label (+1 > 0 > -1 > failed call), then
the share of +1 over the prefix (earlier steps keep the labels they got when kept), then the lower parent
slot and candidate index. Success, as in the whole-trajectory model: on track at the end and the last
step not -1. Methods, with the live definitions: stepwise and dvts are n independent units of width 1
(k candidates per step); beam is one unit of width n per task (the root proposes n*k, then k per live
branch; the best n minus the finished survive; a finished branch keeps its slot; sample i is the i-th
branch to finish).

Compute is counted in bon.compute's units: agent calls = candidates proposed, judge calls = candidates
judged (failed calls included). Tokens come from a token model (`TokenModel`), since there is no text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bon.errors import BonError, unknown_choice
from bon.sim.model import PAD, Chain, JudgeModel, Profile, SimTrajectories

METHODS = ("stepwise", "beam", "dvts")


@dataclass(frozen=True)
class TokenModel:
    """Tokens per call, modelled: a call sees the transcript so far, which grows by `step_tokens` a step.

    `prompt_tokens`: system prompt, task and tool schemas; `step_tokens`: one assistant message and its
    tool result; `judge_overhead`: the judge's rubric and its reply, per call.
    """

    prompt_tokens: int = 600
    step_tokens: int = 700
    judge_overhead: int = 800

    def transcript(self, steps: np.ndarray | int) -> np.ndarray:
        return np.asarray(self.prompt_tokens + np.asarray(steps, dtype=np.int64) * self.step_tokens)

    def agent_call(self, step: int) -> int:
        """Proposing step `step` (0-based): the transcript so far in, one step out."""
        return int(self.transcript(step + 1))

    def judge_call(self, steps: np.ndarray | int) -> np.ndarray:
        """Judging a transcript of `steps` steps (a whole trajectory, or a prefix ending in a candidate)."""
        return self.judge_overhead + self.transcript(steps)


@dataclass
class SearchResult:
    """The finished trajectories (task-major, n per task) and what the search cost, per task."""

    trajectories: SimTrajectories
    agent_calls: np.ndarray
    judge_calls: np.ndarray
    judge_failures: np.ndarray
    agent_tokens: np.ndarray
    judge_tokens: np.ndarray


def length_pmf(chain: Chain, max_len: int) -> np.ndarray:
    """P(L = m) for m = 0..max_len, exactly as `Chain.lengths` draws L (floor of a piecewise-linear map of u)."""
    q = chain.length_quantiles + 0.999
    grid = np.linspace(0.0, 1.0, q.size)
    a, b, width = q[:-1], q[1:], np.diff(grid)
    x = np.arange(max_len + 1, dtype=float)[:, None] + 1.0  # P(L <= m) = P(f(u) < m + 1)
    rising = b > a
    frac = np.where(rising, np.clip((x - a) / np.where(rising, b - a, 1.0), 0.0, 1.0), (x > a).astype(float))
    cdf = np.minimum((frac * width).sum(axis=1), 1.0)
    return np.diff(np.concatenate([[0.0], cdf]))


def _max_len(chain: Chain) -> int:
    return int(np.floor(chain.length_quantiles[-1] + 0.999))


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Category 0/1/2 from cumulative probabilities `cum[..., :2]` and uniforms `u`."""
    return ((u > cum[..., 0]).astype(np.int8) + (u > cum[..., 1])).astype(np.int8)


def search(profile: Profile, task_p: np.ndarray, method: str, n: int, k: int, judge: JudgeModel,
           rng: np.random.Generator, track_memory: float = 0.5, tokens: TokenModel | None = None,
           wrong_answers: int = 3) -> SearchResult:
    """n finished trajectories per task found by simulated step-level search (module docstring)."""
    if method not in METHODS:
        raise unknown_choice("generator.search", method, METHODS)
    if n < 1 or k < 1:
        raise BonError(f"generator.n and generator.search_k must be at least 1 (got {n} and {k})")
    if not 0.0 <= track_memory <= 1.0:
        raise BonError(f"generator.track_memory must be a probability in [0, 1], got {track_memory!r}")
    tokens = tokens or TokenModel()
    n_tasks = task_p.size
    width = n if method == "beam" else 1
    units = n_tasks if method == "beam" else n_tasks * n
    prior = task_p if method == "beam" else np.repeat(task_p, n)
    chains = (profile.off_track, profile.on_track)  # index by track: 0 off, 1 on
    top = max(_max_len(c) for c in chains)
    pmf = np.stack([length_pmf(c, top) for c in chains])  # [track, m]
    surv = 1.0 - np.cumsum(pmf, axis=1)  # P(L > m)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_surv = np.log(np.clip(surv, 0.0, None))
        hazard = np.where(np.concatenate([np.ones((2, 1)), surv[:, :-1]], axis=1) > 1e-12,
                          pmf / np.concatenate([np.ones((2, 1)), surv[:, :-1]], axis=1), 1.0)  # P(L=m | L>=m)
        log_prior = np.stack([np.log1p(-prior), np.log(prior)], axis=-1)  # [units, track]
        log_init = np.log(np.stack([c.initial for c in chains]))  # [track, label]
        log_next = np.log(np.stack([c.transition for c in chains]))  # [track, prev, label]
    cum_init = np.cumsum(np.stack([c.initial for c in chains]), axis=-1)
    cum_next = np.cumsum(np.stack([c.transition for c in chains]), axis=-1)
    cum_judge = np.cumsum(judge.effective_confusion, axis=1)

    shape = (units, width)
    history = np.full((units, width, top), PAD, dtype=np.int8)
    live = np.ones(shape, dtype=bool)
    lengths = np.zeros(shape, dtype=np.int32)
    success = np.zeros(shape, dtype=bool)
    prev = np.zeros(shape, dtype=np.int8)
    track = np.zeros(shape, dtype=np.int8)
    loglik = np.zeros((units, width, 2))  # log P(true labels so far | track)
    positives = np.zeros(shape, dtype=np.int32)  # judge's +1 labels over the kept steps
    agent_calls = np.zeros(units, dtype=np.int64)
    judge_failures = np.zeros(units, dtype=np.int64)
    agent_tokens = np.zeros(units, dtype=np.int64)
    judge_tokens = np.zeros(units, dtype=np.int64)
    rows_all = np.arange(units)
    for t in range(top):
        n_live = live.sum(axis=1)
        if not n_live.any():
            break
        # each live branch proposes k candidate steps: a track, a true label, whether the attempt stops after it
        weight = log_prior[:, None, :] + loglik + log_surv[:, t]
        with np.errstate(invalid="ignore"):
            post_on = np.nan_to_num(np.exp(weight[..., 1] - np.logaddexp(weight[..., 0], weight[..., 1])))
        draw = (rng.random((units, width, k)) < post_on[..., None]).astype(np.int8)
        if t > 0 and track_memory > 0:
            draw = np.where(rng.random((units, width, k)) < track_memory, track[..., None], draw).astype(np.int8)
        u = rng.random((units, width, k))
        label = _draw(cum_init[draw] if t == 0 else cum_next[draw, prev[..., None]], u)
        stops = rng.random((units, width, k)) < hazard[draw, t + 1]
        # the judge labels each candidate as the last step of its prefix; a failed call gives no label
        failed = rng.random((units, width, k)) < judge.fail_rate
        said = _draw(cum_judge[label], rng.random((units, width, k)))
        rank = np.where(failed, 0, said + 1)
        share = np.where(failed, 0.0, (positives[..., None] + (said == 2)) / (t + 1))
        score = np.where(live[..., None], rank * 2.0 + share, -1.0).reshape(units, width * k)
        proposed = n_live * k
        agent_calls += proposed
        judge_failures += (failed & live[..., None]).sum(axis=(1, 2))
        agent_tokens += proposed * tokens.agent_call(t)
        judge_tokens += proposed * int(tokens.judge_call(t + 1))
        # keep the best candidates in the open (live) slots, best first into the lowest live slot
        order = np.argsort(-score, axis=1, kind="stable")
        slots = np.argsort(~live, axis=1, kind="stable")
        n_history, n_live_slots, n_lengths, n_success = history.copy(), live.copy(), lengths.copy(), success.copy()
        n_prev, n_track, n_loglik, n_positives = prev.copy(), track.copy(), loglik.copy(), positives.copy()
        for j in range(width):
            rows = rows_all[n_live > j]
            if rows.size == 0:
                break
            cand = order[rows, j]
            parent, ci, dst = cand // k, cand % k, slots[rows, j]
            y, c, end = label[rows, parent, ci], draw[rows, parent, ci], stops[rows, parent, ci]
            n_history[rows, dst] = history[rows, parent]
            n_history[rows, dst, t] = y
            step_ll = log_init[:, y].T if t == 0 else log_next[:, prev[rows, parent], y].T
            n_loglik[rows, dst] = loglik[rows, parent] + step_ll
            n_positives[rows, dst] = positives[rows, parent] + (said[rows, parent, ci] == 2) * ~failed[rows, parent, ci]
            n_prev[rows, dst], n_track[rows, dst] = y, c
            n_live_slots[rows, dst] = ~end
            n_lengths[rows, dst] = np.where(end, t + 1, 0)
            n_success[rows, dst] = end & (c == 1) & (y != 0)
        history, live, lengths, success = n_history, n_live_slots, n_lengths, n_success
        prev, track, loglik, positives = n_prev, n_track, n_loglik, n_positives
    if live.any():  # cannot happen (the longest track's hazard is 1 at its maximum); kept for safety
        lengths[live], success[live] = top, (track[live] == 1) & (prev[live] != 0)
    # sample i of a unit is its i-th branch to finish (as the live beam numbers them)
    order = np.argsort(lengths.astype(np.int64) * width + np.arange(width), axis=1, kind="stable")
    pick = (rows_all[:, None], order)
    history, lengths, success = history[pick], lengths[pick], success[pick]
    rows = units * width
    flat_len = lengths.reshape(rows)
    labels = history.reshape(rows, top)[:, :int(flat_len.max())]
    flat_success = success.reshape(rows)
    answers = _answers(flat_success, wrong_answers, rng)
    per_task = 1 if method == "beam" else n

    def by_task(x: np.ndarray) -> np.ndarray:
        return x.reshape(n_tasks, per_task).sum(axis=1)

    trajs = SimTrajectories(n_tasks, n, labels, flat_len, flat_success, answers)
    return SearchResult(trajs, by_task(agent_calls), by_task(agent_calls), by_task(judge_failures),
                        by_task(agent_tokens), by_task(judge_tokens))


def _answers(success: np.ndarray, wrong_answers: int, rng: np.random.Generator) -> np.ndarray | None:
    """Final answers as bon.sim.model.generate gives them: 0 when successful, else a Zipf-weighted wrong one."""
    if wrong_answers <= 0:
        return None
    weights = 1.0 / np.arange(1, wrong_answers + 1)
    wrong = 1 + np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(success.size), side="right")
    return np.where(success, 0, np.minimum(wrong, wrong_answers))
