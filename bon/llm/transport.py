"""One HTTP attempt at a chat completion: through litellm in this process, or in worker processes.

litellm spends a few milliseconds of CPU on every call (building the request, response objects, price
lookups, its logging). On one event loop that caps a run at a few hundred calls per second whatever the
concurrency, which a fast local server (vLLM on the same rack) can outrun. `WorkerPool` spreads the
attempts over child processes, each with its own event loop and its own litellm. The limiter, retries,
cache and accounting stay in the calling process (bon.llm.client), so limits are global and every
attempt is counted once; a worker only makes single attempts and reports what happened.

An attempt's outcome is `(fields, None)` or `(None, failure)`: `fields` is a JSON-able dict (message,
finish_reason, tokens, reasoning, litellm's price of the response), `failure` a classified
`bon.llm.retry.Failure`. The protocol (bon.llm.worker) is one JSON object per line on the worker's
stdin and stdout.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from bon.llm.retry import Failure, classify

log = logging.getLogger(__name__)

# Loggers litellm and its HTTP stack write to; kept at WARNING so a run's log holds our lines only.
NOISY_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "httpcore", "openai",
                 "aiohttp")
# How much longer than the attempt's timeout we wait before giving up on it ourselves, should litellm's
# own timeout not fire (it does today; this is a backstop so a hang can never stall a run).
TIMEOUT_GRACE_S = 5.0
LINE_LIMIT = 1 << 28  # the longest JSON line (a prompt of a long trajectory) a pipe reader accepts

Outcome = tuple["dict[str, Any] | None", "Failure | None"]


def quiet_loggers() -> None:
    """Cap litellm's and the HTTP stack's loggers at WARNING (Hydra sets the root to INFO)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING or logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


_litellm: Any = None
_warm = False  # a litellm call has returned in this process: its lazy set-up is done
_unpriced_models: set[str] = set()  # models litellm could not price once: do not ask again


def import_litellm() -> Any:
    """Import litellm on first use (it takes seconds), offline and quiet."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
        quiet_loggers()  # before the import: litellm logs while importing
        import litellm

        litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banner on every exception
        quiet_loggers()
        _litellm = litellm
    return _litellm


async def attempt_here(kwargs: dict[str, Any], timeout: float,
                       on_send: Callable[[bool], None] | None = None) -> Outcome:
    """One `litellm.acompletion` in this process, its outcome as plain data. `on_send(warm)` is called
    just before the request is handed to litellm (after its import), for the rate limiter; `warm` says
    whether litellm has already returned from a call in this process (before that, its first calls
    spend seconds on lazy set-up before anything is sent)."""
    global _warm
    litellm = import_litellm()
    if on_send is not None:
        on_send(_warm)
    try:
        async with asyncio.timeout(timeout + TIMEOUT_GRACE_S):
            response = await litellm.acompletion(**kwargs)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the API call becomes data
        _warm = True
        return None, classify(exc)
    _warm = True
    fields = response_fields(response, str(kwargs.get("model")))
    if fields is None:
        return None, Failure("bad_response", False, "the response has no choices/message")
    return fields, None


def response_fields(response: Any, model: str) -> dict[str, Any] | None:
    """What we keep of a litellm response (None when it has no message)."""
    choices = getattr(response, "choices", None) or []
    if not choices or getattr(choices[0], "message", None) is None:
        return None
    choice = choices[0]
    msg = choice.message
    message: dict[str, Any] = {"role": "assistant", "content": msg.content}
    if getattr(msg, "tool_calls", None):
        message["tool_calls"] = [
            {"id": tc.id, "type": "function",
             "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
            for tc in msg.tool_calls]
    usage = getattr(response, "usage", None)
    return {"message": message, "finish_reason": choice.finish_reason,
            "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
            "reasoning": getattr(msg, "reasoning_content", None) or None,
            "litellm_cost": _litellm_cost(response, model)}


def _litellm_cost(response: Any, model: str) -> float | None:
    """litellm's price of the response, or None when it does not know the model: never an exception."""
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")  # litellm prices every response it can while returning it
    if cost is not None:
        return float(cost)
    if model in _unpriced_models:
        return None
    try:
        return float(sys.modules["litellm"].completion_cost(completion_response=response, model=model))
    except Exception:  # noqa: BLE001 - litellm raises a bare Exception for unmapped models
        _unpriced_models.add(model)
        return None


