"""`transport=native`: chat completions straight to an OpenAI-compatible endpoint over aiohttp, without litellm.

litellm spends 2-4 ms of CPU on every call (issue 16); for `openai/<model>` and `hosted_vllm/<model>` at an
OpenAI-compatible `api_base` (vLLM, SGLang, llama.cpp, a proxy) the request is plain JSON, so this module
builds it, sends it over one pooled aiohttp session per endpoint and reads the reply itself. It produces the
same `Outcome` as `bon.llm.transport.attempt_here` (so the client's limiter, retries, cache and accounting are
shared), and mirrors what litellm 1.102 does for these two providers, checked against the scripted server in
tests/test_native_transport.py:

- the body: the model name without its provider prefix; messages without None-valued keys (image_url strings
  wrapped as {"url": ...}; for hosted_vllm, reasoning_content/thinking_blocks dropped from assistant turns);
  tools (for hosted_vllm without `additionalProperties: false` and `strict`); the call's parameters minus None.
- failure kinds as `bon.llm.retry.classify` gives for litellm's exceptions: 429 rate_limit, 5xx server_error,
  401/403 auth, 404 not_found, 408 and timeouts timeout, refused/reset connections connection, other 4xx
  bad_request (context_window when the message says so), an unparseable 200 server_error (retried, as litellm's
  openai/ path does), a 200 without a choices list server_error, an empty one bad_response.
- prices from litellm's own price table (the JSON file shipped in the litellm package, read without importing
  litellm): base input/output rates, cached prompt tokens at the cache-read rate, and the `_above_<N>k_tokens`
  tiers, looked up as litellm looks up these providers' models.

Not mirrored (use transport=litellm for these): litellm's per-model parameter rewriting and checks for OpenAI's
own reasoning models (o-series, gpt-5: max_completion_tokens, temperature), its tool-schema flattening for
api.openai.com, and priority/flex service-tier prices.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bon.errors import BonError
from bon.llm.retry import KINDS, Failure, parse_retry_after
from bon.llm.transport import Outcome

PROVIDERS = ("openai", "hosted_vllm")
TRANSPORTS = ("litellm", "native")
# Where litellm reads each provider's endpoint and key from when none is given.
_BASE_ENV = {"openai": ("OPENAI_API_BASE", "OPENAI_BASE_URL"), "hosted_vllm": ("HOSTED_VLLM_API_BASE",)}
_KEY_ENV = {"openai": "OPENAI_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY"}
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "prompt is too long",
                    "too many tokens")
# Finish reasons some OpenAI-compatible servers send, as litellm normalises them (anything unknown: "stop").
_FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "function_call",
                   "content_filter": "content_filter", "eos": "stop", "eos_token": "stop", "stop_sequence": "stop",
                   "end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls", "error": "stop",
                   "abort": "stop"}


def split_model(model: str) -> tuple[str, str]:
    """("openai", "gpt-4o-mini") for "openai/gpt-4o-mini"; a name without a prefix is litellm's openai/."""
    provider, _, name = model.partition("/")
    return (provider, name) if name else ("openai", model)


def resolve_base(model: str, api_base: str | None, role: str | None = None) -> str:
    """The endpoint a native client posts to, or a one-line BonError when the model is not native-capable."""
    field = f"{role or 'client'}.transport"
    provider, _ = split_model(model)
    if provider not in PROVIDERS:
        raise BonError(f"{field}=native supports only openai/<model> and hosted_vllm/<model> at an OpenAI-compatible "
                       f"api_base; model {model!r} needs {field}=litellm (valid choices: {', '.join(TRANSPORTS)})")
    base = api_base or next((os.environ[v] for v in _BASE_ENV[provider] if os.environ.get(v)), None)
    if not base:
        raise BonError(f"{field}=native needs {role or 'client'}.api_base (an OpenAI-compatible endpoint such as "
                       f"http://127.0.0.1:8000/v1) for model {model!r}; without one use {field}=litellm "
                       f"(valid choices: {', '.join(TRANSPORTS)})")
    return base.rstrip("/")


# --------------------------------------------------------------------------- the request body


def _without_nones(message: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v is not None}


def _image_part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "image_url":
        url = part.get("image_url")
        if isinstance(url, str):
            return {**part, "image_url": {"url": url}}
        if isinstance(url, dict) and "format" in url:
            return {**part, "image_url": {k: v for k, v in url.items() if k != "format"}}
    return part


def _message(message: Mapping[str, Any], vllm: bool) -> dict[str, Any]:
    out = _without_nones(message)
    role, content = out.get("role"), out.get("content")
    if role == "user" and isinstance(content, list):
        out["content"] = [_image_part(p) for p in content]
    elif role == "assistant" and vllm:
        out.pop("reasoning_content", None)
        out.pop("thinking_blocks", None)
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            out["content"] = "\n".join(p.get("text", "") for p in content)
    return out


