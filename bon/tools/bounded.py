"""Run a parser in a worker process that is killed when its time runs out: documents are untrusted.

Turning a hostile page or file into text can take minutes (a PDF whose streams expand to megabytes of
drawing operators, a sheet declaring a million rows) or gigabytes, and a thread can be neither
stopped nor capped. `run` calls a function in a fresh process with its address space capped at
`memory_mb` (RLIMIT_AS) and its CPU time capped just past the time budget (RLIMIT_CPU, a backstop
should bon itself die), and kills it when the budget runs out or the caller is cancelled.

Workers are forked from a helper process (started on first use, running `_helper_main`) that has the
parsers imported and nothing else running, so a call costs a fork (milliseconds) rather than an
interpreter start and the imports (over a second), and bon's own threads and state are never forked.
(multiprocessing's forkserver would re-run the caller's main script in every worker.) At most
`MAX_WORKERS` workers run at once per event loop, so memory is bounded by `MAX_WORKERS * memory_mb`;
waiting for a free worker is not counted in a call's budget.
"""
from __future__ import annotations

import asyncio
import atexit
import functools
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

TIMEOUT = "timeout"
MEMORY_LIMIT = "memory_limit"
MAX_WORKERS = 4
# imported once by the helper process, so each worker starts with them loaded
PRELOAD = ("bon.tools.web", "bon.tools.files", "bs4", "markdownify", "pypdf", "openpyxl", "docx", "ctypes")
_READ_CHUNK = 1 << 20
_START_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


class Overrun(Exception):
    """The worker ran out of time or memory; `kind` is TIMEOUT or MEMORY_LIMIT."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple:
        return type(self), (self.kind, str(self))


class WorkerFailed(Exception):
    """The worker died without an answer (a crash inside a C extension), or its answer was unusable."""


# --------------------------------------------------------------------------- the helper process (its side)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = sock.recv(min(n - got, _READ_CHUNK))
        if not part:
            raise EOFError
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _worker(payload: bytes, out_fd: int) -> None:
    """In the forked worker: set the limits, run the call, write the pickled answer to `out_fd`, exit."""
    code = 0
    try:
        fn, args, timeout, memory_mb = pickle.loads(payload)
        del payload
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        cpu = int(timeout) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            message: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            message = ("memory", None)
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failure means
            message = ("raise", exc)
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            data = pickle.dumps(("memory", None))
        except Exception as exc:  # noqa: BLE001 - e.g. an exception that cannot be pickled
            data = pickle.dumps(("failed", f"its answer could not be pickled ({type(exc).__name__}: {exc})"))
        view = memoryview(data)
        while view:
            view = view[os.write(out_fd, view):]
    except BaseException:  # noqa: BLE001 - no answer: the caller reports a dead worker
        code = 1
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: be killed when the helper goes (it goes when bon does), even while blocked in a read."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _helper_main(fd: int) -> None:
    """The helper: import the parsers, then fork one worker per request until bon goes away."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    sock = socket.socket(fileno=fd)
    sock.sendall(b"R")
    while True:
        try:
            head, fds, _flags, _addr = socket.recv_fds(sock, 8, 1)
            if not head:
                return
            head += _recv_exact(sock, 8 - len(head))
            payload = _recv_exact(sock, int.from_bytes(head, "big"))
        except (EOFError, OSError):
            return
        out_fd = fds[0]
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _die_with_parent()
            _worker(payload, out_fd)
        os.close(out_fd)
        del payload
        sock.sendall(pid.to_bytes(8, "big"))


# --------------------------------------------------------------------------- bon's side