async def close_litellm_clients() -> None:
    """Close litellm's pooled HTTP sessions in this process (if litellm was ever imported)."""
    if "litellm" in sys.modules:
        await sys.modules["litellm"].close_litellm_async_clients()


class WorkerPool:
    """`size` worker processes making attempts; each attempt goes to the worker with the fewest in flight.

    Workers start on first use and are replaced when one dies; the attempts it had in flight come back
    as retryable `connection` failures, so the client's retries take them elsewhere."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self._workers: list[_Worker] = []
        self._lock: asyncio.Lock | None = None

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive]

    async def attempt(self, kwargs: dict[str, Any], timeout: float,
                      on_send: Callable[[bool], None] | None = None) -> Outcome:
        worker = await self._pick()
        return await worker.attempt(kwargs, timeout, on_send)

    async def _pick(self) -> _Worker:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            dead = [w for w in self._workers if not w.alive]
            for w in dead:
                await w.close()
            self._workers = [w for w in self._workers if w.alive]
            if len(self._workers) < self.size:
                started = await asyncio.gather(*(_Worker.start() for _ in range(self.size - len(self._workers))))
                self._workers.extend(started)
        return min(self._workers, key=lambda w: len(w.pending))

    async def aclose(self) -> None:
        """Stop the workers (each closes its litellm sessions first)."""
        workers, self._workers, self._lock = self._workers, [], None
        await asyncio.gather(*(w.close() for w in workers))


class _Worker:
    """One `python -m bon.llm.worker` child and the attempts it has in flight."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None, "a worker is started with pipes"
        self.proc = proc
        self.pid = proc.pid
        self._stdin, self._stdout = proc.stdin, proc.stdout
        self.pending: dict[int, asyncio.Future] = {}
        self.warm = False  # it has answered an attempt: litellm's lazy set-up is done there
        self._ids = itertools.count()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> _Worker:
        """Start a worker and wait until it has imported litellm (its first line says so), so that an
        attempt handed to it is sent at once: the rate limiter dates requests from that moment."""
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bon.llm.worker",
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    limit=LINE_LIMIT)
        assert proc.stdout is not None, "stdout=PIPE"
        await proc.stdout.readline()  # {"ready": true}, or b"" if it died (then the reader sees it)
        return cls(proc)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self._reader.done()

    async def attempt(self, kwargs: dict[str, Any], timeout: float,
                      on_send: Callable[[bool], None] | None = None) -> Outcome:
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        if self._reader.done():  # it died after being picked: nobody would answer
            self.pending.pop(request_id)
            return None, Failure("connection", True, f"worker process {self.pid} stopped answering")
        try:
            if on_send is not None:
                on_send(self.warm)
            self._send({"id": request_id, "kwargs": kwargs, "timeout": timeout})
            await self._stdin.drain()
            async with asyncio.timeout(timeout + 2 * TIMEOUT_GRACE_S):
                return await future
        except (BrokenPipeError, ConnectionResetError) as exc:
            return None, Failure("connection", True, f"worker process {self.pid} is gone: {exc}")
        except TimeoutError:
            self._cancel(request_id)
            return None, Failure("timeout", True, f"worker process {self.pid} did not answer in {timeout:g} s")
        except asyncio.CancelledError:
            self._cancel(request_id)
            raise
        finally:
            self.pending.pop(request_id, None)

    def _send(self, message: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(message).encode() + b"\n")  # ASCII: lone surrogates survive

    def _cancel(self, request_id: int) -> None:
        if self.alive:
            try:
                self._send({"cancel": request_id})
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def _read(self) -> None:
        try:
            while line := await self._stdout.readline():
                reply = json.loads(line)
                self.warm = True
                future = self.pending.get(reply["id"])
                if future is None or future.done():
                    continue  # cancelled meanwhile
                if "failure" in reply:
                    future.set_result((None, Failure(**reply["failure"])))
                else:
                    future.set_result((reply["fields"], None))
        finally:  # end of output: the worker exited or broke the protocol
            for future in self.pending.values():
                if not future.done():
                    future.set_result((None, Failure("connection", True,
                                                     f"worker process {self.pid} stopped answering")))

    async def close(self) -> None:
        if self.proc.returncode is None:
            self._stdin.close()  # the worker finishes: closes its sessions and exits
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)

