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
import atexit
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
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


async def pipe_streams(read_fd: int, write_fd: int,
                       limit: int = LINE_LIMIT) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over two pipe ends (a worker's protocol, on either side); they own the descriptors."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", 0))
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


# A process that has imported litellm forks safely on Linux. On macOS a forked child can crash in system
# frameworks set up before the fork (why Python spawns processes there): each worker imports litellm itself.
FORK_WORKERS = sys.platform == "linux"


def _spawn() -> tuple[int, int, int, subprocess.Popen]:
    """A worker that is a process of its own (`python -m bon.llm.worker --alone`): pid, pipe ends, process."""
    proc = subprocess.Popen([sys.executable, "-m", "bon.llm.worker", "--alone"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None, "started with pipes"
    attempts_w, replies_r = os.dup(proc.stdin.fileno()), os.dup(proc.stdout.fileno())
    proc.stdin.close()
    proc.stdout.close()
    return proc.pid, attempts_w, replies_r, proc


class _Zygote:
    """`python -m bon.llm.worker`: the process that imports litellm once and forks the workers.

    Importing litellm costs seconds of CPU; a worker forked from a process that has done it starts in
    milliseconds. So a pool of N workers costs one import, and so does replacing a worker that died; one
    zygote serves every pool of the process (it is not tied to an event loop). Each worker gets the
    calling process's environment as it is when the worker starts.
    """

    _shared: _Zygote | None = None
    _starting = threading.Lock()

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-m", "bon.llm.worker"], stdin=theirs.fileno())
        theirs.close()
        self.owner = os.getpid()
        self._control = ours
        self._lock = threading.Lock()
        self._pending = b""
        self.broken = False
        if self._line() != "ready":  # it died importing litellm: say so with each attempt
            self.close()
            raise OSError(f"the worker zygote (pid {self.proc.pid}) exited before it was ready (its stderr says why)")

    @classmethod
    def shared(cls) -> _Zygote:
        """The process's zygote, started on first use (blocks for the litellm import: call it in a thread)."""
        with cls._starting:
            zygote = cls._shared
            if zygote is None or zygote.owner != os.getpid() or zygote.broken or zygote.proc.poll() is not None:
                if zygote is not None and zygote.owner == os.getpid():
                    zygote.close()
                zygote = cls._shared = cls()
                atexit.register(zygote.close)
            return zygote

    def fork(self) -> tuple[int, int, int]:
        """A new worker: its pid, the end its attempts are written to and the end its replies are read from."""
        attempts_r, attempts_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            with self._lock:
                request = json.dumps(dict(os.environ)).encode() + b"\n"
                socket.send_fds(self._control, [request], [attempts_r, replies_w])
                pid = int(self._line() or 0)
        except (OSError, ValueError):
            pid = 0
        finally:
            os.close(attempts_r)
            os.close(replies_w)
        if not pid:
            os.close(attempts_w)
            os.close(replies_r)
            self.broken = True  # the next worker gets a new zygote
            raise OSError(f"the worker zygote (pid {self.proc.pid}) did not fork a worker")
        return pid, attempts_w, replies_r

    def _line(self) -> str:
        while b"\n" not in self._pending:
            chunk = self._control.recv(4096)
            if not chunk:
                return ""
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        """End the control socket: the zygote exits (its workers end with their own pipes)."""
        self._control.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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
        try:
            worker = await self._pick()
        except OSError as exc:  # no worker could be started: retryable, like a worker that died
            return None, Failure("connection", True, f"cannot start a worker process: {exc}")
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
    """One worker process (forked by the _Zygote, or spawned: FORK_WORKERS) and the attempts it has in flight."""

    def __init__(self, pid: int, replies: asyncio.StreamReader, attempts: asyncio.StreamWriter,
                 proc: subprocess.Popen | None = None) -> None:
        self.pid = pid
        self._proc = proc  # a spawned worker, ours to reap; a forked one is the zygote's child
        self._stdin, self._stdout = attempts, replies
        self.pending: dict[int, asyncio.Future] = {}
        self.warm = False  # it has answered an attempt: litellm's lazy set-up is done there
        self.exited_on_its_own: bool | None = None  # after close(): it finished when its input ended
        self._ids = itertools.count()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> _Worker:
        """Fork a worker and wait for its first line, so that an attempt handed to it is sent at once:
        the rate limiter dates requests from that moment. The first start of a process waits for the
        zygote's litellm import."""
        proc = None
        if FORK_WORKERS:
            pid, attempts_w, replies_r = await asyncio.to_thread(lambda: _Zygote.shared().fork())
        else:
            pid, attempts_w, replies_r, proc = await asyncio.to_thread(_spawn)
        replies, attempts = await pipe_streams(replies_r, attempts_w)
        await replies.readline()  # {"ready": true}, or b"" if it died (then the reader sees it)
        return cls(pid, replies, attempts, proc)

    @property
    def alive(self) -> bool:
        return not self._reader.done()  # its replies' pipe is open: the worker is running

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
        """End its input: the worker closes its sessions and exits; killed if it has not within 10 s."""
        if self.alive:
            self._stdin.close()
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self._reader)
                self.exited_on_its_own = True
            except TimeoutError:
                self.exited_on_its_own = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        else:
            self._stdin.close()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._proc is not None:
            await asyncio.to_thread(self._proc.wait)
