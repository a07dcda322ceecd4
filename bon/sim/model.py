"""The simulator's generative model, vectorised over every candidate of every task.

Labels are stored as int8 in a [candidates, max_steps] array (state index 0, 1, 2 for
labels -1, 0, +1; -1 marks padding). Candidates are processed sorted by length so the
chain only touches steps that exist: the work is proportional to the number of steps.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from bon.candidates import SCHEMA
from bon.errors import BonError

LABELS = np.array([-1, 0, 1], dtype=np.int8)
INTERNED = ("task_id", "subset", "judge", "answer")  # string columns of the simulated table kept as Categorical
TABLE_SCHEMA: dict[str, type[pl.DataType]] = {**SCHEMA, **dict.fromkeys(INTERNED, pl.Categorical)}
PAD = -1


def _stochastic(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape or np.any(arr < 0) or not np.allclose(arr.sum(axis=-1), 1.0, atol=1e-3):
        raise BonError(f"{name} must be {'x'.join(map(str, shape))} probabilities summing to 1 per row "
                       f"(order -1, 0, +1), got {value!r}")
    return arr / arr.sum(axis=-1, keepdims=True)


def _known_fields(cfg: Any, valid: tuple[str, ...], where: str) -> Mapping[str, Any]:
    """A profile's mapping, refused when it is not one or names a field the simulator would ignore."""
    if not isinstance(cfg, Mapping):
        raise BonError(f"{where} must be a mapping with {', '.join(valid)}; got {cfg!r}")
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise BonError(f"{where} has no field {unknown[0]!r}; valid: {', '.join(valid)}")
    return cfg


