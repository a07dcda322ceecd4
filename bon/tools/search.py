"""`web_search`: one search tool for the agent, several search APIs behind it.

A provider is a small class that knows one API's request and response shape (`request`, `parse`);
the tool owns everything they share: the HTTP client, timeouts, error mapping and rendering. Adding a
provider means adding a class and one line in `PROVIDERS`.

The default provider is SearXNG: free, self-hosted and keyless, so sampling N trajectories over a
benchmark costs no API fees and needs no secret; point `base_url` at your instance (its settings.yml
must list `json` under `search.formats`). Tavily, Serper and Brave need a key in an environment variable.

The key never leaves the request headers: every text taken from an API answer passes through `_scrub`
before it is cut or shown (and the whole reply once more after), so an API that echoes the request
back in an error body cannot leak the key, or a fragment of it, into a trajectory.
"""
from __future__ import annotations

import html
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from bon.errors import BonError, unknown_choice
from bon.tools.base import BAD_ARGUMENTS, TIMEOUT, Tool, ToolContext, ToolResult, option
from bon.tools.loop_client import LoopClient

AUTH_ERROR = "auth_error"
RATE_LIMITED = "rate_limited"
HTTP_ERROR = "http_error"
NETWORK_ERROR = "network_error"
BAD_RESPONSE = "bad_response"

SNIPPET_CHARS = 500  # per result: enough for the fact, short enough for 10 results per turn
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request to a search API (the tool sends it)."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class BadResponse(Exception):
    """The API answered 200 with a body that is not the documented shape."""


class Provider(ABC):
    """One search API: how to ask it for `count` results and how to read its answer."""

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    key_env: ClassVar[str | None]  # the default environment variable holding the key; None: keyless
    max_count: ClassVar[int]  # the most results one request may ask for

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key

    @abstractmethod
    def request(self, query: str, count: int) -> ApiRequest:
        """The request for `query`, asking for `count` results where the API allows it."""

    @abstractmethod
    def parse(self, data: Any) -> list[SearchHit]:
        """The hits in a decoded JSON body, best first; raise `BadResponse` if the shape is wrong."""

    def hint(self, status: int) -> str:
        """Extra advice for an error status (e.g. a setting to check), or ""."""
        return ""


def _items(data: Any, *path: str) -> list[Any]:
    """The list at `path` in `data`; a missing key means no results, a wrong type is `BadResponse`."""
    node = data
    for i, key in enumerate(path):
        if not isinstance(node, dict):
            where = ".".join(path[:i]) or "the body"
            raise BadResponse(f"expected a JSON object at {where}, got {type(node).__name__}")
        node = node.get(key)
        if node is None:
            return []
    if not isinstance(node, list):
        raise BadResponse(f"expected a list at {'.'.join(path)}, got {type(node).__name__}")
    return node


def _hits(items: list[Any], title: str, url: str, snippet: str) -> list[SearchHit]:
    """SearchHits from result objects, reading the given field names; entries without a URL are skipped."""
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(url), str) and item[url].strip():
            out.append(SearchHit(title=str(item.get(title) or ""), url=item[url].strip(),
                                 snippet=str(item.get(snippet) or "")))
    return out


class Tavily(Provider):
    # POST {base}/search, `Authorization: Bearer <key>`, JSON {"query", "max_results"} (at most 20);
    # we read results[].title, results[].url, results[].content.
    name = "tavily"
    default_base_url = "https://api.tavily.com"
    key_env = "TAVILY_API_KEY"
    max_count = 20

    def request(self, query: str, count: int) -> ApiRequest:
        return ApiRequest("POST", f"{self.base_url}/search", json={"query": query, "max_results": count},
                          headers={"Authorization": f"Bearer {self._api_key}"})

    def parse(self, data: Any) -> list[SearchHit]:
        return _hits(_items(data, "results"), "title", "url", "content")


class Serper(Provider):
    # POST {base}/search, header `X-API-KEY: <key>`, JSON {"q", "num"};
    # we read organic[].title, organic[].link, organic[].snippet (Google's organic results, in rank order).
    name = "serper"
    default_base_url = "https://google.serper.dev"
    key_env = "SERPER_API_KEY"
    max_count = 100

    def request(self, query: str, count: int) -> ApiRequest:
        return ApiRequest("POST", f"{self.base_url}/search", json={"q": query, "num": count},
                          headers={"X-API-KEY": self._api_key or ""})

    def parse(self, data: Any) -> list[SearchHit]:
        return _hits(_items(data, "organic"), "title", "link", "snippet")


