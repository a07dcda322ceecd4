"""Which failed LLM calls to retry, and how long to wait.

We retry ourselves (litellm's and the OpenAI SDK's retries are off) so that every attempt passes
our limiter again and is counted. Transient failures are retried: rate limits (waiting at least
what Retry-After asks), 5xx, timeouts, connection errors, unparseable bodies. Failures that a
retry cannot fix are not: authentication, context window, and every other 4xx. They are recorded
with a short `kind` so summaries can count them.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# kind -> retryable
KINDS = {
    "rate_limit": True,
    "server_error": True,
    "timeout": True,
    "connection": True,
    "auth": False,
    "context_window": False,
    "content_policy": False,
    "not_found": False,
    "bad_request": False,
    "bad_response": False,  # a 200 whose content we could not use (no choices): a model/API contract problem
    "error": False,  # anything unexpected (a bug or an unknown exception): never loop on it
    "budget": False,  # not sent: the run's budget (bon.llm.guards.Budget) was reached
}


_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "prompt is too long",
                    "too many tokens")


@dataclass(frozen=True)
class Failure:
    """A classified exception: its kind, whether to retry, and the server's requested wait."""

    kind: str
    retryable: bool
    message: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from Retry-After / retry-after-ms


class _Draws(Protocol):
    """What a backoff draws from: a `random.Random`, or the `random` module's shared one."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: wait U(0, min(max_delay, base * 2**(attempt-1)))."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, failure: Failure, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if not failure.retryable or attempt >= self.max_attempts:
            return None
        draws: _Draws = rng or random
        if failure.retry_after is not None and failure.retry_after > 0:
            if failure.retry_after > self.max_delay:
                return None  # the server asks for longer than we are willing to wait
            # Honour the request, plus up to 10% so a crowd told the same time does not return at once.
            return failure.retry_after * (1.0 + 0.1 * draws.random())
        return draws.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def parse_retry_after(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if not headers:
        return None
    get = headers.get
    ms = get("retry-after-ms") or get("Retry-After-Ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after") or get("Retry-After")
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _headers(exc: BaseException) -> Mapping[str, Any] | None:
    """Response headers of a failed call. litellm keeps the provider's headers in
    `litellm_response_headers`; the `response` it attaches to its exceptions is rebuilt and
    usually carries none."""
    for headers in (getattr(exc, "litellm_response_headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        if headers:
            return headers
    return None


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from (`__cause__`/`__context__`), outermost first."""
    out: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not e for e in out):
        out.append(link)
        link = link.__cause__ or link.__context__
    return out


def _no_connection(exc: BaseException) -> BaseException | None:
    """The innermost link in the chain saying the server could not be reached (refused, reset, DNS), if any.

    litellm reports a refused connection as an InternalServerError (HTTP 500) for the openai/ and
    hosted_vllm/ providers; only the exceptions it was raised from tell the truth. A timeout is not
    one of these (it is classified as a timeout)."""
    import socket

    found = None
    for link in _chain(exc):
        if isinstance(link, (asyncio.TimeoutError, TimeoutError)) or "Timeout" in type(link).__name__:
            return None
        if isinstance(link, (ConnectionError, socket.gaierror)) or type(link).__name__ in _CONNECT_ERRORS:
            found = link  # keep going: the innermost link names the cause best
    return found


# httpx, aiohttp and openai's names for "could not connect" (matched by name: no import needed).
_CONNECT_ERRORS = frozenset({"ConnectError", "ClientConnectorError", "ClientConnectorDNSError",
                             "ClientConnectorCertificateError", "ServerDisconnectedError", "APIConnectionError"})


def classify(exc: BaseException) -> Failure:
    """Map an exception from litellm (or asyncio) to a Failure."""
    message = str(exc) or type(exc).__name__
    status = _status(exc)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return Failure("timeout", True, message, status)
    try:
        import litellm  # already imported by whoever made the call
    except ImportError:  # pragma: no cover - litellm is a dependency
        litellm = None  # type: ignore[assignment]  # None stands for the missing module: checked below

    def kind_of() -> str:
        if litellm is not None:
            if isinstance(exc, litellm.ContextWindowExceededError):
                return "context_window"
            if isinstance(exc, litellm.ContentPolicyViolationError):
                return "content_policy"
            if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
                return "auth"
            if isinstance(exc, litellm.RateLimitError):
                return "rate_limit"
            if isinstance(exc, litellm.Timeout):  # before APIConnectionError: it is one in openai's tree
                return "timeout"
            if isinstance(exc, litellm.APIConnectionError):
                return "connection"
            if isinstance(exc, (litellm.InternalServerError, litellm.ServiceUnavailableError,
                                litellm.BadGatewayError)):
                return "server_error"
            if isinstance(exc, litellm.NotFoundError):
                return "not_found"
        if status is not None:
            if status in (401, 403):
                return "auth"
            if status == 429:
                return "rate_limit"
            if status == 408:
                return "timeout"
            if status >= 500:
                return "server_error"
            if 400 <= status < 500:
                return "bad_request"
        if isinstance(exc, ConnectionError):
            return "connection"
        return "error"

    kind = kind_of()
    if kind in ("server_error", "error", "connection"):
        cause = _no_connection(exc)
        if cause is not None:  # name the real cause: "ConnectionRefusedError: [Errno 111] ..."
            kind, message = "connection", f"{type(cause).__name__}: {cause or message}"
    if kind == "bad_request" and any(m in message.lower() for m in _CONTEXT_MARKERS):
        kind = "context_window"  # litellm recognises only some providers' wording
    retry_after = parse_retry_after(_headers(exc)) if kind in ("rate_limit", "server_error") else None
    return Failure(kind, KINDS[kind], message, status, retry_after)