def _strip_schema(node: Any) -> Any:
    """A copy of a tool schema without `additionalProperties: false` and `strict` (litellm's hosted_vllm)."""
    if isinstance(node, dict):
        return {k: _strip_schema(v) for k, v in node.items()
                if k != "strict" and not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_strip_schema(v) for v in node]
    return node


def _python_patterns_only(node: Any) -> Any:
    """A copy of a tool schema without `pattern`s Python's re cannot compile (litellm's openai/ does this)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "pattern" and isinstance(v, str):
                try:
                    re.compile(v)
                except re.error:
                    continue
            out[k] = _python_patterns_only(v)
        return out
    if isinstance(node, list):
        return [_python_patterns_only(v) for v in node]
    return node


def request_body(model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
                 params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body litellm would send for this call to an openai/ or hosted_vllm/ endpoint (never mutates
    its arguments: the caller's messages and tools are also its cache key)."""
    provider, name = split_model(model)
    vllm = provider == "hosted_vllm"
    body: dict[str, Any] = {"model": name, "messages": [_message(m, vllm) for m in messages]}
    body.update((k, v) for k, v in params.items() if v is not None)
    if tools:
        body["tools"] = [_strip_schema(t) if vllm else _python_patterns_only(t) for t in tools]
    else:
        body.pop("tool_choice", None)
    return body


def _dumps(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # a lone surrogate or a non-JSON value: json escapes the one and names the other
        return json.dumps(body).encode()


# --------------------------------------------------------------------------- the reply


def _failure_for_status(status: int, text: str, headers: Mapping[str, Any] | None) -> Failure:
    """The Failure classify gives for litellm's exception for this HTTP status (text: the response body)."""
    if status in (401, 403):
        kind = "auth"
    elif status == 429:
        kind = "rate_limit"
    elif status == 408:
        kind = "timeout"
    elif status == 404:
        kind = "not_found"
    elif status >= 500:
        kind = "server_error"
    elif 400 <= status < 500:
        low = text.lower()
        kind = "context_window" if any(m in low for m in _CONTEXT_MARKERS) else "bad_request"
    else:  # 1xx/3xx: nothing a chat completion should answer with
        kind = "bad_response"
    retry_after = parse_retry_after(headers) if kind in ("rate_limit", "server_error") else None
    return Failure(kind, KINDS[kind], f"HTTP {status}: {_error_text(text)}", status, retry_after)


def _error_text(text: str) -> str:
    """The error's message from an OpenAI-shaped error body, else the body itself (cut short)."""
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict) and error.get("message"):
            code = f" ({error['code']})" if error.get("code") else ""
            return f"{error['message']}{code}"
    except (ValueError, AttributeError):
        pass
    return text[:500]


def reply_fields(model: str, status: int, raw: bytes, headers: Mapping[str, Any] | None = None) -> Outcome:
    """An HTTP response as an Outcome: the same fields bon.llm.transport.response_fields keeps of litellm's."""
    if status != 200:
        if 200 < status < 300:
            status = 200  # 201/203: accepted as litellm does (any 2xx is a success to httpx)
        else:
            return None, _failure_for_status(status, raw.decode("utf-8", "replace"), headers)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, Failure("server_error", True, f"unparseable response body: {exc}", status)
    if not isinstance(data, dict):
        return None, Failure("server_error", True, f"response body is not a JSON object: {raw[:200]!r}", status)
    if "error" in data and not data.get("choices"):  # an error sent with HTTP 200
        return None, _failure_for_status(400, raw.decode("utf-8", "replace"), headers)
    choices = data.get("choices")
    if not isinstance(choices, list):
        return None, Failure("server_error", True, f"the response's 'choices' is not a list: {raw[:200]!r}", status)
    if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        return None, Failure("bad_response", False, "the response has no choices/message")
    choice = choices[0]
    msg = choice["message"]
    message: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
    if msg.get("tool_calls"):
        message["tool_calls"] = [
            {"id": tc.get("id"), "type": "function",
             "function": {"name": (tc.get("function") or {}).get("name"),
                          "arguments": _arguments((tc.get("function") or {}).get("arguments"))}}
            for tc in msg["tool_calls"]]
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    finish = choice.get("finish_reason")
    return {"message": message, "finish_reason": _FINISH_REASONS.get(finish, "stop") if finish else "stop",
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "reasoning": msg.get("reasoning_content") or msg.get("reasoning") or None,
            "litellm_cost": price(model, prompt_tokens, completion_tokens, cached)}, None