class Brave(Provider):
    # GET {base}/web/search?q=...&count=... (count at most 20), header `X-Subscription-Token: <key>`;
    # we read web.results[].title, web.results[].url, web.results[].description (which may hold <strong> tags).
    name = "brave"
    default_base_url = "https://api.search.brave.com/res/v1"
    key_env = "BRAVE_API_KEY"
    max_count = 20

    def request(self, query: str, count: int) -> ApiRequest:
        return ApiRequest("GET", f"{self.base_url}/web/search", params={"q": query, "count": count},
                          headers={"X-Subscription-Token": self._api_key or "", "Accept": "application/json"})

    def parse(self, data: Any) -> list[SearchHit]:
        return _hits(_items(data, "web", "results"), "title", "url", "description")


class SearXNG(Provider):
    # GET {base}/search?q=...&format=json (no key; the instance must enable the json format, else 403);
    # we read results[].title, results[].url, results[].content. The API has no result count: we cut.
    name = "searxng"
    default_base_url = "http://localhost:8080"
    key_env = None
    max_count = 50

    def request(self, query: str, count: int) -> ApiRequest:
        return ApiRequest("GET", f"{self.base_url}/search", params={"q": query, "format": "json"})

    def parse(self, data: Any) -> list[SearchHit]:
        return _hits(_items(data, "results"), "title", "url", "content")

    def hint(self, status: int) -> str:
        if status == 403:
            return " (SearXNG answers 403 when `json` is missing from search.formats in its settings.yml)"
        return ""


PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (SearXNG, Tavily, Serper, Brave)}


def clean_text(text: str, limit: int = SNIPPET_CHARS) -> str:
    """Plain one-line text: tags dropped, entities decoded, whitespace collapsed, cut at `limit`."""
    out = _SPACE.sub(" ", html.unescape(_TAG.sub("", text))).strip()
    return out if len(out) <= limit else out[: limit - 1].rstrip() + "…"