class _Helper:
    """bon's handle on the helper process; started on first use, restarted if it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        atexit.register(self.close)

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # it finds bon (and the parsers) where this process does; its own session keeps Ctrl-C away from it;
        # parsers' warnings about broken files would only clutter bon's terminal (failures come back as answers)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from bon.tools.bounded import _helper_main; _helper_main({theirs.fileno()})"],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        theirs.close()
        self._sock = ours
        ours.settimeout(_START_TIMEOUT_S)
        try:
            ready = ours.recv(1)
        except OSError:
            ready = b""
        ours.settimeout(None)
        if ready != b"R":
            self.close()
            raise WorkerFailed(f"the worker helper process ({sys.executable}, bon.tools.bounded) did not start")

    def spawn(self, payload: bytes, out_fd: int) -> int:
        """Fork a worker for `payload` writing to `out_fd`; its pid. Blocking: call from a thread."""
        with self._lock:
            for attempt in (1, 2):
                if self._process is None or self._process.poll() is not None:
                    self.close()
                    self._start()
                assert self._sock is not None
                try:
                    socket.send_fds(self._sock, [len(payload).to_bytes(8, "big")], [out_fd])
                    self._sock.sendall(payload)
                    return int.from_bytes(_recv_exact(self._sock, 8), "big")
                except (OSError, EOFError):
                    self.close()
                    if attempt == 2:
                        raise WorkerFailed("the worker helper process is not answering") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._process = None


_helper = _Helper()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _abandon(write_fd: int, spawning: asyncio.Future) -> None:
    os.close(write_fd)
    if not spawning.cancelled() and spawning.exception() is None:
        _kill(spawning.result())


def _slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(MAX_WORKERS)
    return slot


async def _answer(read_fd: int, timeout: float) -> bytes:
    """Everything written to `read_fd` until the worker closes it (exits), within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    parts: list[bytes] = []

    def readable() -> None:
        try:
            part = os.read(read_fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            part = b""
        if part:
            parts.append(part)
        elif not done.done():
            done.set_result(None)

    os.set_blocking(read_fd, False)
    loop.add_reader(read_fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await done
    finally:
        loop.remove_reader(read_fd)
    return b"".join(parts)


async def run(fn: Callable[..., Any], *args: Any, timeout: float, memory_mb: int) -> Any:
    """`fn(*args)` in a worker process with `timeout` seconds and `memory_mb` MB of address space.

    `fn` and its arguments must be picklable (a module-level function). Returns what `fn` returns and
    re-raises what it raises; raises `Overrun` when the time or memory runs out, `WorkerFailed` when
    the worker dies without answering. The worker is killed on every way out, cancellation included.
    """
    if timeout <= 0:
        raise Overrun(TIMEOUT, "had no time left")
    payload = pickle.dumps((fn, args, timeout, memory_mb), protocol=pickle.HIGHEST_PROTOCOL)
    async with _slot():
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        spawning = loop.run_in_executor(None, _helper.spawn, payload, write_fd)
        finished = False
        try:
            await asyncio.shield(spawning)  # its result, the pid, is read below when a kill is needed
            os.close(write_fd)  # the worker holds the only other copy: EOF means it has exited
            write_fd = -1
            try:
                data = await _answer(read_fd, timeout)
            except TimeoutError:
                raise Overrun(TIMEOUT, f"ran out of time after {timeout:.3g} s") from None
            finished = True
        finally:
            os.close(read_fd)
            if spawning.done():
                if write_fd >= 0:
                    os.close(write_fd)
                if not finished and spawning.exception() is None:
                    _kill(spawning.result())  # still running: its end of the pipe was open
            else:  # cancelled while the worker was being started: kill it once it exists
                spawning.add_done_callback(functools.partial(_abandon, write_fd))
    try:
        status, value = pickle.loads(data)
    except Exception:  # noqa: BLE001 - nothing, or a cut answer: the worker died
        raise WorkerFailed("the worker process died without answering (a crash in the parser?)") from None
    if status == "ok":
        return value
    if status == "memory":
        raise Overrun(MEMORY_LIMIT, f"needed more than {memory_mb:,} MB of memory")
    if status == "raise":
        raise value
    raise WorkerFailed(str(value))


def address_space_limit_mb() -> int | None:
    """This process's RLIMIT_AS in MB (None: unlimited); lets tests read a worker's limit from inside it."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft >> 20


__all__ = ["MAX_WORKERS", "MEMORY_LIMIT", "TIMEOUT", "Overrun", "WorkerFailed", "run"]