def _arguments(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- prices


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    """litellm's bundled price table (model_prices_and_context_window_backup.json), found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices_and_context_window_backup.json"
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


@lru_cache(maxsize=256)
def rates(model: str) -> dict[str, Any] | None:
    """The price-table entry litellm uses for `model` (<provider>/<name>, then <name>, of the same provider)."""
    provider, name = split_model(model)
    table = price_table()
    for key in (f"{provider}/{name}", name):
        entry = table.get(key)
        if isinstance(entry, dict) and entry.get("litellm_provider") in (None, provider):
            return entry
    return None


def _tier(entry: Mapping[str, Any], prompt_tokens: int) -> str:
    """The `_above_<N>k_tokens` suffix whose threshold the prompt passes (highest first), or ""."""
    best, suffix = -1.0, ""
    for key in entry:
        m = re.fullmatch(r"input_cost_per_token(_above_(\d+(?:\.\d+)?)(k?)_tokens)", key)
        if m and entry[key] is not None:
            threshold = float(m.group(2)) * (1000 if m.group(3) else 1)
            if prompt_tokens > threshold > best:
                best, suffix = threshold, m.group(1)
    return suffix


def price(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float | None:
    """USD for one response as litellm prices it, or None when its table does not know the model."""
    entry = rates(model)
    if entry is None:
        return None
    tier = _tier(entry, prompt_tokens)

    def rate(key: str, default: float | None = 0.0) -> float | None:
        value = entry.get(key + tier) if tier else None
        value = entry.get(key) if value is None else value
        return default if value is None else float(value)

    input_rate = rate("input_cost_per_token") or 0.0
    read_rate = rate("cache_read_input_token_cost", None)
    cached = min(cached_tokens, prompt_tokens) if read_rate is not None else 0
    return ((prompt_tokens - cached) * input_rate + cached * (read_rate or 0.0)
            + completion_tokens * (rate("output_cost_per_token") or 0.0))


def price_known(model: str) -> bool:
    entry = rates(model)
    return entry is not None and bool(entry.get("input_cost_per_token") or entry.get("output_cost_per_token"))


# --------------------------------------------------------------------------- sessions and attempts

_sessions: dict[tuple[int, str], Any] = {}  # (id of the event loop, scheme://host:port) -> aiohttp.ClientSession


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _session(url: str) -> Any:
    """The process's pooled session for `url`'s endpoint on the running loop (shared by every client of it)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), _origin(url))
    session = _sessions.get(key)
    if session is None or session.closed:
        import aiohttp

        # limit=0: no cap of aiohttp's own; the client's Limiter decides how many requests are in flight
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, trust_env=False)  # proxies: _proxy, once
        _sessions[key] = session
    return session


def _proxy(url: str) -> str | None:
    """The *_PROXY variable that applies to `url` (honouring NO_PROXY), read once per endpoint as httpx does."""
    import urllib.request

    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):  # NO_PROXY (and, on macOS, the system settings)
        return None
    return urllib.request.getproxies_environment().get(urlsplit(url).scheme)


async def close_sessions() -> None:
    """Close every pooled session on the running loop (a later call opens new ones)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _sessions if k[0] == loop_id]:
        await _sessions.pop(key).close()


class NativeTransport:
    """One model's endpoint: makes single attempts and reports each as an Outcome (no retries here)."""

    def __init__(self, model: str, api_base: str | None, api_key: str | None, timeout: float,
                 role: str | None = None) -> None:
        self.model = model
        self.url = resolve_base(model, api_base, role) + "/chat/completions"
        provider, _ = split_model(model)
        key = api_key or os.environ.get(_KEY_ENV[provider]) or ("fake-api-key" if provider == "hosted_vllm" else None)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.timeout = timeout
        self._client_timeout: Any = None
        self._proxy_url = _proxy(self.url)

    def __repr__(self) -> str:  # never shows the key
        return f"NativeTransport({self.model!r}, url={self.url!r})"

    async def attempt(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
                      params: Mapping[str, Any], on_send: Callable[[bool], None] | None = None) -> Outcome:
        """One POST; every failure becomes a classified Failure (only cancellation propagates)."""
        import aiohttp

        if self._client_timeout is None:
            self._client_timeout = aiohttp.ClientTimeout(total=self.timeout)
        data = _dumps(request_body(self.model, messages, tools, params))
        session = _session(self.url)
        if on_send is not None:
            on_send(True)  # nothing to set up first: the request leaves now
        try:
            async with session.post(self.url, data=data, headers=self._headers, timeout=self._client_timeout,
                                    proxy=self._proxy_url) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            return None, Failure("timeout", True, f"no response in {self.timeout:g} s ({type(exc).__name__})")
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            return None, Failure("connection", True, f"{type(cause).__name__}: {cause}")
        except (aiohttp.ClientError, OSError) as exc:  # reset, disconnected, bad payload framing
            return None, Failure("connection", True, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a failed attempt is data; never loop on the unknown
            return None, Failure("error", False, f"{type(exc).__name__}: {exc}")
        return reply_fields(self.model, status, raw, headers)
