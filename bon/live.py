"""The live pipeline: tasks -> litellm agent (N samples) -> litellm judge -> candidate table.

Each stage persists its output in the run directory (trajectories.jsonl, judgements.jsonl)
and every LLM response goes to the shared cache, so a killed run resumes where it stopped
and re-running a finished one (say, with another selector) makes no calls at all.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from bon import build, candidates
from bon import verdicts as stage
from bon.config import Intervention, LLMGenerator, ReplayGenerator
from bon.console import run_logging, say, say_failures
from bon.datasets.taskset import TaskSet
from bon.datasets.taskset import load as taskset_of
from bon.errors import BonError
from bon.plan import Live
from bon.selectors import Selector
from bon.types import Judgement, Trajectory

NOT_JUDGED = "not judged: generation failed before any step"


def _write_judgements(path: Path, trajectories: list[Trajectory], judgements: list[Judgement],
                      fingerprints: list[str | None]) -> None:
    """The run's judgements, each (task, sample) once in trajectory order, replacing what the judge stage
    appended (bon.judges.store)."""
    from bon.judges import store as judgement_store

    judgement_store.write(path, zip(trajectories, judgements, fingerprints))


async def _run(taskset: TaskSet, chosen: Live, generator_cfg: LLMGenerator | ReplayGenerator,
               out_dir: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    from bon.generators import intervention, store
    from bon.llm.guards import Budget

    judge_cfg, icfg, selector = chosen.judge, chosen.intervention, chosen.selector
    helper_cfg = build.helper_config(icfg)
    searching = isinstance(generator_cfg, LLMGenerator) and generator_cfg.search != "none"
    online_judge_cfg = judge_cfg if icfg.policy in intervention.JUDGED or searching else None
    budget = Budget.from_options(chosen.budget)
    gen_cfgs = build.generator_configs(generator_cfg) if isinstance(generator_cfg, LLMGenerator) else []
    roles: list[tuple[str, build.ClientOptions | None]] = [
             *((f"generator.models[{i}]" if generator_cfg.models else "generator", c)  # type: ignore[union-attr]
               for i, c in enumerate(gen_cfgs)),
             ("judge", judge_cfg), ("intervention.helper", helper_cfg),
             ("judge", online_judge_cfg), ("judge", judge_cfg if selector is not None and selector.verdicts else None)]
    with run_logging(out_dir):
        async with build.clients(chosen.cache, *roles, budget=budget) as built:
            gen_clients = built[:len(gen_cfgs)]
            judge_client, helper_client, online_client, compare_client = built[len(gen_cfgs):]
            clients = [c for c in built if c is not None]
            _check_prices(clients, budget)
            judge = build.judge(judge_cfg, judge_client)
            if isinstance(generator_cfg, ReplayGenerator):
                path = Path(str(generator_cfg.path)).expanduser()
                trajectories = [t for t in store.replay(path) if taskset.keeps(t.task_id)]  # dataset.shard
                say(f"plan: judge {len(trajectories)} trajectories replayed from {path}")
                _say_clients(clients, budget)
            else:
                online_judge = (build.judge(online_judge_cfg, online_client)
                                if online_client is not None and online_judge_cfg is not None else None)
                policy = None if searching else intervention.policy_from_config(icfg, online_judge)
                helper = build.helper(icfg, helper_client) if policy is not None and policy.hands_over else None
                generator = build.agent(generator_cfg, gen_cfgs, gen_clients, chosen.tools, policy, helper,
                                        chosen.dataset.tools, score=taskset.score,
                                        search_judge=online_judge if searching else None)
                store_path = Path(str(generator_cfg.store or out_dir / "trajectories.jsonl")).expanduser()
                try:
                    await _say_generation_plan(generator, list(taskset.tasks), store_path, clients, budget)
                    trajectories = await generator.generate_all(taskset.tasks, store=store_path)
                finally:
                    await generator.aclose()
                say_failures("generation", generator.client.stats)
            trajectories = taskset.scored(trajectories)  # scoring is the dataset's, for generated and replayed alike
            judge_store = Path(str(judge_cfg.store or out_dir / "judgements.jsonl")).expanduser()
            judgements, fingerprints, reused = await _judge_steps(judge, trajectories, judge_store)
            say_failures("judging", judge_client.stats)
            if compare_client is not None and selector is not None:
                verdicts, tally = await stage.decide(stage.comparing_judge(selector, judge_cfg, compare_client),
                                                     trajectories, out_dir)
                say_failures("selection", compare_client.stats)
    _write_judgements(out_dir / "judgements.jsonl", trajectories, judgements, fingerprints)
    table = candidates.table(candidates.candidate(t, j, str(chosen.dataset.subset))
                             for t, j in zip(trajectories, judgements))
    no_step = [not t.step_indices for t in trajectories]
    table = table.with_columns(pl.Series("generation_failed", no_step, dtype=pl.Boolean),
                               pl.Series("model", [t.metadata.get("model") for t in trajectories], dtype=pl.String))
    usage: dict[str, Any] = {"judging": judge_client.stats.to_dict()}
    if compare_client is not None and selector is not None:
        table = stage.with_picks(table, verdicts)
        usage["selection"] = {**compare_client.stats.to_dict(), **tally, "fallback": selector.fallback}
    if gen_clients:
        stops = collections.Counter(str(t.metadata.get("stop_reason")) for t in trajectories)
        usage = {"generation": {**generator.client.stats.to_dict(), "stop_reasons": dict(stops),
                                "generation_failed": sum(no_step)}, **usage}
        if len(gen_clients) > 1:  # a mixture: what each model's calls cost
            usage["generation"]["by_model"] = {c.model: c.stats.to_dict() for c in gen_clients}
        if helper_client is not None:
            usage["intervention"] = helper_client.stats.to_dict()
        if online_client is not None:
            usage["search judging" if searching else "online judging"] = online_client.stats.to_dict()
        if icfg.policy != "none":
            usage["collaboration"] = {"policy": icfg.policy, "budget": icfg.budget,
                                      **intervention.reward_summary(trajectories, float(icfg.lambda_))}
    usage["compute"] = _compute(trajectories, gen_clients, judge_client, helper_client, online_client,
                                compare_client, generator_cfg, icfg, selector, reused, searching)
    if budget is not None:
        usage["budget"] = budget.to_dict()
    stopped = _stopped(trajectories, judgements, no_step, budget)
    if stopped is not None:
        usage["stopped"] = stopped
    return table, usage


def _compute(trajectories: list[Trajectory], gen_clients: list[Any], judge_client: Any, helper_client: Any,
             online_client: Any, compare_client: Any, generator_cfg: LLMGenerator | ReplayGenerator,
             icfg: Intervention, selector: Selector | None, reused: int, searching: bool) -> dict[str, Any]:
    """What the run's method cost per task (bon.compute), named after what it did."""
    from bon import compute

    stages = {"generation": compute.generation(trajectories)} if gen_clients or trajectories else {}
    for name, client in (("online judging", None if searching else online_client), ("intervention", helper_client),
                         ("judging", judge_client), ("selection", compare_client)):
        if client is not None:
            stages[name] = compute.from_stats(client.stats.to_dict())
    parts = []
    method = generator_cfg.search if isinstance(generator_cfg, LLMGenerator) else "none"
    if isinstance(generator_cfg, LLMGenerator) and method != "none":
        parts.append(f"{method} k={generator_cfg.search_k} n={generator_cfg.n}")
    elif isinstance(generator_cfg, LLMGenerator) and generator_cfg.models:
        parts.append("mixture " + " + ".join(str(m if isinstance(m, str) else m.get("model"))
                                               for m in generator_cfg.models))
    if icfg.policy != "none":
        parts.append(f"intervention={icfg.policy}")
    if selector is not None:
        parts.append(selector.name)
    # independent samples price a best-of-k curve; a beam's trajectories and a comparing judge's verdict do not
    curve = method != "beam" and not (selector is not None and selector.verdicts)
    return compute.summary(trajectories, stages, " · ".join(parts) or "best-of-n", curve, reused)


