"""Building the live parts of a run from their configs: LLM clients, judges, the agent and the stand-in helper.

Kept apart from the pipelines that use them (bon.live sequences generation and judging; bon.prm_eval and
the ReHAC judge predictor only judge), so a command that needs a client does not import a pipeline.
Clients built together share one response cache, one circuit breaker per endpoint and the run's budget.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Union, cast

from bon import config
from bon.config import CacheOptions, Helper, Intervention, LLMGenerator, LLMJudge
from bon.errors import BonError
from bon.types import Judgement, Trajectory

ClientOptions = Union[LLMGenerator, LLMJudge, Helper]  # what an LLMClient is built from
CLIENT_FIELDS = ("api_base", "api_key_env", "concurrency", "rpm", "timeout", "max_attempts", "prices", "workers",
                 "breaker_after", "transport")


def make_client(options: ClientOptions, cache: Any, role: str, breakers: dict[str, Any] | None = None,
                budget: Any = None, limiter: Any = None) -> Any:
    """An LLMClient for a generator, judge or helper's options (the API key is read from api_key_env here).
    Clients given the same `breakers` dict share one circuit breaker per endpoint; a given `limiter`
    is shared too (its concurrency and rpm then hold for all its clients together)."""
    from bon.llm import LLMClient
    from bon.llm.guards import DEFAULT_BREAKER_AFTER, Breaker, endpoint_of

    if not options.model:
        raise BonError(f"{role}.model is required for a live {role} (e.g. {role}=deepseek or {role}.model=...)")
    # a helper has no rpm, workers or breaker_after of its own: the client's defaults apply
    kwargs = {k: getattr(options, k) for k in CLIENT_FIELDS if getattr(options, k, None) is not None}
    breaker = None
    if breakers is not None:
        endpoint = endpoint_of(options.model, options.api_base)
        breaker = breakers.setdefault(endpoint, Breaker(endpoint, kwargs.get("breaker_after", DEFAULT_BREAKER_AFTER)))
    return LLMClient(options.model, cache=cache, role=role, breaker=breaker, budget=budget, limiter=limiter,
                     **kwargs)


def judge(options: LLMJudge, client: Any) -> Any:
    """The live LLM judge of a `judge` config, calling through `client`."""
    from bon.judges.llm import LLMJudge as Judge

    return Judge(client, str(options.name or options.model), mode=cast(Any, options.mode), samples=options.samples,
                 prompt_path=options.prompt, max_chars=options.max_chars, reask=options.reask,
                 temperature=options.temperature, quorum=options.quorum)


def generator(options: LLMGenerator, client: Any, tools_cfg: Mapping[str, Any] | None = None,
              intervention: Any = None, helper: Any = None, default_tools: list[str] | None = None,
              score: Any = None, search_judge: Any = None) -> Any:
    """The agent; `generator.tools` if set, else the dataset's tool set (`default_tools`); `score` is the
    dataset's rule for a trajectory's success (bon.datasets.taskset). With `generator.search` the agent
    searches step by step, `search_judge` labelling its candidate steps (bon.generators.search)."""
    from bon import tools
    from bon.generators.agent import AgentGenerator
    from bon.generators.search import SearchGenerator

    chosen = tools.get(list(options.tools or default_tools or ["final_answer"]), tools_cfg)
    common = dict(n=options.n, intervention=intervention, helper=helper, max_steps=options.max_steps,
                  temperature=options.temperature, seed=options.seed, system_prompt=options.system_prompt,
                  trajectory_timeout_s=float(options.trajectory_timeout), retry_failed=options.retry_failed,
                  score=score)
    if options.search != "none":
        return SearchGenerator(client, chosen, search_judge, method=options.search, k=options.search_k, **common)
    return AgentGenerator(client, chosen, **common)


def generator_configs(options: LLMGenerator) -> list[LLMGenerator]:
    """One generator config per model: the preset itself, or one per entry of `generator.models` (a mixture)."""
    from bon.generators import mixed

    return mixed.model_configs(options) if options.models else [options]


def agent(options: LLMGenerator, model_options: list[LLMGenerator], clients: list[Any],
          tools_cfg: Mapping[str, Any] | None, intervention: Any, helper: Any, default_tools: list[str] | None,
          score: Any, search_judge: Any = None) -> Any:
    """The run's generator: one agent, or a mixture of one agent per model (`generator.models`, `generator.mix`)."""
    agents = [generator(c, client, tools_cfg, intervention, helper, default_tools, score=score,
                        search_judge=search_judge) for c, client in zip(model_options, clients)]
    if not options.models:
        return agents[0]
    from bon.generators.mixed import MixedGenerator

    return MixedGenerator(agents, n=options.n, weights=options.mix, retry_failed=options.retry_failed)


def helper_config(options: Intervention) -> Helper | None:
    """The stand-in model's client options, or None (no intervention, or a person at the terminal)."""
    from bon.generators.intervention import HANDING_OVER

    if options.policy not in HANDING_OVER:  # none, or reflect (the agent revises itself)
        return None
    chosen = options.helper or config.typed(Helper, {})
    if chosen.kind == "terminal":
        return None
    if not chosen.model:
        raise BonError("intervention.helper.model is required (e.g. intervention.helper.model=openai/gpt-5), "
                       "or use intervention.helper.kind=terminal to take the steps yourself")
    return chosen


def helper(options: Intervention, client: Any) -> Any:
    """Who takes the steps the policy hands over: the stand-in model (`client`), else a person at the terminal."""
    from bon.generators import intervention

    if client is None or options.helper is None:
        return intervention.TerminalHuman()
    temperature = options.helper.temperature
    return intervention.ModelHelper(client, **({} if temperature is None else {"temperature": temperature}))


@contextlib.asynccontextmanager
async def clients(cache_options: CacheOptions, *roles: tuple[str, ClientOptions | None],
                  budget: Any = None) -> AsyncIterator[list[Any]]:
    """One client per (role, config) sharing one response cache, one breaker per endpoint and the run's
    budget; all built (keys checked) before any work starts, all closed afterwards. A None config
    yields None (e.g. no generator when replaying). Clients of the same config object (the judge, the
    online judge and the comparing judge of one run) share one limiter: its concurrency and rpm are the
    config's, for all of them together."""
    from bon.llm.cache import open_cache

    mode = cache_options.mode
    cache = None if mode == "off" else open_cache(mode, cache_options.url, cache_options.dir)
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


def judge_trajectories(judge_options: LLMJudge | Mapping[str, Any], cache_options: CacheOptions | Mapping[str, Any],
                       trajectories: list[Trajectory]) -> tuple[list[Judgement], dict[str, Any]]:
    """Judge recorded trajectories with a live judge (bon.prm_eval on AgentProcessBench, ReHAC's predictor)."""
    from bon.console import run_logging, say_failures

    options = config.typed(LLMJudge, judge_options, "judge.")
    cache_options = config.typed(CacheOptions, cache_options, "cache.")

    async def go() -> tuple[list[Judgement], dict[str, Any]]:
        async with clients(cache_options, ("judge", options)) as (client,):
            judgements = await judge(options, client).judge_all(trajectories)
            say_failures("judging", client.stats)
            return judgements, client.stats.to_dict()

    with run_logging(None):
        return asyncio.run(go())
