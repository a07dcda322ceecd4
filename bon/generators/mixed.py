"""Mixed-model rollouts: the N samples of every task spread over several models.

Sample s of a task is drawn by model `assign(n, weights)[s]`, the same for every task. The
assignment is a fixed sequence whose every prefix follows the weights as closely as possible, so
the first k samples are a mixture too and best-of-k curves over sample prefixes stay meaningful.

`MixedGenerator` wraps one `AgentGenerator` per model (each with its own `LLMClient`, so each
model keeps its own limits, prices and cache entries) and offers the interface the pipeline uses
on a single `AgentGenerator`. Samples keep their global index: seeds (`seed + sample`) and
cache keys stay distinct across models, and all samples go to one trajectory store, so resume
works as for one model. Each trajectory's metadata records the model that drew it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

from bon import config
from bon.build import CLIENT_FIELDS
from bon.config import LLMGenerator
from bon.errors import BonError
from bon.fmt import is_number
from bon.generators.agent import FAILED_STOPS, AgentGenerator
from bon.generators.store import TrajectoryStore
from bon.llm import LLMClient, Stats
from bon.types import Task, Trajectory

log = logging.getLogger(__name__)


def _shares(weights: Sequence[float]) -> list[Fraction]:
    """The weights as exact fractions of their sum (exact, so equal weights tie exactly)."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise BonError(f"generator.mix must be a list of weights, one per model in generator.models, got {weights!r}")
    if not weights:
        raise BonError("generator.mix needs one weight per model in generator.models, got none")
    if not all(is_number(w) for w in weights):
        raise BonError(f"generator.mix weights must be finite numbers, got {list(weights)!r}")
    if any(w < 0 for w in weights):
        raise BonError(f"generator.mix weights must be >= 0, got {list(weights)!r}")
    total = sum(Fraction(w) for w in weights)
    if total == 0:
        raise BonError(f"generator.mix weights are all zero ({list(weights)!r}); give at least one model a "
                       f"positive weight")
    return [Fraction(w) / total for w in weights]