async def _judge_steps(judge: Any, trajectories: list[Trajectory],
                       store_path: Path) -> tuple[list[Judgement], list[str | None], int]:
    """Judge the trajectories that have a step, with each one's fingerprint (None: not judged) and how many
    judgements the store already held (reused: no call made).

    One without any step (its generation failed before the first reply) is a failed candidate, not billed
    to the judge: its judgement says so. A judgement the store already holds for the same trajectory and
    judge settings is reused unless it failed; each new one is appended to the store as it finishes."""
    from bon.generators.agent import FAILED_STOPS
    from bon.judges.store import JudgementStore, reusable

    store = JudgementStore(store_path)
    stored = store.load()
    fingerprints = [judge.fingerprint(t) if t.step_indices else None for t in trajectories]
    done: dict[tuple[str, int], Judgement] = {}
    for t, fingerprint in zip(trajectories, fingerprints):
        if fingerprint is None:
            why = t.metadata.get("error_kind") if t.metadata.get("stop_reason") in FAILED_STOPS else None
            done[(t.task_id, t.sample)] = Judgement(judge.name, status="failed",
                                                    reason=NOT_JUDGED + (f" ({why})" if why else ""))
        elif (j := reusable(stored, (t.task_id, t.sample, judge.name, fingerprint))) is not None:
            done[(t.task_id, t.sample)] = j
    todo = [t for t in trajectories if (t.task_id, t.sample) not in done]
    skipped = sum(f is None for f in fingerprints)
    reused = len(trajectories) - skipped - len(todo)
    hits = 0
    for t in todo:
        hits += await judge.cached(t)
    calls = judge.samples * len(todo)
    kept = f"{reused} reused from {store_path}, " if reused else ""
    note = f"; {skipped} without a step (generation failed) are not judged" if skipped else ""
    say(f"judge {judge.name}: {len(trajectories) - skipped} trajectories, {kept}{calls} first calls of which "
         f"the cache answers {hits}{note}")
    key_of = {(t.task_id, t.sample): f for t, f in zip(trajectories, fingerprints)}

    async def save(t: Trajectory, j: Judgement) -> None:
        await store.aappend(t, j, key_of[(t.task_id, t.sample)])

    for t, j in zip(todo, await judge.judge_all(todo, on_done=save)):
        done[(t.task_id, t.sample)] = j
    return [done[(t.task_id, t.sample)] for t in trajectories], fingerprints, reused


