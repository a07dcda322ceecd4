"""The worker processes of `bon.llm.transport.WorkerPool`, forked from one process that imported litellm
(on Linux; elsewhere each worker is started with --alone and imports litellm itself).

`python -m bon.llm.worker` is the zygote: it imports litellm (seconds of CPU), says `ready`, then forks
a worker for every request on its control socket (stdin, a Unix socket). A request is the calling
process's environment as JSON, with two pipe ends attached (SCM_RIGHTS): the worker reads attempts
from the first and writes replies to the second. The zygote answers with the worker's pid. End of the
control socket (the calling process closed it, or exited) stops the zygote; its workers stop when
their own request pipe ends.

A worker's protocol, one JSON object per line: it first writes `{"ready": true}`; the parent writes
`{"id", "kwargs", "timeout"}` (an attempt: litellm.acompletion keyword arguments) or `{"cancel": id}`;
the worker answers each attempt with `{"id", "fields"}` or `{"id", "failure"}`. End of its input means
stop: the worker cancels what is in flight, closes litellm's sessions and exits. Anything a library
prints on stdout goes to stderr, so it cannot corrupt a protocol.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import asdict
from typing import Any

from bon.llm.retry import Failure
from bon.llm.transport import LINE_LIMIT, attempt_here, close_litellm_clients, import_litellm, pipe_streams

CONTROL_LIMIT = 1 << 24  # the longest fork request (an environment) the zygote reads


async def serve(read_fd: int, write_fd: int) -> None:
    """Answer attempts read from `read_fd` on `write_fd` until `read_fd` ends."""
    reader, writer = await pipe_streams(read_fd, write_fd, LINE_LIMIT)
    loop = asyncio.get_running_loop()
    tasks: dict[int, asyncio.Task] = {}

    async def one(request: dict[str, Any]) -> None:
        try:
            fields, failure = await attempt_here(request["kwargs"], float(request["timeout"]))
            reply = {"id": request["id"], **({"fields": fields} if failure is None else {"failure": asdict(failure)})}
            line = json.dumps(reply)
        except Exception as exc:  # noqa: BLE001 - a bug here must reach the parent as a failure, not a hang
            line = json.dumps({"id": request["id"], "failure": asdict(Failure("error", False, f"worker: {exc!r}"))})
        writer.write(line.encode() + b"\n")
        await writer.drain()

    import_litellm()  # done by the zygote already: a no-op in a forked worker
    writer.write(json.dumps({"ready": True}).encode() + b"\n")  # the parent waits for this line
    await writer.drain()
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if "cancel" in request:
                task = tasks.get(request["cancel"])
                if task is not None:
                    task.cancel()
                continue
            task = loop.create_task(one(request))
            tasks[request["id"]] = task

            def forget(_: asyncio.Task, request_id: int = request["id"]) -> None:
                tasks.pop(request_id, None)

            task.add_done_callback(forget)
    finally:
        for task in list(tasks.values()):
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await close_litellm_clients()


def _worker(control: socket.socket, environment: dict[str, str], read_fd: int, write_fd: int) -> None:
    """In the forked child: the caller's environment, then serve; never returns into the zygote's loop."""
    code = 0
    try:
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(environment)
        asyncio.run(serve(read_fd, write_fd))
    except BaseException:  # noqa: BLE001 - report, then exit: a forked child must not unwind into the zygote
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def zygote(control: socket.socket) -> None:
    """Import litellm, then fork a worker per request until the control socket ends."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited workers: no zombies
    # Ctrl-C in a terminal signals the whole process group: the run decides what stops, and the zygote and
    # its workers (who inherit this) stop when their input ends, without a traceback each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_litellm()
    control.sendall(b"ready\n")
    buffer, pipes = b"", list[int]()
    while True:
        message, fds, _, _ = socket.recv_fds(control, 1 << 16, 2)
        if not message:
            return
        buffer, pipes = buffer + message, pipes + fds
        if len(buffer) > CONTROL_LIMIT:
            return
        while b"\n" in buffer:  # one request at a time: its line, and the two pipes sent with its start
            line, buffer = buffer.split(b"\n", 1)
            ends, pipes = pipes[:2], pipes[2:]
            pid = os.fork() if len(ends) == 2 else 0
            if pid == 0 and len(ends) == 2:
                _worker(control, json.loads(line), *ends)
            for fd in ends:
                os.close(fd)
            control.sendall(f"{pid}\n".encode())  # 0: no worker (the request came without its pipes)


def main() -> None:
    """The zygote; with --alone (where workers are not forked, bon.llm.transport.FORK_WORKERS) one worker
    reading attempts on stdin and replying on stdout."""
    replies = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr
    sys.stdout = sys.stderr
    if sys.argv[1:] == ["--alone"]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a forked worker: the run decides when it stops
        asyncio.run(serve(0, replies))
    else:
        os.close(replies)
        zygote(socket.socket(fileno=0))
    # done (serve closed its clients): tearing down an interpreter that imported litellm takes ~0.8 s,
    # and the run waits for this process to end before it exits itself
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
