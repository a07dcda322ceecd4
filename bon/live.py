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
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from bon import candidates
from bon.errors import BonError
from bon.types import Judgement, Trajectory

CLIENT_FIELDS = ("api_base", "api_key_env", "concurrency", "rpm", "timeout", "max_attempts", "prices", "workers")


def make_client(cfg: Mapping[str, Any], cache: Any, role: str) -> Any:
    """An LLMClient for a generator or judge config (the API key is read from api_key_env here)."""
    from bon.llm import LLMClient

    if not cfg.get("model"):
        raise BonError(f"{role}.model is required for a live {role} (e.g. {role}=deepseek or {role}.model=...)")
    return LLMClient(str(cfg["model"]), cache=cache, **{k: cfg[k] for k in CLIENT_FIELDS if cfg.get(k) is not None})


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
    return AgentGenerator(client, chosen, n=int(cfg.get("n", 1)), intervention=intervention, helper=helper,
                          max_steps=int(cfg.get("max_steps", 15)), temperature=cfg.get("temperature"),
                          seed=cfg.get("seed"), system_prompt=cfg.get("system_prompt"),
                          trajectory_timeout_s=float(cfg.get("trajectory_timeout", 600)))


def _write_judgements(path: Path, trajectories: list[Trajectory], judgements: list[Judgement]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for t, j in zip(trajectories, judgements):
            out.write(json.dumps({"task_id": t.task_id, "sample": t.sample, "judge": j.judge,
                                  "step_labels": {str(k): v for k, v in j.step_labels.items()},
                                  "final_label": j.final_label, "status": j.status, "reason": j.reason,
                                  "raw": j.raw}, ensure_ascii=False) + "\n")


@contextlib.asynccontextmanager
async def _clients(cache_cfg: Mapping[str, Any], *roles: tuple[str, Mapping[str, Any] | None]):
    """One client per (role, config) sharing one response cache; all built (keys checked) before any
    work starts, all closed afterwards. A None config yields None (e.g. no generator when replaying)."""
    from bon.llm import ResponseCache

    mode = str(cache_cfg.get("mode", "readwrite"))
    cache = None if mode == "off" else ResponseCache(mode, cache_cfg.get("dir"))
    clients = []
    try:
        clients = [None if cfg is None else make_client(cfg, cache, role) for role, cfg in roles]
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
               default_tools: list[str] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    from bon.generators import intervention, store

    replaying = generator_cfg.get("kind") == "replay"
    icfg = dict(intervention_cfg or {"policy": "none"})
    helper_cfg = _helper_config(icfg)
    online_judge_cfg = judge_cfg if icfg.get("policy") == "prm" else None
    roles = (("generator", None if replaying else generator_cfg), ("judge", judge_cfg),
             ("intervention.helper", helper_cfg), ("judge", online_judge_cfg))
    async with _clients(cache_cfg, *roles) as (gen_client, judge_client, helper_client, online_client):
        if replaying:
            trajectories = store.replay(Path(str(generator_cfg["path"])).expanduser())
        else:
            online_judge = _judge(online_judge_cfg, online_client) if online_client is not None else None
            policy = intervention.policy_from_config(icfg, online_judge)
            helper = None
            if icfg.get("policy", "none") != "none":
                helper = (intervention.TerminalHuman() if helper_client is None else
                          intervention.ModelHelper(helper_client, **_temperature(icfg["helper"])))
            generator = _generator(generator_cfg, gen_client, tools_cfg, policy, helper, default_tools)
            try:
                trajectories = await generator.generate_all(
                    tasks, store=Path(str(generator_cfg.get("store") or out_dir / "trajectories.jsonl")).expanduser())
            finally:
                await generator.aclose()
        judgements = await _judge(judge_cfg, judge_client).judge_all(trajectories)
    _write_judgements(out_dir / "judgements.jsonl", trajectories, judgements)
    table = candidates.table(candidates.candidate(t, j, subset) for t, j in zip(trajectories, judgements))
    usage = {"judging": judge_client.stats.to_dict()}
    if gen_client is not None:
        stops = collections.Counter(str(t.metadata.get("stop_reason")) for t in trajectories)
        usage = {"generation": {**gen_client.stats.to_dict(), "stop_reasons": dict(stops)}, **usage}
        if helper_client is not None:
            usage["intervention"] = helper_client.stats.to_dict()
        if online_client is not None:
            usage["online judging"] = online_client.stats.to_dict()
        if icfg.get("policy", "none") != "none":
            usage["collaboration"] = {"policy": icfg["policy"], "budget": icfg.get("budget"),
                                      **intervention.reward_summary(trajectories, float(icfg.get("lambda", 0.0)))}
    return table, usage


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
            return await _judge(judge_cfg, client).judge_all(trajectories), client.stats.to_dict()

    return asyncio.run(go())


def run(dataset_cfg: Mapping[str, Any], generator_cfg: Mapping[str, Any], judge_cfg: Mapping[str, Any],
        cache_cfg: Mapping[str, Any], out_dir: Path,
        tools_cfg: Mapping[str, Any] | None = None,
        intervention_cfg: Mapping[str, Any] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Generate, judge and tabulate the configured tasks; returns the table and per-stage usage.

    `tools_cfg` is the run's `tools` config: options per tool and `allow_private`.
    `intervention_cfg` says who takes each step (bon.generators.intervention)."""
    from bon.datasets import gaia
    from bon.datasets import tasks as task_file

    replaying = generator_cfg.get("kind") == "replay"
    if generator_cfg.get("kind") not in ("llm", "replay") or judge_cfg.get("kind") != "llm":
        raise BonError(f"dataset={dataset_cfg.get('name')} needs a live judge and a live or replayed generator (e.g. "
                       f"generator=deepseek judge=deepseek, or generator=replay generator.path=<file>); got generator "
                       f"kind {generator_cfg.get('kind')!r} and judge kind {judge_cfg.get('kind')!r}")
    if replaying and (intervention_cfg or {}).get("policy", "none") != "none":
        raise BonError("intervention needs a live generator: replayed trajectories cannot be handed over")
    if replaying and not generator_cfg.get("path"):
        raise BonError("generator=replay with dataset=tasks needs generator.path=<trajectories.jsonl>")
    out_dir.mkdir(parents=True, exist_ok=True)
    if replaying:
        loaded = []
    elif dataset_cfg.get("name") == "gaia":
        loaded = gaia.load(dataset_cfg.get("path"), dataset_cfg.get("level"))
    else:
        loaded = task_file.load(dataset_cfg.get("path"))
    table, usage = asyncio.run(_run(loaded, generator_cfg, judge_cfg, cache_cfg, out_dir,
                                    str(dataset_cfg.get("subset")), tools_cfg, intervention_cfg,
                                    dataset_cfg.get("tools")))
    if loaded and all(t.answer is None for t in loaded):
        usage["submission"] = str(_write_submission(out_dir, table))
    return table, usage