def _stopped(trajectories: list[Trajectory], judgements: list[Judgement], no_step: list[bool],
             budget: Any) -> dict[str, Any] | None:
    """Why the run's results are incomplete enough to exit non-zero: the budget, or everything failed."""
    if budget is not None and budget.stopped:
        return {"by": "budget", "message": f"{budget.why()}; no further calls were made, results are partial"}
    if trajectories and all(no_step):
        kinds = collections.Counter(str(t.metadata.get("error_kind") or t.metadata.get("stop_reason"))
                                    for t in trajectories)
        return {"by": "failures", "message": f"every generation failed ({_counts(kinds)}); details in run.log"}
    judged = [j for j, skip in zip(judgements, no_step) if not skip]
    if judged and all(j.failed for j in judged):
        kinds = collections.Counter(j.reason for j in judged)
        return {"by": "failures", "message": f"every judgement failed ({_counts(kinds)}); details in run.log"}
    return None


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in counter.most_common())


# -- what the user sees: the plan before the first call, one line per kind of failure, logs in run.log


def _limits(client: Any) -> str:
    lim = client.limiter
    rpm = f"rpm {lim.rpm}" + (f" per {lim.period:g} s" if lim.period != 60 else "") if lim.rpm else "no rpm limit"
    return f"{client.model} at {client.endpoint} (concurrency {lim.concurrency}, {rpm})"


def _say_clients(clients: list[Any], budget: Any) -> None:
    seen = set()
    for client in clients:
        if id(client) not in seen:
            seen.add(id(client))
            say(f"  {client.role}: {_limits(client)}")
    if budget is not None:
        say(f"  budget: {'no USD cap' if budget.usd is None else f'${budget.usd:g}'}, "
             f"{'no call cap' if budget.calls is None else f'{budget.calls} API calls'}")
    unpriced: dict[str, list[Any]] = {}
    for client in clients:
        if not client.price_known():
            unpriced.setdefault(client.model, []).append(client)
    for same_model in unpriced.values():
        roles = list(dict.fromkeys(c.role for c in same_model))
        say(f"  {same_model[0].unpriced_hint(roles)}")
    for client in clients:
        client.unpriced_noted = True  # said here, once: not again on the first response


async def _say_generation_plan(generator: Any, tasks: list[Any], store_path: Path, clients: list[Any],
                               budget: Any) -> None:
    from bon.generators import store

    stored = store.load(store_path)
    todo = generator.todo(tasks, stored)
    reused = len(tasks) * generator.n - len(todo)
    hits = 0
    for task, sample in todo:
        hits += await generator.first_call_cached(task, sample)
    say(f"plan: {len(tasks)} tasks x {generator.n} samples = {len(tasks) * generator.n} trajectories: {reused} reused "
         f"from {store_path}, {len(todo)} to generate; the cache answers {hits} of their {len(todo)} first calls "
         f"(later calls depend on the replies)")
    if len(getattr(generator, "models", [])) > 1:
        per_model = generator.samples_per_model()
        say(f"  mixture: {', '.join(f'{m} draws {k} of {generator.n}' for m, k in per_model.items())} samples per task")
    _say_clients(clients, budget)


