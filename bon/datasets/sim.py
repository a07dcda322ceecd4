"""`dataset=sim`: the built-in synthetic benchmark as a candidate table (see bon.sim)."""
from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl

from bon import config, shard
from bon.config import SimDataset, SimGenerator, SimJudge
from bon.errors import BonError, unknown_choice
from bon.sim import listwise, model
from bon.sim import search as sim_search
from bon.sim.model import JudgeModel, Profile, SimTrajectories
from bon.sim.search import TokenModel

SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "sim" / "profiles.yaml"


@functools.cache
def shipped_profiles() -> Mapping[str, Any]:
    """bon/sim/profiles.yaml: data read when a simulator run starts, not options every composition parses."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return MappingProxyType(yaml.load(SHIPPED_PROFILES.read_text(), Loader=loader)["profiles"])


def profiles(dataset: SimDataset | Mapping[str, Any]) -> dict[str, Any]:
    """The shipped profiles with `dataset.profiles` merged over them field by field (lists are replaced)."""
    dataset = config.typed(SimDataset, dataset, "dataset.")
    return _merged(copy.deepcopy(dict(shipped_profiles())), dataset.profiles or {})


def _merged(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        old = out.get(key)
        out[key] = _merged(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def profile(dataset: SimDataset | Mapping[str, Any]) -> Profile:
    dataset = config.typed(SimDataset, dataset, "dataset.")
    known = profiles(dataset)
    if dataset.subset is not None:
        raise BonError(f"dataset=sim has profiles, not subsets: use dataset.profile={dataset.subset} "
                       f"(valid: {', '.join(sorted(known))})")
    if dataset.profile not in known:
        raise unknown_choice("dataset.profile", dataset.profile, known)
    return Profile.from_config(str(dataset.profile), known[dataset.profile])


def judge_model(judge: SimJudge | Mapping[str, Any], profile_name: str) -> JudgeModel:
    """The configured simulated judge, or one measured from a recorded judge (`judge.calibrate_from`)."""
    judge = config.typed(SimJudge, judge, "judge.")
    fields = ("confusion", "positive_bias", "orm_tpr", "orm_fpr", "orm_missing", "fail_rate")
    source = judge.calibrate_from
    if source:
        from bon.datasets import agentprocessbench as apb
        from bon.datasets import locate_root
        from bon.sim.calibrate import judge_model as measured

        root = locate_root(judge.root)
        if str(source).strip() == "all":  # a simulated judge imitates one recorded judge, never a blend
            raise BonError("judge.calibrate_from needs one recorded judge, not 'all'; valid choices: "
                           + ", ".join(sorted(apb.judge_dirs(root))))
        name = apb.resolve_judges(root, str(source))[0]
        subsets = [profile_name] if profile_name in apb.SUBSETS else list(apb.SUBSETS)
        base = measured(root, name, subsets)
        values = {f: getattr(base, f) for f in fields} | {"positive_bias": float(judge.positive_bias)}
        return JudgeModel(name=f"sim:{name}", **values)
    if judge.name not in (None, "sim"):
        raise BonError(f"judge.name={judge.name!r} would only relabel the simulated judge; to imitate a "
                       f"recorded judge use judge.calibrate_from={judge.name}")
    missing = [f for f in fields if getattr(judge, f) is None]
    if missing:
        raise BonError(f"judge=sim is missing {missing}; set them or judge.calibrate_from=<recorded judge>")
    return JudgeModel(name=str(judge.name or "sim"), **{f: getattr(judge, f) for f in fields})


def candidate_table(dataset: SimDataset | Mapping[str, Any], generator: SimGenerator | Mapping[str, Any],
                    judge: SimJudge | Mapping[str, Any], seed: int = 0) -> pl.DataFrame:
    """Generate tasks and candidates, judge them, and return the candidate table (all synthetic)."""
    return run(dataset, generator, judge, seed)[0]


def run(dataset: SimDataset | Mapping[str, Any], generator: SimGenerator | Mapping[str, Any],
        judge: SimJudge | Mapping[str, Any], seed: int = 0,
        selector: Any = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The candidate table and the run's usage: `compute` (bon.compute's shape, modelled tokens) and
    `simulation` (what a simulated search and comparing judge did).

    Candidates come from plain sampling or, with generator.search, from a simulated step-level search
    (bon.sim.search); either way the simulated judge then labels the finished trajectories. A selector
    with `verdicts` gets the simulated comparing judge's picks (bon.sim.listwise) from a random stream
    of its own, so its candidate table is the one a score-based selector sees with the same seed.
    """
    dataset = config.typed(SimDataset, dataset, "dataset.")
    generator = config.typed(SimGenerator, generator, "generator.")
    judge_options = config.typed(SimJudge, judge, "judge.")
    from bon.plan import check_kinds  # a library caller's options get bon.run's check

    check_kinds("sim", generator.kind, judge_options.kind)
    prof = profile(dataset)
    n_tasks, n = dataset.n_tasks or 0, generator.n or 0
    if n_tasks < 1 or n < 1:
        raise BonError(f"dataset.n_tasks and generator.n must be at least 1 (got {n_tasks} and {n})")
    judge_sim = judge_model(judge_options, prof.name)
    tokens = TokenModel(generator.prompt_tokens, generator.step_tokens, judge_options.overhead_tokens)
    wrong, method = generator.wrong_answers, generator.search
    rng = np.random.default_rng(seed)
    task_p = model.sample_tasks(prof, n_tasks, rng)
    # dataset.shard: every task is drawn from the one seeded stream, then this shard's are kept (bon.shard),
    # so a shard's rows and costs are exactly the unsharded run's for those tasks
    keep = _in_shard(dataset, n_tasks)
    if not keep.any():
        raise shard.empty(dataset, n_tasks)
    rows = np.repeat(keep, n)  # the table is task-major: row r is task r // n
    simulation: dict[str, Any] = {}
    if method == "none":
        trajs = model.generate(prof, task_p, n, rng, wrong)
        steps = trajs.lengths[rows].astype(np.int64)  # one agent call per step, each reading the transcript so far
        generation = _part(int(steps.sum()), int((steps * tokens.prompt_tokens
                                                  + tokens.step_tokens * steps * (steps + 1) // 2).sum()))
        name = ""
    else:
        if method not in sim_search.METHODS:
            raise unknown_choice("generator.search", method, ("none", *sim_search.METHODS))
        k = generator.search_k
        found = sim_search.search(prof, task_p, method, n, k, judge_sim, rng, generator.track_memory, tokens, wrong)
        trajs = found.trajectories
        generation = _part(int(found.agent_calls[keep].sum() + found.judge_calls[keep].sum()),
                           int(found.agent_tokens[keep].sum() + found.judge_tokens[keep].sum()))
        simulation["search"] = {"method": method, "k": k, "n": n,
                                "track_memory": float(generator.track_memory),
                                "agent_calls": int(found.agent_calls[keep].sum()),
                                "judge_calls": int(found.judge_calls[keep].sum()),
                                "judge_failures": int(found.judge_failures[keep].sum())}
        name = f"{method} k={k} n={n}"
    predicted, final, failed = model.judge(judge_sim, trajs, rng)
    table = model.candidate_table(trajs, predicted, final, failed, judge_sim.name, prof.name)
    stages = {"generation": generation,
              "judging": _part(int(rows.sum()), int(tokens.judge_call(trajs.lengths[rows]).sum()))}
    verdicts = getattr(selector, "verdicts", None)
    if verdicts:
        compare = comparing_judge(judge_options, judge_sim)
        table, stages["selection"], simulation["selection"] = _compare(
            str(verdicts), compare, trajs, table, tokens, seed, selector.fallback, keep)
    if not rows.all():
        table = table.filter(pl.Series(rows))
    method_name = " · ".join(filter(None, [name, getattr(selector, "name", None)])) or "best-of-n"
    curve = method != "beam" and not verdicts  # as live: independent samples price a best-of-k curve
    usage: dict[str, Any] = {"compute": _compute(stages, method_name, int(keep.sum()), int(rows.sum()), curve)}
    if simulation:
        usage["simulation"] = simulation
    return table, usage


def _in_shard(dataset: SimDataset, n_tasks: int) -> np.ndarray:
    """Which of the simulated tasks (ids synthetic:0 ...) the run's dataset.shard holds (bon.shard)."""
    part, num_shards = shard.of(dataset)
    if num_shards == 1:
        return np.ones(n_tasks, dtype=bool)
    return np.array([shard.index(f"synthetic:{i}", num_shards) == part for i in range(n_tasks)], dtype=bool)


def comparing_judge(options: SimJudge | Mapping[str, Any], judge: JudgeModel) -> listwise.ComparingJudge:
    """The simulated list-wise / pairwise judge: `judge.listwise_accuracy` (null: as discriminating as the
    simulated ORM), `judge.position_bias`, `judge.permutations`, and the step judge's fail_rate."""
    options = config.typed(SimJudge, options, "judge.")
    accuracy = options.listwise_accuracy
    if accuracy is None:
        accuracy = listwise.ComparingJudge.accuracy_from_orm(judge.orm_tpr, judge.orm_fpr)
    return listwise.ComparingJudge(float(accuracy), float(options.position_bias), options.permutations,
                                   judge.fail_rate)


def _compare(kind: str, judge: listwise.ComparingJudge, trajs: SimTrajectories, table: pl.DataFrame,
             tokens: TokenModel, seed: int, fallback: str | None,
             keep: np.ndarray) -> tuple[pl.DataFrame, dict[str, Any], dict[str, Any]]:
    """The comparing judge's picks as the `listwise_pick` column, and the cost and tally of the tasks in `keep`
    (the run's shard): every task's verdict is drawn, so a shard's are the unsharded run's."""
    n_tasks, n = trajs.n_tasks, trajs.n_candidates
    verdicts = listwise.decide(kind, judge, trajs.success.reshape(n_tasks, n), np.random.default_rng([seed, 1]))
    shown = np.minimum(tokens.transcript(trajs.lengths), listwise.COMPACT_TOKENS).reshape(n_tasks, n).mean(axis=1)
    table = listwise.with_picks(table, verdicts, n)
    verdicts = listwise.Verdicts(*(getattr(verdicts, f.name)[keep] for f in dataclasses.fields(verdicts)))
    cost = _part(int(verdicts.calls.sum()),
                 int((verdicts.calls * tokens.judge_overhead + verdicts.shown * shown[keep]).sum()))
    return table, cost, verdicts.tally(kind, judge.permutations, fallback)


def _part(calls: int, tokens: int) -> dict[str, Any]:
    return {"calls": calls, "tokens": tokens, "usd": None}


TOKEN_NOTE = ("simulated: calls are counted exactly, tokens come from the simulator's token model "
              "(generator.prompt_tokens, generator.step_tokens, judge.overhead_tokens), no dollars")


def _compute(stages: Mapping[str, Mapping[str, Any]], method: str, n_tasks: int, n_trajectories: int,
             curve: bool) -> dict[str, Any]:
    """bon.compute.summary's block for a simulated run (no Trajectory objects, no prices)."""
    def per(calls: float, tokens: float, n: int) -> dict[str, Any]:
        return {"calls": calls / n, "tokens": tokens / n, "usd": None}

    calls = sum(p["calls"] for p in stages.values())
    tokens = sum(p["tokens"] for p in stages.values())
    out: dict[str, Any] = {"method": method, "tasks": n_tasks, "trajectories": n_trajectories,
                           "stages": {k: dict(v) for k, v in stages.items()}, "per_task": per(calls, tokens, n_tasks),
                           "complete": False, "note": TOKEN_NOTE}
    if curve:  # Best-of-N: k samples cost k times one sample's generation and judging
        sample = [p for name, p in stages.items() if name != "selection"]
        out["per_sample"] = per(sum(p["calls"] for p in sample), sum(p["tokens"] for p in sample), n_trajectories)
    return out


def describe(simulation: Mapping[str, Any]) -> str:
    """The lines a run prints about its simulated search and comparing judge."""
    lines = []
    s = simulation.get("search")
    if s:
        lines.append(f"simulated {s['method']} search (k={s['k']}, n={s['n']}, track_memory={s['track_memory']:g}): "
                     f"{s['agent_calls']} candidate steps proposed and judged, {s['judge_failures']} judge calls "
                     f"failed (no label)")
    v = simulation.get("selection")
    if v:
        lines.append(f"simulated {v['kind']} verdicts: {v['tasks']} tasks, {v['calls']} calls, {v['ties']} ties; "
                     f"{v['fell_back']} tasks decided by {v['fallback']} ({v['failed']} verdicts failed)")
    return "\n".join(lines)
