"""Building the live parts of a run from their configs: LLM clients, judges, the agent and the stand-in helper.

Kept apart from the pipelines that use them (bon.live sequences generation and judging; bon.prm_eval and
the ReHAC judge predictor only judge), so a command that needs a client does not import a pipeline.
Clients built together share one response cache, one circuit breaker per endpoint and the run's budget.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bon.errors import BonError
from bon.types import Judgement, Trajectory

CLIENT_FIELDS = ("api_base", "api_key_env", "concurrency", "rpm", "timeout", "max_attempts", "prices", "workers",
                 "breaker_after")


def make_client(cfg: Mapping[str, Any], cache: Any, role: str, breakers: dict[str, Any] | None = None,
                budget: Any = None, limiter: Any = None) -> Any:
    """An LLMClient for a generator or judge config (the API key is read from api_key_env here).
    Clients given the same `breakers` dict share one circuit breaker per endpoint; a given `limiter`
    is shared too (its concurrency and rpm then hold for all its clients together)."""
    from bon.llm import LLMClient
    from bon.llm.guards import DEFAULT_BREAKER_AFTER, Breaker, endpoint_of

    if not cfg.get("model"):
        raise BonError(f"{role}.model is required for a live {role} (e.g. {role}=deepseek or {role}.model=...)")
    kwargs = {k: cfg[k] for k in CLIENT_FIELDS if cfg.get(k) is not None}
    breaker = None
    if breakers is not None:
        endpoint = endpoint_of(str(cfg["model"]), cfg.get("api_base"))
        breaker = breakers.setdefault(endpoint, Breaker(endpoint, kwargs.get("breaker_after", DEFAULT_BREAKER_AFTER)))
    return LLMClient(str(cfg["model"]), cache=cache, role=role, breaker=breaker, budget=budget, limiter=limiter,
                     **kwargs)


def judge(cfg: Mapping[str, Any], client: Any) -> Any:
    """The live LLM judge of a `judge` config, calling through `client`."""
    from bon.judges.llm import LLMJudge

    return LLMJudge(client, str(cfg.get("name") or cfg["model"]), mode=cfg.get("mode", "prm"),
                    samples=int(cfg.get("samples", 1)), prompt_path=cfg.get("prompt"), max_chars=cfg.get("max_chars"),
                    reask=bool(cfg.get("reask", False)), temperature=cfg.get("temperature"), quorum=cfg.get("quorum"))


def generator(cfg: Mapping[str, Any], client: Any, tools_cfg: Mapping[str, Any] | None = None,
              intervention: Any = None, helper: Any = None, default_tools: list[str] | None = None,
              score: Any = None, search_judge: Any = None) -> Any:
    """The agent; `generator.tools` if set, else the dataset's tool set (`default_tools`); `score` is the
    dataset's rule for a trajectory's success (bon.datasets.taskset). With `generator.search` the agent
    searches step by step, `search_judge` labelling its candidate steps (bon.generators.search)."""
    from bon import tools
    from bon.generators.agent import AgentGenerator
    from bon.generators.search import SearchGenerator

    chosen = tools.get(list(cfg.get("tools") or default_tools or ["final_answer"]), tools_cfg)
    retry_failed = cfg.get("retry_failed", True)
    if not isinstance(retry_failed, bool):
        raise BonError(f"generator.retry_failed must be true or false, got {retry_failed!r}")
    method = str(cfg.get("search") or "none")
    if method != "none":
        return SearchGenerator(client, chosen, search_judge, method=method, k=int(cfg.get("search_k", 4)),
                               n=int(cfg.get("n", 1)), intervention=intervention, helper=helper,
                               max_steps=int(cfg.get("max_steps", 15)), temperature=cfg.get("temperature"),
                               seed=cfg.get("seed"), system_prompt=cfg.get("system_prompt"),
                               trajectory_timeout_s=float(cfg.get("trajectory_timeout", 600)),
                               retry_failed=retry_failed, score=score)
    return AgentGenerator(client, chosen, n=int(cfg.get("n", 1)), intervention=intervention, helper=helper,
                          max_steps=int(cfg.get("max_steps", 15)), temperature=cfg.get("temperature"),
                          seed=cfg.get("seed"), system_prompt=cfg.get("system_prompt"),
                          trajectory_timeout_s=float(cfg.get("trajectory_timeout", 600)),
                          retry_failed=retry_failed, score=score)


def generator_configs(cfg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """One generator config per model: the preset itself, or one per entry of `generator.models` (a mixture)."""
    from bon.generators import mixed

    if cfg.get("models"):
        return list(mixed.model_configs(cfg))
    return [cfg]


def agent(cfg: Mapping[str, Any], model_cfgs: list[Mapping[str, Any]], clients: list[Any],
          tools_cfg: Mapping[str, Any] | None, intervention: Any, helper: Any, default_tools: list[str] | None,
          score: Any, search_judge: Any = None) -> Any:
    """The run's generator: one agent, or a mixture of one agent per model (`generator.models`, `generator.mix`)."""
    agents = [generator(c, client, tools_cfg, intervention, helper, default_tools, score=score,
                        search_judge=search_judge) for c, client in zip(model_cfgs, clients)]
    if not cfg.get("models"):
        return agents[0]
    from bon.generators.mixed import MixedGenerator

    return MixedGenerator(agents, n=int(cfg.get("n", 1)), weights=cfg.get("mix"),
                          retry_failed=bool(cfg.get("retry_failed", True)))


