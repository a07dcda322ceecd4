"""The live pipeline: tasks -> litellm agent (N samples) -> litellm judge -> candidate table.

Each stage persists its output in the run directory (trajectories.jsonl, judgements.jsonl)
and every LLM response goes to the shared cache, so a killed run resumes where it stopped
and re-running a finished one (say, with another selector) makes no calls at all.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import polars as pl

from bon import candidates
from bon.errors import BonError
from bon.types import Judgement, Trajectory

CLIENT_FIELDS = ("api_base", "api_key_env", "concurrency", "rpm", "timeout", "max_attempts", "prices", "workers",
                 "breaker_after")
# Loggers whose records belong in run.log only, never on the terminal: one line per failed call, and
# the copies of what was said on the terminal.
FILE_ONLY_LOGGERS = ("bon.llm.calls", "bon.live.said")
NOT_JUDGED = "not judged: generation failed before any step"
said = logging.getLogger("bon.live.said")


def make_client(cfg: Mapping[str, Any], cache: Any, role: str, breakers: dict[str, Any] | None = None,
                budget: Any = None) -> Any:
    """An LLMClient for a generator or judge config (the API key is read from api_key_env here).
    Clients given the same `breakers` dict share one circuit breaker per endpoint."""
    from bon.llm import LLMClient
    from bon.llm.guards import DEFAULT_BREAKER_AFTER, Breaker, endpoint_of

    if not cfg.get("model"):
        raise BonError(f"{role}.model is required for a live {role} (e.g. {role}=deepseek or {role}.model=...)")
    kwargs = {k: cfg[k] for k in CLIENT_FIELDS if cfg.get(k) is not None}
    breaker = None
    if breakers is not None:
        endpoint = endpoint_of(str(cfg["model"]), cfg.get("api_base"))
        breaker = breakers.setdefault(endpoint, Breaker(endpoint, kwargs.get("breaker_after", DEFAULT_BREAKER_AFTER)))
    return LLMClient(str(cfg["model"]), cache=cache, role=role, breaker=breaker, budget=budget, **kwargs)


def _judge(cfg: Mapping[str, Any], client: Any) -> Any:
    from bon.judges.llm import LLMJudge

    return LLMJudge(client, str(cfg.get("name") or cfg["model"]), mode=cfg.get("mode", "prm"),
                    samples=int(cfg.get("samples", 1)), prompt_path=cfg.get("prompt"), max_chars=cfg.get("max_chars"),
                    reask=bool(cfg.get("reask", False)), temperature=cfg.get("temperature"))


def _generator(cfg: Mapping[str, Any], client: Any, tools_cfg: Mapping[str, Any] | None = None,
               intervention: Any = None, helper: Any = None, default_tools: list[str] | None = None) -> Any:
    """The agent; `generator.tools` if set, else the dataset's tool set (`default_tools`)."""
    from bon import tools
    from bon.generators.agent import AgentGenerator

    chosen = tools.get(list(cfg.get("tools") or default_tools or ["final_answer"]), tools_cfg)
    retry_failed = cfg.get("retry_failed", True)
    if not isinstance(retry_failed, bool):
        raise BonError(f"generator.retry_failed must be true or false, got {retry_failed!r}")
    return AgentGenerator(client, chosen, n=int(cfg.get("n", 1)), intervention=intervention, helper=helper,
                          max_steps=int(cfg.get("max_steps", 15)), temperature=cfg.get("temperature"),
                          seed=cfg.get("seed"), system_prompt=cfg.get("system_prompt"),
                          trajectory_timeout_s=float(cfg.get("trajectory_timeout", 600)),
                          retry_failed=retry_failed)


