"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

The live LLM path must be tested over real HTTP through litellm, without network. This server
speaks just enough of `/v1/chat/completions` (and `/v1/audio/transcriptions`, answered with the
reply's text as the transcript) for that: scripted replies (text, tool calls, judge
verdicts), a configurable latency, injected faults (429 + Retry-After, 500, 503, hangs, malformed
bodies, 401, an OpenAI-style context-window 400) and a record of every request so a test can
assert on what reached the wire (attempt counts, concurrency, headers, bodies).

Use it in-process (a thread) from tests:

    with FakeLLMServer(latency=0.01) as server:
        server.script(rate_limited(retry_after=1), text("hello"))
        ... LLMClient("openai/test-model", api_base=server.base_url, ...) ...
        assert server.count == 2

or as a separate process (benchmarks, so the server's CPU is not charged to the client):

    python tests/llm_server.py --latency 0.1     # prints "PORT <n>" then serves until killed

`GET /stats` returns the request count, the peak number in flight and the arrival times.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """What the server does with one request: a completion, an HTTP error, a hang or a raw body."""

    text: str | None = "ok"
    tool_calls: tuple[dict[str, Any], ...] = ()  # each {"name": ..., "arguments": dict | str, "id"?: ...}
    finish_reason: str | None = None  # default: "tool_calls" when there are tool calls, else "stop"
    status: int = 200
    error: dict[str, Any] | None = None  # the JSON error object for status >= 400
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # raw body, sent as is (for malformed replies)
    latency: float | None = None  # overrides the server's latency for this request
    hang: float | None = None  # sleep this long (or until the server stops) and send nothing
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: str | None = None  # sent as message.reasoning_content, as DeepSeek's reasoner does


Responder = Callable[[dict[str, Any]], "Reply | str"]


def text(content: str, **kw: Any) -> Reply:
    """A plain assistant message."""
    return Reply(text=content, **kw)


def tool_call(name: str, arguments: dict[str, Any] | str, *, call_id: str | None = None,
              content: str | None = None, **kw: Any) -> Reply:
    """An assistant message calling one tool (arguments are sent as a JSON string, as OpenAI does)."""
    call = {"name": name, "arguments": arguments}
    if call_id:
        call["id"] = call_id
    return Reply(text=content, tool_calls=(call,), **kw)


def verdict(steps: dict[int | str, int], final: int, prose: str = "Reasoning about each step.",
            **kw: Any) -> Reply:
    """A judge's reply: some prose, then a fenced JSON block with step labels and the final label."""
    payload = {"steps": {str(k): v for k, v in steps.items()}, "final": final}
    return Reply(text=f"{prose}\n\n```json\n{json.dumps(payload)}\n```", **kw)


def http_error(status: int, message: str, *, type_: str = "server_error", code: str | None = None,
               headers: Iterable[tuple[str, str]] = (), **kw: Any) -> Reply:
    """An error response with an OpenAI-shaped JSON body."""
    err = {"message": message, "type": type_, "param": None, "code": code}
    return Reply(text=None, status=status, error=err, headers=tuple(headers), **kw)


def rate_limited(retry_after: float | str | None = None, **kw: Any) -> Reply:
    """429, optionally with a Retry-After header (seconds, or an HTTP date given as a string)."""
    headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
    return http_error(429, "Rate limit reached for requests", type_="requests",
                      code="rate_limit_exceeded", headers=headers, **kw)


def server_error(status: int = 500, **kw: Any) -> Reply:
    """A 5xx (500 by default; 502, 503 ...)."""
    return http_error(status, f"The server had an error (injected {status})", **kw)


def unavailable(**kw: Any) -> Reply:
    """503 Service Unavailable."""
    return server_error(503, **kw)


def unauthorized(message: str = "Incorrect API key provided.", **kw: Any) -> Reply:
    """401 with OpenAI's wording for a bad key."""
    return http_error(401, message, type_="invalid_request_error", code="invalid_api_key", **kw)


def context_window(**kw: Any) -> Reply:
    """400 exactly as OpenAI words a prompt that is too long."""
    return http_error(400, "This model's maximum context length is 8192 tokens. However, your messages "
                      "resulted in 9001 tokens. Please reduce the length of the messages.",
                      type_="invalid_request_error", code="context_length_exceeded", **kw)


def bad_request(message: str = "Invalid value for 'temperature'.", **kw: Any) -> Reply:
    """A plain 400 that is not about the context window."""
    return http_error(400, message, type_="invalid_request_error", **kw)


def hang(seconds: float = 30.0) -> Reply:
    """Accept the request and never answer (until `seconds` pass or the server stops)."""
    return Reply(hang=seconds)


def malformed(body: bytes = b'{"id": "chatcmpl-x", "choices": [{"message": ', **kw: Any) -> Reply:
    """A 200 whose body is not valid JSON."""
    return Reply(body=body, **kw)


# --------------------------------------------------------------------------- server


@dataclass
class Request:
    """One request as received: for assertions on what went over the wire."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any] | None
    raw: bytes
    started: float  # time.monotonic() at arrival
    finished: float | None = None
    status: int | None = None


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: collections.deque = field(default_factory=collections.deque)
    requests: list[Request] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    count: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


def _approx_tokens(s: str) -> int:
    return max(1, len(s) // 4)


def _completion(req: dict[str, Any], reply: Reply, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        calls = []
        for i, call in enumerate(reply.tool_calls):
            args = call["arguments"]
            calls.append({"id": call.get("id", f"call_{n}_{i}"), "type": "function",
                          "function": {"name": call["name"],
                                       "arguments": args if isinstance(args, str) else json.dumps(args)}})
        message["tool_calls"] = calls
    prompt = json.dumps(req.get("messages", []))
    completion = (reply.text or "") + json.dumps(list(reply.tool_calls))
    pt = reply.prompt_tokens if reply.prompt_tokens is not None else _approx_tokens(prompt)
    ct = reply.completion_tokens if reply.completion_tokens is not None else _approx_tokens(completion)
    return {
        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
        "model": req.get("model", "test-model"),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }


class FakeLLMServer:
    """An OpenAI-compatible server in a background thread on 127.0.0.1:<ephemeral port>.

    Each request is answered by the next scripted reply if any (`script`), else by `responder(body)`
    (a function of the parsed request body returning a Reply or a string), else with "ok".
    """

    def __init__(self, responder: Responder | None = None, *, latency: float = 0.0,
                 record_bodies: bool = True) -> None:
        self.responder = responder
        self.latency = latency
        self.record_bodies = record_bodies
        self._state = _State()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeLLMServer:
        server = self

        class Handler(_Handler):
            owner = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        httpd.daemon_threads = True
        httpd.request_queue_size = 1024  # the default (5) drops SYNs under 64 concurrent connects
        httpd.allow_reuse_address = True
        httpd.server_bind()
        httpd.server_activate()
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addressing
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """What to pass as api_base."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection
    def script(self, *replies: Reply | str) -> None:
        """Queue replies, used in order before the responder."""
        with self._state.lock:
            self._state.queue.extend(replies)

    @property
    def count(self) -> int:
        """Chat-completion requests received so far (faults included)."""
        return self._state.count

    @property
    def requests(self) -> list[Request]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def arrivals(self) -> list[float]:
        """time.monotonic() of each request's arrival."""
        with self._state.lock:
            return list(self._state.arrivals)

    @property
    def max_in_flight(self) -> int:
        return self._state.max_in_flight

    @property
    def in_flight(self) -> int:
        return self._state.in_flight

    def reset(self) -> None:
        """Forget recorded requests and counters (the script queue is kept)."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.arrivals.clear()
            self._state.count = 0
            self._state.max_in_flight = self._state.in_flight

    # -- internals used by the handler
    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._state.lock:
            scripted = self._state.queue.popleft() if self._state.queue else None
        reply = scripted if scripted is not None else (self.responder(body) if self.responder else "ok")
        return text(reply) if isinstance(reply, str) else reply

    def _stats(self) -> dict[str, Any]:
        with self._state.lock:
            return {"count": self._state.count, "max_in_flight": self._state.max_in_flight,
                    "in_flight": self._state.in_flight, "arrivals": list(self._state.arrivals)}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeLLMServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
    # the headers and the body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers on a kept-alive connection, 40 ms a reply that no real API adds
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/stats"):
            self._send(200, json.dumps(self.owner._stats()).encode())
        elif self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        owner, st = self.owner, self.owner._state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        transcription = self.path.rstrip("/").endswith("/audio/transcriptions")  # multipart: body stays None
        if not transcription and not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        try:
            body = None if transcription else json.loads(raw)
        except ValueError:
            body = None
        now = time.monotonic()
        with st.lock:
            st.count += 1
            n = st.count
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            st.arrivals.append(now)
            rec = None
            if owner.record_bodies:
                rec = Request(index=n - 1, method="POST", path=self.path,
                              headers={k.lower(): v for k, v in self.headers.items()},
                              body=body, raw=raw, started=now)
                st.requests.append(rec)
        status = 0
        try:
            reply = owner._next_reply(body or {})
            if reply.hang is not None:
                owner._stop.wait(reply.hang)
                self.close_connection = True
                return
            delay = owner.latency if reply.latency is None else reply.latency
            if delay > 0:
                owner._stop.wait(delay)
            status = reply.status
            if reply.body is not None:
                self._send(status, reply.body, reply.headers)
            elif status >= 400:
                self._send(status, json.dumps({"error": reply.error or {"message": "error"}}).encode(),
                           reply.headers)
            elif transcription:  # the reply's text is the transcript
                self._send(status, json.dumps({"text": reply.text or ""}).encode(), reply.headers)
            else:
                self._send(status, json.dumps(_completion(body or {}, reply, n)).encode(), reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with st.lock:
                st.in_flight -= 1
                if rec is not None:
                    rec.finished = time.monotonic()
                    rec.status = status or None


# --------------------------------------------------------------------------- helpers for assertions


def max_in_window(times: list[float], window: float) -> int:
    """The largest number of events in any half-open interval [t, t + window)."""
    ts = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


# --------------------------------------------------------------------------- pytest fixtures
# Import them into a test module (`from llm_server import llm_server_fixture, llm_env_fixture`)
# to use them as `llm_server` and `llm_env`.

FAKE_KEY = "sk-bon-FAKE-3f9c2a7e-must-never-be-written"
FAKE_KEY_ENV = "BON_TEST_FAKE_API_KEY"

try:
    import pytest
except ImportError:  # pragma: no cover - the CLI server does not need pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(name="llm_server")
    def llm_server_fixture():
        """A started FakeLLMServer, stopped after the test."""
        with FakeLLMServer() as server:
            yield server

    @pytest.fixture(name="llm_env")
    def llm_env_fixture(monkeypatch):
        """Keep 127.0.0.1 off any proxy configured in the environment (aiohttp honours *_PROXY),
        and provide the fake key."""
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setenv(FAKE_KEY_ENV, FAKE_KEY)


def main(argv: list[str] | None = None) -> None:
    """Serve until killed: echo replies (or fixed text) after --latency seconds."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--reply", default="ok")
    args = p.parse_args(argv)
    server = FakeLLMServer(lambda body: args.reply, latency=args.latency, record_bodies=False).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