def helper_config(icfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stand-in model's client config, or None (no intervention, or a person at the terminal)."""
    from bon.generators.intervention import HANDING_OVER

    if icfg.get("policy", "none") not in HANDING_OVER:  # none, or reflect (the agent revises itself)
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


def helper(icfg: Mapping[str, Any], client: Any) -> Any:
    """Who takes the steps the policy hands over: the stand-in model (`client`), else a person at the terminal."""
    from bon.generators import intervention

    if client is None:
        return intervention.TerminalHuman()
    temperature = icfg["helper"].get("temperature")
    return intervention.ModelHelper(client, **({} if temperature is None else {"temperature": temperature}))


@contextlib.asynccontextmanager
async def clients(cache_cfg: Mapping[str, Any], *roles: tuple[str, Mapping[str, Any] | None],
                  budget: Any = None) -> AsyncIterator[list[Any]]:
    """One client per (role, config) sharing one response cache, one breaker per endpoint and the run's
    budget; all built (keys checked) before any work starts, all closed afterwards. A None config
    yields None (e.g. no generator when replaying). Clients of the same config object (the judge, the
    online judge and the comparing judge of one run) share one limiter: its concurrency and rpm are the
    config's, for all of them together."""
    from bon.llm.cache import open_cache

    mode = str(cache_cfg.get("mode", "readwrite"))
    cache = None if mode == "off" else open_cache(mode, cache_cfg.get("url"), cache_cfg.get("dir"))
    built: list[Any] = []
    breakers: dict[str, Any] = {}
    try:
        limiters: dict[int, Any] = {}
        for role, cfg in roles:
            client = None if cfg is None else make_client(cfg, cache, role, breakers, budget, limiters.get(id(cfg)))
            if client is not None:
                limiters.setdefault(id(cfg), client.limiter)
            built.append(client)
        yield built
    finally:
        for client in built:
            if client is not None:
                await client.aclose()
        if cache is not None:
            cache.close()


def judge_trajectories(judge_cfg: Mapping[str, Any], cache_cfg: Mapping[str, Any],
                       trajectories: list[Trajectory]) -> tuple[list[Judgement], dict[str, Any]]:
    """Judge recorded trajectories with a live judge (bon.prm_eval on AgentProcessBench, ReHAC's predictor)."""
    from bon.console import run_logging, say_failures

    async def go() -> tuple[list[Judgement], dict[str, Any]]:
        async with clients(cache_cfg, ("judge", judge_cfg)) as (client,):
            judgements = await judge(judge_cfg, client).judge_all(trajectories)
            say_failures("judging", client.stats)
            return judgements, client.stats.to_dict()

    with run_logging(None):
        return asyncio.run(go())