def assign(n: int, weights: Sequence[float]) -> list[int]:
    """The model index drawing each of samples 0..n-1.

    Equal weights give round robin (sample s -> s % M). Otherwise, after every prefix of k samples
    each model m has drawn floor(k p_m) or ceil(k p_m) samples, p_m being its share of the weights
    (Tijdeman's rule for the chairman assignment problem: among the models that are behind their
    share by at least 1/(2M-2), the one whose next turn is due soonest; ties to the lower index).
    A model of weight 0 draws nothing. The sequence is prefix-stable: assign(k, w) == assign(n, w)[:k].
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BonError(f"generator.n must be an integer >= 0, got {n!r}")
    shares = _shares(weights)
    drawing = [m for m, p in enumerate(shares) if p > 0]
    if len(drawing) == 1:
        return [drawing[0]] * n
    slack = Fraction(1, 2 * len(drawing) - 2)
    counts = [0] * len(shares)
    order = []
    for t in range(1, n + 1):
        behind = [m for m in drawing if t * shares[m] - counts[m] >= slack]  # never empty (Tijdeman 1980)
        m = min(behind, key=lambda i: ((1 - slack + counts[i]) / shares[i], i))
        counts[m] += 1
        order.append(m)
    return order


PER_MODEL_FIELDS = ("model", "temperature", *CLIENT_FIELDS)


def model_configs(cfg: LLMGenerator | Mapping[str, Any]) -> list[LLMGenerator]:
    """One generator config per entry of `generator.models`: the preset's settings, with the entry's overrides.

    An entry is a model name ("deepseek/deepseek-chat") or a mapping with `model` and any client option
    (api_base, api_key_env, concurrency, rpm, prices, ...) or temperature. Everything else (n, tools,
    max_steps, system prompt, seed) is the mixture's and the same for every model, so the models are
    compared on equal terms. The returned configs carry no `models` or `mix`.
    """
    cfg = config.typed(LLMGenerator, cfg, "generator.")
    entries = cfg.models
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence) or not entries:
        raise BonError(f"generator.models must be a non-empty list of model names or of mappings with a model, "
                       f"got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and entry:
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or not entry.get("model"):
            raise BonError(f"generator.models[{i}] must be a model name or a mapping with a model, got {entry!r}")
        unknown = sorted(set(entry) - set(PER_MODEL_FIELDS))
        if unknown:
            raise BonError(f"generator.models[{i}] sets {', '.join(map(str, unknown))}, which is the same for every "
                           f"model; a model entry may set: {', '.join(PER_MODEL_FIELDS)}")
        config.check_options(LLMGenerator, entry, f"generator.models[{i}].")
        out.append(dataclasses.replace(cfg, models=None, mix=None, **entry))
    return out


class MixedClients:
    """The mixture's clients seen as one, for progress bars and plan lines.

    `model` names every model ("a + b"); `stats` is the sum of their running totals (a new object
    on each access: record calls on the clients themselves)."""

    def __init__(self, clients: Sequence[LLMClient]) -> None:
        self.clients = list(clients)

    @property
    def model(self) -> str:
        return " + ".join(c.model for c in self.clients)

    @property
    def stats(self) -> Stats:
        total = Stats()
        for client in self.clients:
            total = total.merge(client.stats)
        return total


class MixedGenerator:
    """N samples per task, drawn by several models in the proportions of `weights` (None: equal).

    Each inner generator's own `n` is ignored (this `n` counts all samples); its `concurrency`
    bounds its own model's trajectories in flight, so a slow model never holds back a fast one.
    `retry_failed` as in AgentGenerator. A stored sample drawn by another model than the current
    assignment gives it (say, after `generator.mix` changed) is reused as it is, with a warning.
    """

    def __init__(self, generators: Sequence[AgentGenerator], n: int, weights: Sequence[float] | None = None,
                 retry_failed: bool = True) -> None:
        if not generators:
            raise BonError("generator.models must name at least one model")
        models = [g.client.model for g in generators]
        twice = sorted({m for m in models if models.count(m) > 1})
        if twice:
            raise BonError(f"generator.models lists {', '.join(twice)} more than once; each model may appear "
                           f"once (give it a larger generator.mix weight instead)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BonError(f"generator.n must be an integer >= 1, got {n!r}")
        weights = [1.0] * len(generators) if weights is None else list(weights)
        if len(weights) != len(generators):
            raise BonError(f"generator.mix has {len(weights)} weight(s) but generator.models names "
                           f"{len(generators)} model(s) ({', '.join(models)}); give one weight per model")
        self.generators = list(generators)
        self.weights = weights
        self.n = n
        self.order = assign(n, weights)
        self.retry_failed = retry_failed
        self.client = MixedClients([g.client for g in generators])
        # AgentGenerator.generate_all admits up to `concurrency` trajectories; here every one is admitted
        # there and waits for its own model's limit in `generate` (so that clock starts only then).
        self.concurrency = sys.maxsize
        self._admit: list[asyncio.Semaphore] = []
        self._admit_loop: asyncio.AbstractEventLoop | None = None
        self._warned = False

    @property
    def models(self) -> list[str]:
        """The model names, in the order of the weights."""
        return [g.client.model for g in self.generators]

    def model_index(self, sample: int) -> int:
        """Which generator draws `sample` (also beyond `n`: the assignment is prefix-stable)."""
        if sample < len(self.order):
            return self.order[sample]
        return assign(sample + 1, self.weights)[sample]

    def generator_for(self, sample: int) -> AgentGenerator:
        return self.generators[self.model_index(sample)]

    def samples_per_model(self) -> dict[str, int]:
        """How many of each task's n samples every model draws."""
        return {model: self.order.count(m) for m, model in enumerate(self.models)}

    def _admission(self, m: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._admit_loop is not loop:  # semaphores belong to one event loop
            self._admit = [asyncio.Semaphore(g.concurrency or 1) for g in self.generators]
            self._admit_loop = loop
        return self._admit[m]

    async def generate(self, task: Task, sample: int) -> Trajectory:
        """One episode by the model the assignment gives `sample`, once that model has room for it."""
        m = self.model_index(sample)
        async with self._admission(m):
            return await self.generators[m].generate(task, sample)

    async def first_call_cached(self, task: Task, sample: int) -> bool:
        return await self.generator_for(sample).first_call_cached(task, sample)

    def todo(self, tasks: Iterable[Task], stored: dict[tuple[str, int], Trajectory]) -> list[tuple[Task, int]]:
        """The (task, sample) pairs to generate: those not in `stored`, or failed there (retry_failed)."""
        tasks = list(tasks)
        todo = [(t, s) for t in tasks for s in range(self.n) if not self._reusable(stored.get((t.id, s)))]
        self._warn_reassigned(tasks, stored, {(t.id, s) for t, s in todo})
        return todo

    def _reusable(self, stored: Trajectory | None) -> bool:
        if stored is None:
            return False
        return not (self.retry_failed and stored.metadata.get("stop_reason") in FAILED_STOPS)

    def _warn_reassigned(self, tasks: list[Task], stored: dict[tuple[str, int], Trajectory],
                         todo: set[tuple[str, int]]) -> None:
        if self._warned:
            return
        moved = [(t.id, s, str(stored[(t.id, s)].metadata.get("model")), self.models[self.order[s]])
                 for t in tasks for s in range(self.n)
                 if (t.id, s) in stored and (t.id, s) not in todo
                 and stored[(t.id, s)].metadata.get("model") != self.models[self.order[s]]]
        if moved:
            self._warned = True
            task_id, sample, was, now = moved[0]
            log.warning("%d stored sample(s) were drawn by another model than generator.models/generator.mix now "
                        "assign (e.g. task %s sample %d: %s, now %s); they are reused as they are",
                        len(moved), task_id, sample, was, now)

    def files_dir(self, task: Task) -> Path | None:
        """Materialise the task's attachments for every model that draws samples (each has its own copy)."""
        dirs = [self.generators[m].files_dir(task) for m in sorted(set(self.order))]
        return dirs[0]

    async def generate_all(self, tasks: Iterable[Task], store: TrajectoryStore | str | os.PathLike[str] | None = None,
                           progress: bool = True) -> list[Trajectory]:
        """`n` trajectories per task, ordered by task then sample: AgentGenerator's loop (store, resume,
        retry_failed, progress bar, one-line error for a dead endpoint) over this mixture's samples."""
        return await AgentGenerator.generate_all(cast(AgentGenerator, self), tasks, store=store, progress=progress)

    async def aclose(self) -> None:
        """Close every model's tools and attachment copies."""
        for generator in self.generators:
            await generator.aclose()


__all__ = ["MixedClients", "MixedGenerator", "assign", "model_configs"]