def _check_prices(clients: list[Any], budget: Any) -> None:
    """A USD budget cannot be kept for a model whose price is unknown: refuse before any call."""
    if budget is None or budget.usd is None:
        return
    for client in clients:
        if not client.price_known():
            raise BonError(f"budget.usd is set but model {client.model} has no known price, so its spending could "
                           f"not be counted; {client.price_setting()} or use budget.calls instead")


def _write_submission(out_dir: Path, table: pl.DataFrame) -> Path:
    """Without reference answers there is nothing to score: write each task's picked answer instead.

    The pick is the ORM+PRM two-stage choice, the same for every selector, so the file is stable."""
    from bon.selectors import select, two_stage

    picks = select(two_stage, table).select("task_id", "picked_sample")
    chosen = table.join(picks, left_on=["task_id", "sample"], right_on=["task_id", "picked_sample"])
    path = out_dir / "submission.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for task_id, answer in chosen.select("task_id", "answer").unique("task_id", maintain_order=True).iter_rows():
            out.write(json.dumps({"task_id": task_id, "model_answer": answer or ""}, ensure_ascii=False) + "\n")
    return path


def _check_replay_matches(path: Path, loaded: list[Any], dataset: str,
                          keeps: Callable[[str], bool] | None = None) -> None:
    """Every replayed trajectory must be of a task the dataset has, or it could not be scored.
    `keeps` (TaskSet.keeps): only the run's shard's trajectories are replayed (dataset.shard)."""
    from bon.generators import store

    known = {t.id for t in loaded}
    replayed = {t.task_id for t in store.replay(path) if keeps is None or keeps(t.task_id)}
    foreign = sorted(replayed - known)
    if foreign:
        raise BonError(f"generator.path={path}: trajectories of {len(foreign)} task(s) that dataset={dataset} (with "
                       f"its current options) does not have, e.g. {foreign[0]!r}; replay them with the dataset and "
                       f"options they were generated with")
    unseen = len(known - replayed)
    if unseen:
        print(f"note: {unseen} of the dataset's {len(known)} tasks have no trajectory in {path}; "
              f"they are left out", file=sys.stderr)


def run(chosen: Live, out_dir: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Generate (or replay), judge, score and tabulate the planned tasks; returns the table and usage.

    `chosen.tools` is the run's `tools` config: options per tool and `allow_private`.
    `chosen.intervention` says who takes each step (bon.generators.intervention).
    `chosen.budget` ({usd, calls}) caps the run's LLM calls (bon.llm.guards.Budget).
    Scoring belongs to the dataset (bon.datasets.taskset): whenever it has reference answers, every
    trajectory, generated or replayed, is scored against them by its rules."""
    dataset_cfg, generator_cfg, icfg = chosen.dataset, chosen.generator, chosen.intervention
    dataset = dataset_cfg.name
    if isinstance(generator_cfg, ReplayGenerator) and icfg.policy != "none":
        raise BonError("intervention needs a live generator: replayed trajectories cannot be handed over")
    if isinstance(generator_cfg, LLMGenerator) and generator_cfg.search != "none":
        if icfg.policy != "none":
            raise BonError(f"generator.search={generator_cfg.search} cannot be combined with intervention="
                           f"{icfg.policy}: compare them as separate runs")
        if generator_cfg.models:
            raise BonError(f"generator.search={generator_cfg.search} searches with one model; generator.models (a "
                           f"mixture) is for plain sampling: compare them as separate runs")
    if isinstance(generator_cfg, ReplayGenerator) and not generator_cfg.path:
        raise BonError(f"generator=replay with dataset={dataset} needs generator.path=<trajectories.jsonl>")
    taskset = taskset_of(dataset_cfg, chosen.replaying)
    if isinstance(generator_cfg, ReplayGenerator) and taskset.tasks:
        _check_replay_matches(Path(str(generator_cfg.path)).expanduser(), list(taskset.tasks), dataset,
                              taskset.keeps)
    if (isinstance(generator_cfg, LLMGenerator) and generator_cfg.system_prompt is None
            and dataset_cfg.system_prompt is not None):  # the dataset's answer rules
        generator_cfg = dataclasses.replace(generator_cfg, system_prompt=dataset_cfg.system_prompt)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, usage = asyncio.run(_run(taskset, chosen, generator_cfg, out_dir))
    if taskset.unanswered:
        usage["submission"] = str(_write_submission(out_dir, table))
    return table, usage
