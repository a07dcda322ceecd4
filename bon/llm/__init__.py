"""The shared LLM-call layer for live judges and generators.

One `LLMClient` per model: litellm underneath (imported lazily), our own bounded concurrency and
rate limit (`limits`), our own retries (`retry`), a circuit breaker and a spending cap (`guards`),
a persistent multi-process-safe response cache (`cache`) and per-call token and cost accounting
(`CallResult`, `Stats`).
"""
from bon.llm.cache import MODES as CACHE_MODES
from bon.llm.cache import ResponseCache, cache_key, default_cache_dir
from bon.llm.client import CallResult, LLMClient, Stats
from bon.llm.guards import Breaker, Budget, EndpointDown
from bon.llm.limits import Limiter
from bon.llm.retry import Failure, RetryPolicy, classify

__all__ = [
    "CACHE_MODES", "Breaker", "Budget", "CallResult", "EndpointDown", "Failure", "LLMClient", "Limiter",
    "ResponseCache", "RetryPolicy", "Stats", "cache_key", "classify", "default_cache_dir",
]
