"""`LLMClient`: one model's chat completions through litellm, limited, retried, cached and costed.

Every call returns a `CallResult`, never raises for an API failure: a failed call is data (status
"failed" with the kind of failure) that judges and generators record and summaries count. Only
programming errors and cancellation propagate.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bon.errors import BonError
from bon.llm import native
from bon.llm.cache import ResponseCache, cache_key
from bon.llm.guards import DEFAULT_BREAKER_AFTER, Breaker, Budget, endpoint_of
from bon.llm.limits import Limiter
from bon.llm.native import TRANSPORTS, NativeTransport, close_sessions
from bon.llm.retry import Failure, RetryPolicy
from bon.llm.transport import WorkerPool, attempt_here, close_litellm_clients, import_litellm

log = logging.getLogger(__name__)
# One line per failed call: meant for the run's log file (bon.live keeps it off the terminal).
call_log = logging.getLogger("bon.llm.calls")

# Sent as the key when a custom api_base is used without api_key_env, so that the provider's
# default key (e.g. OPENAI_API_KEY) is never sent to a local or third-party server by accident.
PLACEHOLDER_KEY = "no-key"


@dataclass(frozen=True)
class CallResult:
    """The outcome of one `complete` call (after all retries).

    `message` is the assistant message as a plain OpenAI-format dict (role, content, tool_calls
    with JSON-string arguments). `cost_usd` is None when the price is unknown. For a cache hit,
    tokens, cost and latency describe the original call (`cached` says it cost nothing now).
    """

    status: Literal["ok", "failed"]
    model: str
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # the successful (or last) HTTP attempt
    wall_s: float = 0.0  # the whole call: queueing, retries, backoff
    cost_usd: float | None = None
    attempts: int = 0
    cached: bool = False
    reason: str | None = None  # failure kind (see bon.llm.retry.KINDS)
    error: str | None = None  # the failure's message, credentials removed
    reasoning: str | None = None  # provider reasoning text (e.g. reasoning_content), kept out of `message`

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def content(self) -> str | None:
        return (self.message or {}).get("content")

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return list((self.message or {}).get("tool_calls") or [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a cache row holds: the response, not how we got it.
_CACHED_FIELDS = ("model", "message", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s",
                  "cost_usd", "reasoning")


@dataclass
class Stats:
    """Running totals for a stage: shown on progress bars, written to summary.json.

    Tokens and cost count live calls only (what this run spent); `saved_cost_usd` is what the
    cache hits had cost when first made. `unpriced` counts live calls whose price is unknown.
    """

    calls: int = 0
    ok: int = 0
    failed: int = 0
    cache_hits: int = 0
    requests: int = 0  # HTTP attempts
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    saved_cost_usd: float = 0.0
    cached_tokens: int = 0  # what the cache hits took when first made (a method's compute, not this run's)
    cached_unpriced: int = 0  # cache hits whose price is unknown
    failures: dict[str, int] = field(default_factory=dict)
    failure_example: dict[str, str] = field(default_factory=dict)  # kind -> the last such call's error
    unpriced_models: list[str] = field(default_factory=list)

    def add(self, r: CallResult) -> None:
        self.calls += 1
        if r.ok:
            self.ok += 1
        else:
            self.failed += 1
            self.failures[r.reason or "error"] = self.failures.get(r.reason or "error", 0) + 1
            self.failure_example[r.reason or "error"] = (r.error or "")[:300]
        if r.cached:
            self.cache_hits += 1
            self.saved_cost_usd += r.cost_usd or 0.0
            self.cached_tokens += r.prompt_tokens + r.completion_tokens
            self.cached_unpriced += r.ok and r.cost_usd is None
            return
        self.requests += r.attempts
        self.retries += max(0, r.attempts - 1)
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        if r.cost_usd is None:
            self.unpriced += r.ok
            if r.ok and r.model not in self.unpriced_models:
                self.unpriced_models.append(r.model)
        else:
            self.cost_usd += r.cost_usd

    def merge(self, other: Stats) -> Stats:
        """A new Stats summing both (e.g. a stage's judge and generator clients)."""
        mapped = ("failures", "failure_example", "unpriced_models")
        out = Stats(**{k: v for k, v in asdict(self).items() if k not in mapped})
        for k, v in asdict(other).items():
            if k not in mapped:
                setattr(out, k, getattr(out, k) + v)
        out.failures = dict(self.failures)
        for k, v in other.failures.items():
            out.failures[k] = out.failures.get(k, 0) + v
        out.failure_example = {**self.failure_example, **other.failure_example}
        out.unpriced_models = list(dict.fromkeys(self.unpriced_models + other.unpriced_models))
        return out

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def postfix(self) -> dict[str, str]:
        """Compact fields for tqdm's set_postfix (the bar itself counts done)."""
        tok = self.tokens
        tok_s = f"{tok / 1e6:.1f}M" if tok >= 1e6 else f"{tok / 1e3:.1f}k" if tok >= 1e3 else str(tok)
        out = {"failed": str(self.failed), "cached": str(self.cache_hits), "tok": tok_s}
        if self.unpriced and not self.cost_usd:
            return {**out, "cost": "unpriced"}  # the plan line said which model and how to price it
        return {**out, "cost": f"${self.cost_usd:.4f}" + ("+unpriced" if self.unpriced else "")}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = self.tokens
        d["cost_usd"] = round(self.cost_usd, 6)
        d["saved_cost_usd"] = round(self.saved_cost_usd, 6)
        d["cost_complete"] = self.unpriced == 0
        return d


def format_usage(stage: str, st: Mapping[str, Any]) -> str:
    """One printed line for a stage's `Stats.to_dict()`: calls, failures, cache hits, tokens, dollars."""
    cost = f"${st['cost_usd']:.4f}"
    if st["unpriced"]:
        models = ", ".join(st.get("unpriced_models") or []) or "?"
        cost = (f"cost unknown ({models} has no price)" if not st["cost_usd"] else
                f"{cost} + {st['unpriced']} calls of unknown price ({models})")
    return (f"{stage}: {st['calls']} calls ({st['failed']} failed, {st['cache_hits']} cached, {st['retries']} "
            f"retries), {st['prompt_tokens'] + st['completion_tokens']} tokens, {cost}")


def _check_prices(prices: Mapping[str, Any] | None) -> tuple[float, float] | None:
    if prices is None:
        return None
    try:
        return float(prices["input_per_mtok"]), float(prices["output_per_mtok"])
    except (KeyError, TypeError, ValueError):
        raise BonError("prices must give numbers for input_per_mtok and output_per_mtok "
                       f"(USD per million tokens); got {dict(prices)!r}") from None


class LLMClient:
    """Chat completions for one model, with limits, retries, a cache and accounting.

    `api_key_env` names the environment variable holding the key; it is read here, so a missing
    variable fails before any work starts. Without it litellm's default variable for the provider
    applies, except with a custom `api_base`, where no key is sent (see PLACEHOLDER_KEY).
    `params` (temperature, max_tokens, seed, ...) go to every call and into the cache key.
    `prices` ({input_per_mtok, output_per_mtok} in USD) take precedence over litellm's price data.
    `workers` > 0 makes the HTTP attempts in that many worker processes (bon.llm.transport): worth it
    only when litellm's CPU cost per call, not the server, limits the throughput.
    `transport` "native" sends openai/ and hosted_vllm/ calls to `api_base` over aiohttp without litellm
    (bon.llm.native: same bodies, failure kinds, cache keys and prices, a fraction of the CPU); it refuses
    `workers` > 0, which exist only to spread litellm's CPU cost over processes.
    `breaker` (or a new one tripping after `breaker_after` requests) stops the run when the endpoint
    never answers; `budget` caps the run's spending (both in bon.llm.guards; share them between
    clients of one endpoint / one run). `role` ("generator", "judge") names the config in messages.
    """

    def __init__(self, model: str, *, api_base: str | None = None, api_key_env: str | None = None,
                 concurrency: int = 16, rpm: int | None = None, rpm_period_s: float = 60.0,
                 timeout: float = 120.0, max_attempts: int = 5, backoff_base_s: float = 1.0,
                 max_delay_s: float = 60.0, cache: ResponseCache | None = None,
                 prices: Mapping[str, Any] | None = None, limiter: Limiter | None = None,
                 stats: Stats | None = None, jitter_seed: int | None = None, workers: int = 0,
                 breaker: Breaker | None = None, breaker_after: int = DEFAULT_BREAKER_AFTER,
                 budget: Budget | None = None, role: str | None = None, transport: str = "litellm",
                 **params: Any) -> None:
        if max_attempts < 1:
            raise BonError("max_attempts must be >= 1")
        if timeout <= 0:
            raise BonError("timeout must be > 0 seconds")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise BonError(f"workers must be an integer >= 0 (0: litellm runs in this process), got {workers!r}")
        where = f"{role}." if role else ""
        if transport not in TRANSPORTS:
            raise BonError(f"{where}transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
        if transport == "native" and workers:
            raise BonError(f"{where}workers={workers} applies to {where}transport=litellm only (worker processes "
                           f"spread litellm's CPU cost; native needs none): set {where}workers=0")
        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self._api_key: str | None = None
        if api_key_env:
            value = os.environ.get(api_key_env)
            if not value:
                raise BonError(f"environment variable {api_key_env} is not set; it must hold the API key "
                               f"for model {model!r}")
            self._api_key = value
        elif api_base:
            self._api_key = PLACEHOLDER_KEY
        self.timeout = float(timeout)
        self.policy = RetryPolicy(max_attempts=max_attempts, base_delay=backoff_base_s, max_delay=max_delay_s)
        self.limiter = limiter or Limiter(concurrency=concurrency, rpm=rpm, period=rpm_period_s)
        self.cache = cache if cache is not None and cache.mode != "off" else None
        self.prices = _check_prices(prices)
        self.stats = stats if stats is not None else Stats()
        self.params = dict(params)
        self._rng = random.Random(jitter_seed)
        self.pool = WorkerPool(workers) if workers else None
        self.transport = transport
        self.native = (NativeTransport(model, api_base, self._api_key, self.timeout, role)
                       if transport == "native" else None)
        self.endpoint = endpoint_of(model, api_base)
        self.breaker = breaker or Breaker(self.endpoint, breaker_after)
        self.budget = budget
        self.role = role
        self.unpriced_noted = False

    def __repr__(self) -> str:  # never shows the key
        return (f"LLMClient(model={self.model!r}, api_base={self.api_base!r}, api_key_env={self.api_key_env!r}, "
                f"limiter={self.limiter!r}, cache={self.cache!r})")

    # -- public API
    async def complete(self, messages: Sequence[Mapping[str, Any]],
                       tools: Sequence[Mapping[str, Any]] | None = None, sample: int = 0,
                       **params: Any) -> CallResult:
        """One chat completion: from the cache if there, else from the API (retrying transient
        failures). `sample` distinguishes repeated samples of the same request in the cache."""
        started = time.perf_counter()
        call_params = {**self.params, **params}
        tools = list(tools) if tools else None
        key = None
        if self.cache is not None:
            key = cache_key(self.model, messages, tools, call_params, sample)
            try:
                stored = await self.cache.aget(key)
            except sqlite3.Error as exc:  # an unusable cache must not stop the run: call the API
                log.warning("response cache %s unreadable (%s); calling the API", self.cache.path, exc)
                stored = None
            if stored is not None:
                result = CallResult(status="ok", attempts=0, cached=True, wall_s=time.perf_counter() - started,
                                    **{k: stored[k] for k in _CACHED_FIELDS if k in stored})
                self.stats.add(result)
                return result
        result = await self._call(messages, tools, call_params, started)
        if result.ok and key is not None and self.cache is not None and self.cache.writable:
            try:
                await self.cache.aput(key, self.model, {k: getattr(result, k) for k in _CACHED_FIELDS})
            except sqlite3.Error as exc:  # keep the result we paid for; only its reuse is lost
                log.warning("could not store a response in %s: %s", self.cache.path, exc)
        self.stats.add(result)
        return result

    async def aclose(self) -> None:
        """Stop the worker processes and close litellm's pooled HTTP sessions, so no connection outlives
        the run. The sessions are litellm's, shared by every client in the process: call this at the end
        of a run (a later call simply opens new ones); so are transport=native's aiohttp sessions.
        The cache is left open: it may be shared."""
        if self.pool is not None:
            await self.pool.aclose()
        if self.native is not None:
            await close_sessions()  # likewise shared: every native client's endpoint in this process
        await close_litellm_clients()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals
    async def _call(self, messages: Sequence[Mapping[str, Any]], tools: list | None,
                    params: dict[str, Any], started: float) -> CallResult:
        kwargs = self._litellm_kwargs(messages, tools, params) if self.native is None else {}
        attempt = 0
        while True:
            attempt += 1
            self.breaker.check()  # raises once the endpoint is known to be down
            budget = self.budget
            if budget is not None and budget.refuses():  # refused before queueing for a slot...
                return self._failed(Failure("budget", False, budget.why()), attempt - 1, 0.0, started)
            async with self.limiter.slot() as lease:
                self.breaker.check()
                if budget is not None and not budget.admit():  # ...and when about to send (spent meanwhile)
                    return self._failed(Failure("budget", False, budget.why()), attempt - 1, 0.0, started)
                t0 = time.perf_counter()
                if self.native is not None:
                    fields, failure = await self.native.attempt(messages, tools, params, lease.sent)
                elif self.pool is not None:
                    fields, failure = await self.pool.attempt(kwargs, self.timeout, lease.sent)
                else:
                    fields, failure = await attempt_here(kwargs, self.timeout, lease.sent)
                latency = time.perf_counter() - t0
            self.breaker.record(failure, f"{self.role or 'model'} {self.model}")
            if failure is None:
                assert fields is not None, "an attempt returns its fields or its failure"
                result = self._result(fields, attempt, latency, started)
                if self.budget is not None:
                    self.budget.charge(result.cost_usd)
                if result.cost_usd is None and not self.unpriced_noted:
                    self.unpriced_noted = True
                    log.warning(self.unpriced_hint())
                return result
            delay = self.policy.delay(attempt, failure, self._rng)
            if delay is None:
                return self._failed(failure, attempt, latency, started)
            log.debug("%s: attempt %d/%d failed (%s); retrying in %.2fs", self.model, attempt,
                      self.policy.max_attempts, failure.kind, delay)
            await asyncio.sleep(delay)

    def _litellm_kwargs(self, messages: Sequence[Mapping[str, Any]], tools: list | None,
                        params: dict[str, Any]) -> dict[str, Any]:
        # litellm may edit what it is given (for hosted_vllm/ it strips `additionalProperties` from tool schemas):
        # it gets copies, so the caller's messages and tools, and the cache keys made from them, stay as they were
        kwargs: dict[str, Any] = {**params, "model": self.model, "messages": copy.deepcopy(list(messages)),
                                  "timeout": self.timeout, "num_retries": 0, "max_retries": 0, "caching": False}
        if tools:
            kwargs["tools"] = copy.deepcopy(tools)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        return kwargs

    def _failed(self, failure: Failure, attempts: int, latency: float, started: float) -> CallResult:
        message = self._scrub(failure.message)
        if failure.retry_after is not None and failure.retry_after > self.policy.max_delay:
            message = (f"server asked to retry after {failure.retry_after:.0f}s, more than max_delay_s="
                       f"{self.policy.max_delay:g}: {message}")
        call_log.info("%s: call failed after %d attempt(s): %s: %s", self.model, attempts, failure.kind, message[:300])
        return CallResult(status="failed", model=self.model, attempts=attempts, latency_s=latency,
                          wall_s=time.perf_counter() - started, reason=failure.kind, error=message)

    def _result(self, fields: dict[str, Any], attempts: int, latency: float, started: float) -> CallResult:
        """A successful attempt; configured prices take precedence over litellm's (its price table, for native)."""
        if self.prices is not None:
            cost = (fields["prompt_tokens"] * self.prices[0] + fields["completion_tokens"] * self.prices[1]) / 1e6
        else:
            cost = fields.get("litellm_cost")
        return CallResult(status="ok", model=self.model, message=fields["message"],
                          finish_reason=fields["finish_reason"], prompt_tokens=fields["prompt_tokens"],
                          completion_tokens=fields["completion_tokens"], latency_s=latency,
                          wall_s=time.perf_counter() - started, cost_usd=cost, attempts=attempts,
                          reasoning=fields.get("reasoning"))

    def price_known(self) -> bool:
        """Whether responses will be priced: `prices` were given, or litellm's price map knows the model."""
        if self.prices is not None:
            return True
        if self.native is not None:
            return native.price_known(self.model)
        try:
            prompt, completion = import_litellm().cost_per_token(model=self.model, prompt_tokens=1000,
                                                                  completion_tokens=1000)
        except Exception:  # noqa: BLE001 - litellm raises a bare Exception for unmapped models
            return False
        return bool(prompt or completion)

    def unpriced_hint(self, roles: Sequence[str] = ()) -> str:
        """One line: this model has no price, tokens are counted, and how to set one (for `roles`)."""
        if roles:
            first, *others = roles
        elif self.role is not None:
            first, others = self.role, []
        else:  # a client made in code, not from a run's config
            return (f"no price known for model {self.model}: its cost is not counted, only its tokens; pass "
                    f"prices={{'input_per_mtok': <USD>, 'output_per_mtok': <USD>}} to LLMClient to count it")
        also = f" (and {', '.join(f'{r}.prices' for r in others)} likewise)" if others else ""
        return (f"no price known for model {self.model}: its cost is not counted, only its tokens; to count it "
                f"{self.price_setting(first)}{also}")

    def price_setting(self, role: str | None = None) -> str:
        """How a user gives this client's model a price: its role's `prices` option, or for one model of a
        mixture (role `generator.models[i]`) a `prices` in that model's entry."""
        role = role or self.role or "generator"
        prices = "{input_per_mtok: <USD>, output_per_mtok: <USD>}"
        if ".models[" in role:
            return f"give its entry in {role.split('[')[0]} a price: {{model: {self.model}, prices: {prices}}}"
        return f"set {role}.prices='{prices}'"

    async def cached(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None,
                     sample: int = 0, **params: Any) -> bool:
        """Whether `complete` with these arguments would be answered by the cache (no request)."""
        if self.cache is None:
            return False
        key = cache_key(self.model, messages, list(tools) if tools else None, {**self.params, **params}, sample)
        try:
            return await self.cache.aget(key) is not None
        except sqlite3.Error:
            return False

    def _scrub(self, text: str) -> str:
        """Remove the API key from text that may be logged or stored."""
        key = self._api_key
        if key and key != PLACEHOLDER_KEY and len(key) >= 4:
            text = text.replace(key, "***")
        return text