def render(query: str, provider: str, hits: list[SearchHit]) -> str:
    """Numbered results as the model reads them."""
    if not hits:
        return (f"No results for {query!r} ({provider}). "
                "Try fewer or different keywords, or drop quotes and operators.")
    lines = [f"{len(hits)} result(s) for {query!r} ({provider}):", ""]
    for i, hit in enumerate(hits, 1):
        lines.append(f"{i}. {clean_text(hit.title, 200) or '(no title)'}")
        lines.append(f"   URL: {hit.url}")
        snippet = clean_text(hit.snippet)
        if snippet:
            lines.append(f"   {snippet}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _error_detail(response: httpx.Response, scrub: Callable[[str], str]) -> str:
    """A short message from an error body: its JSON message field if it has one, else its text.
    `scrub` runs on the whole text before anything is cut, so no fragment of a secret survives a cut."""
    text = scrub(response.text)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("error") or value.get("detail")
            if isinstance(value, str) and value.strip():
                return clean_text(value, 300)
    return clean_text(text, 300)


class WebSearch(Tool):
    name = "web_search"
    description = ("Search the web. Returns numbered results, each with a title, URL and snippet. "
                   "Use specific keywords; to read a result in full, open its URL.")
    parameters = {
        "type": "object", "additionalProperties": False, "required": ["query"],
        "properties": {
            "query": {"type": "string",
                      "description": "the search query, e.g. 'Mercedes Sosa studio albums 2000-2009'"},
            "max_results": {"type": "integer", "minimum": 1,
                            "description": "how many results to return (capped by the configuration)"},
        },
    }

    def __init__(self, *, provider: str = "searxng", base_url: str | None = None, api_key_env: str | None = None,
                 max_results: int = 5, timeout: float = 20.0, proxy: str | None = None) -> None:
        if provider not in PROVIDERS:
            raise unknown_choice("tools.web_search.provider", provider, PROVIDERS)
        cls = PROVIDERS[provider]
        option("web_search", "max_results", max_results, integer=True, minimum=1)
        if max_results > cls.max_count:
            raise BonError(f"tools.web_search.max_results must be <= {cls.max_count} for {provider}, "
                           f"got {max_results}")
        option("web_search", "timeout", timeout, strict=True)
        url = base_url or cls.default_base_url
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise BonError(f"tools.web_search.base_url must be an http(s) URL, got {base_url!r}")
        api_key = None
        if cls.key_env is None:
            if api_key_env:
                raise BonError(f"tools.web_search.api_key_env: the {provider} provider takes no API key")
        else:
            env = api_key_env or cls.key_env
            api_key = os.environ.get(env, "").strip()
            if not api_key:
                raise BonError(f"web_search provider {provider!r} needs an API key: set the environment "
                               f"variable {env} (or name another one with tools.web_search.api_key_env)")
        self.provider: Provider = cls(url, api_key)
        self.max_results = max_results
        self.parameters = {**self.parameters, "properties": {
            **self.parameters["properties"],
            "max_results": {"type": "integer", "minimum": 1, "maximum": max_results,
                            "description": f"how many results to return (default and maximum {max_results})"}}}
        self.timeout = float(timeout)
        self.proxy = proxy
        self._secret = api_key
        self._client = LoopClient(self._new_client)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), trust_env=False, proxy=self.proxy,
                                 follow_redirects=False, headers={"User-Agent": "bon-web-search/0.1"})

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _scrub(self, text: str) -> str:
        """`text` with the API key replaced; applied to every API-derived text before it is cut or shown."""
        return text.replace(self._secret, "[redacted]") if self._secret else text

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        result = await self._search(arguments)
        if self._secret and self._secret in result.content:  # a backstop: _search already scrubs at the source
            return ToolResult(self._scrub(result.content), result.error_kind, result.answer)
        return result

    async def _search(self, arguments: dict[str, Any]) -> ToolResult:
        query = arguments["query"].strip()
        if not query:
            return ToolResult.error(BAD_ARGUMENTS, "query is empty")
        count = arguments.get("max_results", self.max_results)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            return ToolResult.error(BAD_ARGUMENTS, f"max_results must be >= 1, got {count}")
        count = min(count, self.max_results)
        p = self.provider
        req = p.request(query, count)
        try:
            response = await self._http().request(req.method, req.url, params=req.params, json=req.json,
                                                  headers=req.headers)
        except httpx.TimeoutException:
            return ToolResult.error(TIMEOUT, f"the {p.name} search API did not answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return ToolResult.error(NETWORK_ERROR, f"could not reach the {p.name} search API at {p.base_url} "
                                                   f"({type(exc).__name__}: {self._scrub(str(exc))})")
        status = response.status_code
        if status >= 300:
            detail = _error_detail(response, self._scrub)
            said = f": {detail}" if detail else ""
            if status in (401, 403):
                return ToolResult.error(AUTH_ERROR, f"the {p.name} search API refused the request "
                                                    f"(HTTP {status}){said}{p.hint(status)}")
            if status == 429:
                wait = response.headers.get("retry-after")
                after = f"; retry after {wait} s" if wait else ""
                return ToolResult.error(RATE_LIMITED, f"the {p.name} search API is rate limiting requests "
                                                      f"(HTTP 429){after}")
            if status < 400:
                where = response.headers.get("location", "?")
                return ToolResult.error(HTTP_ERROR, f"the {p.name} search API redirected (HTTP {status}) to "
                                                    f"{where}; set tools.web_search.base_url to the final address")
            return ToolResult.error(HTTP_ERROR, f"the {p.name} search API failed (HTTP {status}){said}"
                                                f"{p.hint(status)}")
        try:
            data = json.loads(response.content)
            hits = p.parse(data)
        except ValueError:
            return ToolResult.error(BAD_RESPONSE, f"the {p.name} search API returned a body that is not JSON: "
                                                  f"{clean_text(self._scrub(response.text), 200)!r}")
        except BadResponse as exc:
            return ToolResult.error(BAD_RESPONSE, f"the {p.name} search API returned an unexpected shape: {exc}")
        hits = [SearchHit(self._scrub(h.title), self._scrub(h.url), self._scrub(h.snippet)) for h in hits[:count]]
        return ToolResult(render(query, p.name, hits))
