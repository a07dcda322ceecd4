"""web_search over real HTTP: a server on 127.0.0.1 plays each provider's API (checking what arrives
and answering in that API's JSON shape), and injects the failures the tool must report."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bon.errors import BonError
from bon.tools.base import ToolContext, run_tool
from bon.tools.search import PROVIDERS, WebSearch
from bon.types import Task

CTX = ToolContext(task=Task("t1", "q"))
FAKE_KEY = "sk-bon-SEARCH-FAKE-7d41e0c9-must-never-be-shown"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


Answer = tuple[int, Any]  # (status, JSON-able body, or bytes sent as is)


@dataclass
class ApiServer:
    """Answers every request with `respond(seen)`; records what arrived."""

    respond: Callable[[Seen], Answer] = lambda seen: (200, {})
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0
    stop_event: threading.Event = field(default_factory=threading.Event)

    def start(self) -> ApiServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                owner.seen.append(seen)
                if owner.delay and owner.stop_event.wait(owner.delay):
                    return
                status, payload = owner.respond(seen)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", "7")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def api():
    server = ApiServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for cls in PROVIDERS.values():
        if cls.key_env:
            monkeypatch.setenv(cls.key_env, FAKE_KEY)


def search(tool: WebSearch, **args: Any):
    async def go():
        try:
            return await tool.call(args, CTX)
        finally:
            await tool.aclose()
    return asyncio.run(go())


# Each provider: its base path under the server, what a correct request looks like, and a reply in its shape.
HITS = [("Mercedes <strong>Sosa</strong>", "https://en.wikipedia.org/wiki/Mercedes_Sosa",
         "Argentine singer &amp; <b>icon</b>"),
        ("Cantora", "https://example.org/cantora", "A 2009 album"),
        ("Misa Criolla", "https://example.org/misa", "")]


def tavily_check(seen: Seen, count: int) -> None:
    assert (seen.method, seen.path) == ("POST", "/search")
    assert seen.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert seen.body == {"query": "mercedes sosa", "max_results": count}


def serper_check(seen: Seen, count: int) -> None:
    assert (seen.method, seen.path) == ("POST", "/search")
    assert seen.headers["x-api-key"] == FAKE_KEY
    assert seen.body == {"q": "mercedes sosa", "num": count}


def brave_check(seen: Seen, count: int) -> None:
    assert (seen.method, seen.path) == ("GET", "/res/v1/web/search")
    assert seen.headers["x-subscription-token"] == FAKE_KEY
    assert seen.query == {"q": ["mercedes sosa"], "count": [str(count)]}


def searxng_check(seen: Seen, count: int) -> None:
    assert (seen.method, seen.path) == ("GET", "/search")
    assert seen.query == {"q": ["mercedes sosa"], "format": ["json"]}
    assert not any(FAKE_KEY in v for v in seen.headers.values())


PROVIDER_CASES = {
    "tavily": ("", tavily_check, lambda hits: {"query": "q", "results": [
        {"title": t, "url": u, "content": s, "score": 0.9} for t, u, s in hits]}),
    "serper": ("", serper_check, lambda hits: {"organic": [
        {"title": t, "link": u, "snippet": s, "position": i} for i, (t, u, s) in enumerate(hits, 1)]}),
    "brave": ("/res/v1", brave_check, lambda hits: {"type": "search", "web": {"results": [
        {"title": t, "url": u, "description": s} for t, u, s in hits]}}),
    "searxng": ("", searxng_check, lambda hits: {"query": "q", "number_of_results": len(hits), "results": [
        {"title": t, "url": u, "content": s, "engine": "x"} for t, u, s in hits]}),
}


@pytest.mark.parametrize("provider", sorted(PROVIDER_CASES))
def test_each_provider_speaks_its_api_and_results_read_well(api, provider):
    prefix, check, shape = PROVIDER_CASES[provider]
    api.respond = lambda seen: (200, shape(HITS))
    tool = WebSearch(provider=provider, base_url=api.base + prefix, max_results=5)
    result = search(tool, query="  mercedes sosa ", max_results=2)
    assert result.error_kind is None, result.content
    check(api.seen[0], 2)  # the agent asked for 2, under the cap of 5
    text = result.content
    assert "2 result(s) for 'mercedes sosa'" in text
    assert "1. Mercedes Sosa\n   URL: https://en.wikipedia.org/wiki/Mercedes_Sosa\n   Argentine singer & icon" in text
    assert "2. Cantora\n   URL: https://example.org/cantora\n   A 2009 album" in text
    assert "Misa Criolla" not in text  # cut to the count even when the API sends more (SearXNG always does)


def test_the_configured_maximum_caps_the_agents_request(api):
    api.respond = lambda seen: (200, PROVIDER_CASES["tavily"][2](HITS))
    tool = WebSearch(provider="tavily", base_url=api.base, max_results=3)
    assert tool.openai_schema()["function"]["parameters"]["properties"]["max_results"]["maximum"] == 3
    result = search(tool, query="mercedes sosa", max_results=50)
    tavily_check(api.seen[0], 3)
    assert "3 result(s)" in result.content
    search(WebSearch(provider="tavily", base_url=api.base, max_results=3), query="mercedes sosa")
    tavily_check(api.seen[1], 3)  # no max_results: the configured one


def test_no_results_is_a_clear_answer_not_an_error(api):
    api.respond = lambda seen: (200, {"type": "search"})  # Brave leaves out `web` when nothing matched
    result = search(WebSearch(provider="brave", base_url=api.base), query="zxqv nothing")
    assert result.error_kind is None
    assert result.content.startswith("No results for 'zxqv nothing'")


@pytest.mark.parametrize("status, body, kind, words", [
    (401, {"detail": {"error": "Unauthorized: missing or invalid API key."}}, "auth_error",
     "HTTP 401): Unauthorized: missing or invalid API key."),
    (403, {"message": "forbidden"}, "auth_error", "HTTP 403): forbidden"),
    (429, {"message": "slow down"}, "rate_limited", "retry after 7 s"),
    (500, {"error": "boom"}, "http_error", "HTTP 500): boom"),
    (503, b"<html>upstream down</html>", "http_error", "HTTP 503): upstream down"),
    (200, b"{not json", "bad_response", "not JSON"),
    (200, {"results": "not a list"}, "bad_response", "expected a list at results"),
    (200, ["a", "list"], "bad_response", "expected a JSON object"),
])
def test_failures_map_to_error_kinds(api, status, body, kind, words):
    api.respond = lambda seen: (status, body)
    result = search(WebSearch(provider="tavily", base_url=api.base), query="q")
    assert result.error_kind == kind, result.content
    assert words in result.content


def test_searxng_403_explains_the_json_format_setting(api):
    api.respond = lambda seen: (403, b"Forbidden")
    result = search(WebSearch(provider="searxng", base_url=api.base), query="q")
    assert result.error_kind == "auth_error" and "search.formats" in result.content


def test_slow_api_times_out(api):
    api.delay = 5
    result = search(WebSearch(provider="searxng", base_url=api.base, timeout=0.3), query="q")
    assert result.error_kind == "timeout"


def test_unreachable_api_is_a_network_error():
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = search(WebSearch(provider="searxng", base_url=f"http://127.0.0.1:{port}"), query="q")
    assert result.error_kind == "network_error"
    assert f"127.0.0.1:{port}" in result.content


@pytest.mark.parametrize("provider", ["tavily", "serper", "brave"])
@pytest.mark.parametrize("status", [401, 500, 200])
def test_the_key_never_reaches_the_agent_even_when_echoed(api, provider, status):
    prefix = PROVIDER_CASES[provider][0]
    # a hostile or buggy API that puts the request headers into its error message (or a broken 200 body)
    echo = lambda seen: json.dumps(seen.headers)  # noqa: E731
    api.respond = lambda seen: (status, {"message": echo(seen)} if status != 200 else echo(seen).encode()[:-1])
    result = search(WebSearch(provider=provider, base_url=api.base + prefix), query="q")
    assert result.error_kind is not None
    assert FAKE_KEY in json.dumps(api.seen[0].headers)  # the key was sent, and echoed back
    assert FAKE_KEY not in result.content and FAKE_KEY[:20] not in result.content
    assert "[redacted]" in result.content


def test_run_tool_dispatches_to_web_search(api):
    api.respond = lambda seen: (200, PROVIDER_CASES["searxng"][2](HITS))
    tools = {"web_search": WebSearch(provider="searxng", base_url=api.base)}
    result = asyncio.run(run_tool(tools, "web_search", json.dumps({"query": "mercedes sosa"}), CTX, timeout_s=10))
    assert result.error_kind is None and "3 result(s)" in result.content
    bad = asyncio.run(run_tool(tools, "web_search", json.dumps({"query": "x", "limit": 3}), CTX))
    assert bad.error_kind == "bad_arguments" and "limit" in bad.content
    empty = asyncio.run(run_tool(tools, "web_search", json.dumps({"query": "  "}), CTX))
    assert empty.error_kind == "bad_arguments"
    assert len(api.seen) == 1


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("SERPER_API_KEY")
    with pytest.raises(BonError, match="SERPER_API_KEY"):
        WebSearch(provider="serper")
    monkeypatch.setenv("MY_SERPER", FAKE_KEY)
    assert WebSearch(provider="serper", api_key_env="MY_SERPER").provider.name == "serper"
    with pytest.raises(BonError, match="MY_OTHER_KEY"):
        WebSearch(provider="serper", api_key_env="MY_OTHER_KEY")


@pytest.mark.parametrize("options, words", [
    ({"provider": "google"}, "brave, searxng, serper, tavily"),
    ({"provider": "tavily", "max_results": 0}, "tools.web_search.max_results"),
    ({"provider": "tavily", "max_results": 21}, "<= 20 for tavily"),
    ({"timeout": -1}, "tools.web_search.timeout"),
    ({"base_url": "ftp://x"}, "tools.web_search.base_url"),
    ({"provider": "searxng", "api_key_env": "X"}, "takes no API key"),
])
def test_bad_options_are_named(options, words):
    with pytest.raises(BonError, match=re.escape(words)):
        WebSearch(**options)
