"""A worker process of `bon.llm.transport.WorkerPool`: makes the attempts its parent sends it.

Protocol, one JSON object per line: once litellm is imported the worker writes `{"ready": true}`;
the parent writes `{"id", "kwargs", "timeout"}` (an attempt: litellm.acompletion keyword arguments)
or `{"cancel": id}` on stdin; the worker answers each attempt with `{"id", "fields"}` or
`{"id", "failure"}` on stdout. End of stdin means stop: the worker cancels what is in flight,
closes litellm's sessions and exits. Anything else written to stdout (a stray print
from a library) goes to stderr instead, so it cannot corrupt the protocol.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from bon.llm.retry import Failure
from bon.llm.transport import LINE_LIMIT, attempt_here, close_litellm_clients, import_litellm


async def serve(read_fd: int, write_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb"))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb"))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
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

    import_litellm()  # before the first request: its seconds are not charged to an attempt
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


def main() -> None:
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr
    sys.stdout = sys.stderr
    asyncio.run(serve(0, protocol_out))


if __name__ == "__main__":
    main()