@dataclass(frozen=True)
class Chain:
    """How one kind of attempt (on track or not) unfolds: first label, transitions, length."""

    initial: np.ndarray  # [3] over labels -1, 0, +1
    transition: np.ndarray  # [3, 3] row = previous label
    length_quantiles: np.ndarray  # step counts at evenly spaced quantiles 0..100%

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str) -> Chain:
        cfg = _known_fields(cfg, ("initial", "transition", "length_quantiles"), where)
        q = np.asarray(cfg["length_quantiles"], dtype=float)
        if q.ndim != 1 or q.size < 2 or np.any(np.diff(q) < 0) or q[0] < 1:
            raise BonError(f"{where}.length_quantiles must be a non-decreasing list of step counts >= 1")
        return cls(_stochastic(f"{where}.initial", cfg["initial"], (3,)),
                   _stochastic(f"{where}.transition", cfg["transition"], (3, 3)), q)

    def lengths(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        grid = np.linspace(0.0, 1.0, self.length_quantiles.size)
        return np.floor(np.interp(u, grid, self.length_quantiles + 0.999)).astype(np.int32).clip(1)


@dataclass(frozen=True)
class Profile:
    """A benchmark's shape: task difficulty spread and the two chains, measured from real labels."""

    name: str
    task_alpha: float  # per-task chance of an on-track attempt ~ Beta(alpha, beta)
    task_beta: float
    on_track: Chain
    off_track: Chain

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> Profile:
        where = f"dataset.profiles.{name}"
        cfg = _known_fields(cfg, ("task_alpha", "task_beta", "on_track", "off_track", "measured"), where)
        try:
            return cls(name, float(cfg["task_alpha"]), float(cfg["task_beta"]),
                       Chain.from_config(cfg["on_track"], f"{where}.on_track"),
                       Chain.from_config(cfg["off_track"], f"{where}.off_track"))
        except KeyError as exc:
            raise BonError(f"{where} is missing {exc.args[0]!r}") from None


@dataclass(frozen=True)
class JudgeModel:
    """A simulated PRM+ORM: per-step confusion over true labels, a pull towards +1, outcome rates."""

    name: str
    confusion: np.ndarray  # [3, 3]: row = true label, column = predicted label
    positive_bias: float = 0.0  # extra share of steps labelled +1 whatever their truth
    orm_tpr: float = 0.8  # P(final +1 | success)
    orm_fpr: float = 0.2  # P(final +1 | failure)
    orm_missing: float = 0.0  # P(no final label)
    fail_rate: float = 0.0  # P(the whole judge call fails)

    def __post_init__(self) -> None:
        object.__setattr__(self, "confusion", _stochastic("judge.confusion", self.confusion, (3, 3)))
        for field in ("positive_bias", "orm_tpr", "orm_fpr", "orm_missing", "fail_rate"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise BonError(f"judge.{field} must be a probability in [0, 1], got {value!r}")

    @property
    def effective_confusion(self) -> np.ndarray:
        """The confusion after the positive bias is applied."""
        return (1 - self.positive_bias) * self.confusion + self.positive_bias * np.array([0.0, 0.0, 1.0])

    def step_accuracy(self, true_share: np.ndarray) -> float:
        """Expected StepAcc on steps whose true labels have shares `true_share` (-1, 0, +1)."""
        return float((1 - self.fail_rate) * np.dot(true_share, np.diag(self.effective_confusion)))


@dataclass
class SimTrajectories:
    """Candidates in task-major order: row r is task r // n, sample r % n."""

    n_tasks: int
    n_candidates: int
    labels: np.ndarray  # int8 [rows, max_steps], state index 0/1/2 or PAD
    lengths: np.ndarray
    success: np.ndarray
    answers: np.ndarray | None  # int code per row; 0 is the correct answer


def sample_tasks(profile: Profile, n_tasks: int, rng: np.random.Generator) -> np.ndarray:
    """Each task's chance that an attempt is on track."""
    return rng.beta(profile.task_alpha, profile.task_beta, n_tasks)


def _run_chain(chain: Chain, rows: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
               rng: np.random.Generator) -> None:
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    active_counts = np.searchsorted(-lengths[order], -np.arange(1, labels.shape[1] + 1), side="right")
    cum_init = np.cumsum(chain.initial)
    cum_next = np.cumsum(chain.transition, axis=1)
    state = np.searchsorted(cum_init, rng.random(order.size) * cum_init[-1], side="right").astype(np.int8)
    labels[order, 0] = state
    for step in range(1, labels.shape[1]):
        k = active_counts[step]
        if k == 0:
            break
        u = rng.random(k)
        cum = cum_next[state[:k]]
        state = ((u > cum[:, 0]).astype(np.int8) + (u > cum[:, 1])).astype(np.int8)
        labels[order[:k], step] = state


def generate(profile: Profile, task_p: np.ndarray, n_candidates: int, rng: np.random.Generator,
             wrong_answers: int = 3) -> SimTrajectories:
    """Sample N candidates per task: on track or not, a length, a label chain, success, an answer.

    Success needs an on-track attempt that ends without an uncorrected error (last label not -1).
    Wrong attempts answer one of `wrong_answers` wrong answers (Zipf-weighted), so majority vote
    has something to work with; `wrong_answers=0` gives no answers at all.
    """
    n_tasks = task_p.size
    rows = n_tasks * n_candidates
    on_track = rng.random(rows) < np.repeat(task_p, n_candidates)
    lengths = np.empty(rows, dtype=np.int32)
    lengths[on_track] = profile.on_track.lengths(rng, int(on_track.sum()))
    lengths[~on_track] = profile.off_track.lengths(rng, int((~on_track).sum()))
    labels = np.full((rows, int(lengths.max())), PAD, dtype=np.int8)
    _run_chain(profile.on_track, np.flatnonzero(on_track), lengths, labels, rng)
    _run_chain(profile.off_track, np.flatnonzero(~on_track), lengths, labels, rng)
    last = labels[np.arange(rows), lengths - 1]
    success = on_track & (last != 0)
    answers = None
    if wrong_answers > 0:
        weights = 1.0 / np.arange(1, wrong_answers + 1)
        wrong = 1 + np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(rows), side="right")
        answers = np.where(success, 0, np.minimum(wrong, wrong_answers))
    return SimTrajectories(n_tasks, n_candidates, labels, lengths, success, answers)


BLOCK_CELLS = 1 << 22  # label cells per block of rows: ~16 MB per float32 temporary


def _row_blocks(labels: np.ndarray) -> list[slice]:
    """Slices of consecutive rows of about BLOCK_CELLS cells each (numpy's random stream does not depend on
    how its draws are split, so blockwise work gives the very values of one big draw)."""
    step = max(1, BLOCK_CELLS // max(labels.shape[1], 1))
    return [slice(i, i + step) for i in range(0, labels.shape[0], step)]


def judge(model: JudgeModel, trajs: SimTrajectories,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted step labels (same layout, PAD kept), final labels (+1/-1/0 for none) and failed flags."""
    cum = np.cumsum(model.effective_confusion, axis=1).astype(np.float32)
    predicted = np.empty_like(trajs.labels)
    for part in _row_blocks(trajs.labels):  # float temporaries one block at a time: the same draws, less memory
        u = rng.random(trajs.labels[part].shape, dtype=np.float32)
        truth = trajs.labels[part]  # PAD (-1) picks the last row here and is restored below
        block = (u > cum[truth, 0]).astype(np.int8)
        block += u > cum[truth, 1]
        block[truth == PAD] = PAD
        predicted[part] = block
    rows = trajs.success.size
    positive = rng.random(rows) < np.where(trajs.success, model.orm_tpr, model.orm_fpr)
    final = np.where(positive, 1, -1).astype(np.int8)
    final[rng.random(rows) < model.orm_missing] = 0
    failed = rng.random(rows) < model.fail_rate
    final[failed] = 0
    return predicted, final, failed


def candidate_table(trajs: SimTrajectories, predicted: np.ndarray, final: np.ndarray, failed: np.ndarray,
                    judge_name: str, subset: str) -> pl.DataFrame:
    """The candidate table the selectors read; step k sits at message index 2 + 2k (system, user, then turns).

    Built column by column from int32 arrays (the table's own types, so nothing is cast). Its string columns
    are Categorical (INTERNED): each distinct task id, answer, subset and judge name is stored once and every
    row holds a 4-byte code, so a run's peak memory is not spent on per-row strings.
    """
    rows = trajs.success.size
    n = trajs.lengths.astype(np.int32, copy=False)
    ok = ~failed
    positive, negative, first = (np.empty(rows, dtype=np.int32) for _ in range(3))
    for part in _row_blocks(predicted):  # boolean temporaries one block at a time
        is_error = predicted[part] == 0  # padding is PAD, never 0
        positive[part] = (predicted[part] == 2).sum(axis=1)
        negative[part] = is_error.sum(axis=1)
        first[part] = is_error.argmax(axis=1)
    has_error = (negative > 0) & ok
    positive[failed] = 0
    negative[failed] = 0
    clean = np.divide(first, n, where=has_error, out=np.ones(rows))  # share of steps before the first error
    first *= 2
    first += 2  # the message index of step k is 2 + 2k
    task = np.repeat(np.arange(trajs.n_tasks, dtype=np.int32), trajs.n_candidates)  # rows are task-major
    columns = {
        "task_id": _coded(np.arange(trajs.n_tasks).astype(str), "synthetic:", task),
        "subset": pl.repeat(subset, rows, eager=True, dtype=pl.Categorical),
        "sample": np.tile(np.arange(trajs.n_candidates, dtype=np.int32), trajs.n_tasks),
        "judge": pl.repeat(judge_name, rows, eager=True, dtype=pl.Categorical),
        "n_steps": n,
        "n_pos": positive,
        "n_neg": pl.Series(negative).set(pl.Series(failed), None),
        "n_missing": np.where(ok, np.int32(0), n),
        "pos_ratio": positive / n,
        "first_error": pl.Series(first).set(pl.Series(~has_error), None),
        "clean_prefix": pl.Series(clean).set(pl.Series(failed), None),
        "final_pred": pl.Series(final).set(pl.Series(final == 0), None),
        "judge_ok": ok,
        "answer": (pl.repeat(None, rows, dtype=pl.Categorical, eager=True) if trajs.answers is None
                   else _coded(np.arange(int(trajs.answers.max()) + 1).astype(str), "answer-", trajs.answers)),
        "success": trajs.success,
    }
    return pl.DataFrame(columns, schema=TABLE_SCHEMA)


def _coded(names: np.ndarray, prefix: str, codes: np.ndarray) -> pl.Series:
    """prefix + names[code] per row, as a Categorical: each distinct string is stored once."""
    return pl.Series(np.char.add(prefix, names), dtype=pl.Categorical).gather(codes)