def _write_judgements(path: Path, trajectories: list[Trajectory], judgements: list[Judgement]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for t, j in zip(trajectories, judgements):
            out.write(json.dumps({"task_id": t.task_id, "sample": t.sample, "judge": j.judge,
                                  "step_labels": {str(k): v for k, v in j.step_labels.items()},
                                  "final_label": j.final_label, "status": j.status, "reason": j.reason,
                                  "raw": j.raw}, ensure_ascii=False) + "\n")


@contextlib.asynccontextmanager
async def _clients(cache_cfg: Mapping[str, Any], *roles: tuple[str, Mapping[str, Any] | None], budget: Any = None):
    """One client per (role, config) sharing one response cache, one breaker per endpoint and the run's
    budget; all built (keys checked) before any work starts, all closed afterwards. A None config
    yields None (e.g. no generator when replaying)."""
    from bon.llm import ResponseCache

    mode = str(cache_cfg.get("mode", "readwrite"))
    cache = None if mode == "off" else ResponseCache(mode, cache_cfg.get("dir"))
    clients = []
    breakers: dict[str, Any] = {}
    try:
        clients = [None if cfg is None else make_client(cfg, cache, role, breakers, budget) for role, cfg in roles]
        yield clients
    finally:
        for client in clients:
            if client is not None:
                await client.aclose()
        if cache is not None:
            cache.close()


async def _run(tasks: list[Any], generator_cfg: Mapping[str, Any], judge_cfg: Mapping[str, Any],
               cache_cfg: Mapping[str, Any], out_dir: Path, subset: str,
               tools_cfg: Mapping[str, Any] | None = None,
               intervention_cfg: Mapping[str, Any] | None = None,
               default_tools: list[str] | None = None,
               budget_cfg: Mapping[str, Any] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    from bon.generators import intervention, store
    from bon.llm.guards import Budget

    replaying = generator_cfg.get("kind") == "replay"
    icfg = dict(intervention_cfg or {"policy": "none"})
    helper_cfg = _helper_config(icfg)
    online_judge_cfg = judge_cfg if icfg.get("policy") == "prm" else None
    budget = Budget.from_config(budget_cfg)
    roles = (("generator", None if replaying else generator_cfg), ("judge", judge_cfg),
             ("intervention.helper", helper_cfg), ("judge", online_judge_cfg))
    with _run_logging(out_dir):
        async with _clients(cache_cfg, *roles, budget=budget) as (gen_client, judge_client, helper_client,
                                                                    online_client):
            clients = [c for c in (gen_client, judge_client, helper_client, online_client) if c is not None]
            _check_prices(clients, budget)
            judge = _judge(judge_cfg, judge_client)
            if replaying:
                path = Path(str(generator_cfg["path"])).expanduser()
                trajectories = store.replay(path)
                _say(f"plan: judge {len(trajectories)} trajectories replayed from {path}")
                _say_clients(clients, budget)
            else:
                online_judge = _judge(online_judge_cfg, online_client) if online_client is not None else None
                policy = intervention.policy_from_config(icfg, online_judge)
                helper = None
                if icfg.get("policy", "none") != "none":
                    helper = (intervention.TerminalHuman() if helper_client is None else
                              intervention.ModelHelper(helper_client, **_temperature(icfg["helper"])))
                generator = _generator(generator_cfg, gen_client, tools_cfg, policy, helper, default_tools)
                store_path = Path(str(generator_cfg.get("store") or out_dir / "trajectories.jsonl")).expanduser()
                try:
                    await _say_generation_plan(generator, tasks, store_path, clients, budget)
                    trajectories = await generator.generate_all(tasks, store=store_path)
                finally:
                    await generator.aclose()
                _say_failures("generation", gen_client.stats)
            judgements = await _judge_steps(judge, trajectories)
            _say_failures("judging", judge_client.stats)
    _write_judgements(out_dir / "judgements.jsonl", trajectories, judgements)
    table = candidates.table(candidates.candidate(t, j, subset) for t, j in zip(trajectories, judgements))
    no_step = [not t.step_indices for t in trajectories]
    table = table.with_columns(pl.Series("generation_failed", no_step, dtype=pl.Boolean))
    usage: dict[str, Any] = {"judging": judge_client.stats.to_dict()}
    if gen_client is not None:
        stops = collections.Counter(str(t.metadata.get("stop_reason")) for t in trajectories)
        usage = {"generation": {**gen_client.stats.to_dict(), "stop_reasons": dict(stops),
                                "generation_failed": sum(no_step)}, **usage}
        if helper_client is not None:
            usage["intervention"] = helper_client.stats.to_dict()
        if online_client is not None:
            usage["online judging"] = online_client.stats.to_dict()
        if icfg.get("policy", "none") != "none":
            usage["collaboration"] = {"policy": icfg["policy"], "budget": icfg.get("budget"),
                                      **intervention.reward_summary(trajectories, float(icfg.get("lambda", 0.0)))}
    if budget is not None:
        usage["budget"] = budget.to_dict()
    stopped = _stopped(trajectories, judgements, no_step, budget)
    if stopped is not None:
        usage["stopped"] = stopped
    return table, usage


async def _judge_steps(judge: Any, trajectories: list[Trajectory]) -> list[Judgement]:
    """Judge the trajectories that have a step; one without any (its generation failed before the first
    reply) is a failed candidate, not billed to the judge: its judgement says so."""
    from bon.generators.agent import FAILED_STOPS

    todo = [t for t in trajectories if t.step_indices]
    skipped = len(trajectories) - len(todo)
    hits = 0
    for t in todo:
        hits += await judge.cached(t)
    calls = judge.samples * len(todo)
    note = f"; {skipped} without a step (generation failed) are not judged" if skipped else ""
    _say(f"judge {judge.name}: {len(todo)} trajectories, {calls} first calls of which the cache answers {hits}{note}")
    done = iter(await judge.judge_all(todo))
    out = []
    for t in trajectories:
        if t.step_indices:
            out.append(next(done))
        else:
            why = t.metadata.get("error_kind") if t.metadata.get("stop_reason") in FAILED_STOPS else None
            out.append(Judgement(judge.name, status="failed", reason=NOT_JUDGED + (f" ({why})" if why else "")))
    return out


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


def _say(message: str) -> None:
    """A line for the terminal (stderr, above any progress bar), copied into run.log."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
    said.info(message)


def _limits(client: Any) -> str:
    lim = client.limiter
    rpm = f"rpm {lim.rpm}" + (f" per {lim.period:g} s" if lim.period != 60 else "") if lim.rpm else "no rpm limit"
    return f"{client.model} at {client.endpoint} (concurrency {lim.concurrency}, {rpm})"


def _say_clients(clients: list[Any], budget: Any) -> None:
    seen = set()
    for client in clients:
        if id(client) not in seen:
            seen.add(id(client))
            _say(f"  {client.role}: {_limits(client)}")
    if budget is not None:
        _say(f"  budget: {'no USD cap' if budget.usd is None else f'${budget.usd:g}'}, "
             f"{'no call cap' if budget.calls is None else f'{budget.calls} API calls'}")
    unpriced: dict[str, list[Any]] = {}
    for client in clients:
        if not client.price_known():
            unpriced.setdefault(client.model, []).append(client)
    for same_model in unpriced.values():
        roles = list(dict.fromkeys(c.role for c in same_model))
        _say(f"  {same_model[0].unpriced_hint(roles)}")
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
    _say(f"plan: {len(tasks)} tasks x {generator.n} samples = {len(tasks) * generator.n} trajectories: {reused} reused "
         f"from {store_path}, {len(todo)} to generate; the cache answers {hits} of their {len(todo)} first calls "
         f"(later calls depend on the replies)")
    _say_clients(clients, budget)


def _check_prices(clients: list[Any], budget: Any) -> None:
    """A USD budget cannot be kept for a model whose price is unknown: refuse before any call."""
    if budget is None or budget.usd is None:
        return
    for client in clients:
        if not client.price_known():
            raise BonError(f"budget.usd is set but model {client.model} has no known price, so its spending could "
                           f"not be counted; set {client.role}.prices={{input_per_mtok: <USD>, output_per_mtok: "
                           f"<USD>}} or use budget.calls instead")


def _say_failures(stage: str, stats: Any) -> None:
    """One terminal line per kind of failed call (each call's details are in run.log)."""
    for kind, n in sorted(stats.failures.items(), key=lambda kv: -kv[1]):
        example = stats.failure_example.get(kind, "")
        _say(f"{stage}: {n} of {stats.calls} calls failed with {kind}"
             + (f" (last: {example[:160]})" if example else "") + "; each is in run.log")


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(FILE_ONLY_LOGGERS)


@contextlib.contextmanager
def _run_logging(out_dir: Path | None) -> Iterator[None]:
    """During a live run, log records reach the terminal through tqdm (never glued to a progress bar),
    and run.log in the run directory gets everything, including one line per failed call. Under Hydra
    run.log is its job log; otherwise a file handler is added for the run (none for out_dir=None:
    the process's own log files, if any, get the per-call lines)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    target = None if out_dir is None else (out_dir / "run.log").resolve()
    added = None
    if target is not None and not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == target
                                      for h in root.handlers):
        target.parent.mkdir(parents=True, exist_ok=True)
        added = logging.FileHandler(target, encoding="utf-8")
        added.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(added)
    quiet = _FileOnly()
    levels = {name: logging.getLogger(name).level for name in FILE_ONLY_LOGGERS}
    for name in FILE_ONLY_LOGGERS:
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():
            terminal = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
            for handler in terminal:
                handler.addFilter(quiet)
            try:
                yield
            finally:
                for handler in terminal:
                    handler.removeFilter(quiet)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if added is not None:
            root.removeHandler(added)
            added.close()


def _helper_config(icfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stand-in model's client config, or None (no intervention, or a person at the terminal)."""
    if icfg.get("policy", "none") == "none":
        return None
    helper = icfg.get("helper") or {}
    kind = helper.get("kind", "model")
    if kind not in ("model", "terminal"):
        raise BonError(f"intervention.helper.kind must be one of model, terminal; got {kind!r}")
    if kind == "terminal":
        return None
    if not helper.get("model"):
        raise BonError("intervention.helper.model is required (e.g. intervention.helper.model=openai/gpt-5), "
                       "or use intervention.helper.kind=terminal to take the steps yourself")
    return {k: v for k, v in helper.items() if k not in ("kind", "temperature")}


def _temperature(helper: Mapping[str, Any]) -> dict[str, Any]:
    return {} if helper.get("temperature") is None else {"temperature": helper["temperature"]}


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


def judge_trajectories(judge_cfg: Mapping[str, Any], cache_cfg: Mapping[str, Any],
                       trajectories: list[Trajectory]) -> tuple[list[Judgement], dict[str, Any]]:
    """Judge recorded trajectories with a live judge (e.g. for `bon.prm_eval` on AgentProcessBench)."""

    async def go() -> tuple[list[Judgement], dict[str, Any]]:
        async with _clients(cache_cfg, ("judge", judge_cfg)) as (client,):
            judgements = await _judge(judge_cfg, client).judge_all(trajectories)
            _say_failures("judging", client.stats)
            return judgements, client.stats.to_dict()

    with _run_logging(None):
        return asyncio.run(go())


LIVE_PRESETS = "deepseek, openai, anthropic, gemini, local"


def _check_kinds(dataset: str, generator_cfg: Mapping[str, Any], judge_cfg: Mapping[str, Any]) -> None:
    """A dataset of tasks needs an agent that acts and a judge that reads what it did; say why not, if not."""
    generator_kind, judge_kind = generator_cfg.get("kind"), judge_cfg.get("kind")
    if generator_kind not in ("llm", "replay"):
        raise BonError(f"dataset={dataset} needs a live agent to solve its tasks: add generator=<preset> "
                       f"({LIVE_PRESETS}), or generator=replay generator.path=<trajectories.jsonl>; "
                       f"got generator kind {generator_kind!r}")
    if judge_kind == "sim":
        raise BonError(f"judge=sim cannot grade these trajectories: it is bon's simulated judge, which draws labels "
                       f"from true step labels that only the simulator knows. Leave judge out to let the generator's "
                       f"provider judge, or choose a live judge: judge=<preset> ({LIVE_PRESETS})")
    if judge_kind != "llm":
        raise BonError(f"dataset={dataset} needs a live judge to label the trajectories' steps: judge=<preset> "
                       f"({LIVE_PRESETS}); judge kind {judge_kind!r} replays AgentProcessBench's recorded labels "
                       f"(dataset=agentprocessbench only)")


def _load_tasks(dataset_cfg: Mapping[str, Any], replaying: bool) -> list[Any]:
    """The dataset's tasks; [] when replaying dataset=tasks without a file (scores come from the trajectories)."""
    from bon.datasets import builtin, gaia
    from bon.datasets import tasks as task_file

    name = dataset_cfg.get("name")
    if name == "builtin":
        return builtin.load(dataset_cfg.get("n_tasks"), dataset_cfg.get("task_ids"))
    if name == "gaia":
        return gaia.load(dataset_cfg.get("path"), dataset_cfg.get("level"), dataset_cfg.get("split"))
    if replaying and dataset_cfg.get("path") in (None, "???"):
        return []
    return task_file.load(dataset_cfg.get("path"))


def _check_replay_matches(path: Path, loaded: list[Any], dataset: str) -> None:
    """Every replayed trajectory must be of a task the dataset has, or it could not be scored."""
    from bon.generators import store

    known = {t.id for t in loaded}
    replayed = {t.task_id for t in store.replay(path)}
    foreign = sorted(replayed - known)
    if foreign:
        raise BonError(f"generator.path={path}: trajectories of {len(foreign)} task(s) that dataset={dataset} (with "
                       f"its current options) does not have, e.g. {foreign[0]!r}; replay them with the dataset and "
                       f"options they were generated with")
    unseen = len(known - replayed)
    if unseen:
        print(f"note: {unseen} of the dataset's {len(known)} tasks have no trajectory in {path}; "
              f"they are left out", file=sys.stderr)


def run(dataset_cfg: Mapping[str, Any], generator_cfg: Mapping[str, Any], judge_cfg: Mapping[str, Any],
        cache_cfg: Mapping[str, Any], out_dir: Path,
        tools_cfg: Mapping[str, Any] | None = None,
        intervention_cfg: Mapping[str, Any] | None = None,
        budget_cfg: Mapping[str, Any] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Generate (or replay), judge, score and tabulate the configured tasks; returns the table and usage.

    `tools_cfg` is the run's `tools` config: options per tool and `allow_private`.
    `intervention_cfg` says who takes each step (bon.generators.intervention).
    `budget_cfg` ({usd, calls}) caps the run's LLM calls (bon.llm.guards.Budget).
    Scoring belongs to the dataset: whenever it has reference answers, every trajectory, generated or
    replayed, is scored against them with GAIA's rules."""
    from bon.datasets import gaia

    dataset = str(dataset_cfg.get("name"))
    _check_kinds(dataset, generator_cfg, judge_cfg)
    replaying = generator_cfg.get("kind") == "replay"
    if replaying and (intervention_cfg or {}).get("policy", "none") != "none":
        raise BonError("intervention needs a live generator: replayed trajectories cannot be handed over")
    if replaying and not generator_cfg.get("path"):
        raise BonError(f"generator=replay with dataset={dataset} needs generator.path=<trajectories.jsonl>")
    loaded = _load_tasks(dataset_cfg, replaying)
    if replaying and loaded:
        _check_replay_matches(Path(str(generator_cfg["path"])).expanduser(), loaded, dataset)
    if generator_cfg.get("system_prompt") is None and dataset_cfg.get("system_prompt") is not None:
        generator_cfg = {**generator_cfg, "system_prompt": dataset_cfg["system_prompt"]}  # the dataset's answer rules
    out_dir.mkdir(parents=True, exist_ok=True)
    table, usage = asyncio.run(_run(loaded, generator_cfg, judge_cfg, cache_cfg, out_dir,
                                    str(dataset_cfg.get("subset")), tools_cfg, intervention_cfg,
                                    dataset_cfg.get("tools"), budget_cfg))
    if loaded:
        table = gaia.score(table, loaded)
    if loaded and all(t.answer is None for t in loaded):
        usage["submission"] = str(_write_submission(out_dir, table))
    return table, usage
