"""`python`: run model-written Python in a fresh sandboxed process (see `bon.tools.sandbox`).

The reply is what the code printed (stdout and stderr interleaved, cut in the middle past
`max_output_chars`), how it ended, how long it took, the isolation in use, and the files it created.
Each call starts from nothing: no state, no files survive it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import weakref
from typing import Any

from bon.errors import BonError
from bon.tools.base import Tool, ToolContext, ToolResult, option
from bon.tools.sandbox import (
    CPU_LIMIT,
    EXITED,
    ISOLATIONS,
    KILLED,
    MEMORY_LIMIT,
    SANDBOX_ERROR,
    TIMEOUT,
    Limits,
    Outcome,
    Sandbox,
    SandboxUnavailable,
)

log = logging.getLogger(__name__)

EXIT_CODE = "exit_code"  # the code ended with a non-zero status (an uncaught exception, sys.exit(1), ...)
OUTPUT_TRUNCATED = "output_truncated"  # it succeeded, but printed more than max_output_chars
MAX_CODE_CHARS = 100_000
# Import names worth telling the model about, listed when installed.
KNOWN_PACKAGES = ("numpy", "polars", "pandas", "scipy", "sympy", "matplotlib", "openpyxl", "docx", "pypdf", "PIL",
                  "bs4", "networkx", "sklearn")


def _signal_name(number: int | None) -> str:
    try:
        if number is not None:
            return signal.Signals(number).name
    except (ValueError, TypeError):
        pass
    return f"signal {number}"


class PythonTool(Tool):
    name = "python"
    parameters = {"type": "object", "additionalProperties": False, "required": ["code"],
                  "properties": {"code": {"type": "string", "description": "a complete Python 3 program; "
                                                                           "print() what you want to see"}}}

    def __init__(self, *, timeout: float = 30, cpu_seconds: int = 30, memory_mb: int = 1024,
                 max_output_chars: int = 10_000, max_parallel: int = 2, isolation: str = "auto",
                 max_file_mb: int = 100, max_processes: int = 64, interpreter: str | None = None) -> None:
        if isolation not in ISOLATIONS:
            raise BonError(f"tools.python.isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
        self.limits = Limits(timeout=float(option("python", "timeout", timeout, integer=False, minimum=0.1)),
                             cpu_seconds=option("python", "cpu_seconds", cpu_seconds, integer=True, minimum=1),
                             memory_mb=option("python", "memory_mb", memory_mb, integer=True, minimum=64),
                             file_mb=option("python", "max_file_mb", max_file_mb, integer=True, minimum=1),
                             output_chars=option("python", "max_output_chars", max_output_chars, integer=True,
                                                 minimum=100),
                             max_processes=option("python", "max_processes", max_processes, integer=True, minimum=1))
        if interpreter is not None and not (isinstance(interpreter, str) and os.path.isfile(interpreter)
                                            and os.access(interpreter, os.X_OK)):
            raise BonError(f"tools.python.interpreter must be the path of a Python executable (or null for bon's "
                           f"own), got {interpreter!r}")
        self.max_parallel = option("python", "max_parallel", max_parallel, integer=True, minimum=1)
        try:
            self.sandbox = Sandbox(isolation, self.limits, interpreter, KNOWN_PACKAGES)
        except SandboxUnavailable as exc:
            raise BonError(f"tools.python.isolation={isolation}: {exc}") from None
        guarantees = self.sandbox.mode.guarantees(self.limits)
        (log.warning if self.sandbox.mode.guard_network else log.info)("%s", guarantees)
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
            weakref.WeakKeyDictionary()
        installed = self.sandbox.interpreter.packages
        self.description = (
            "Run a Python 3 program in a fresh, isolated process and get back what it printed (stdout and "
            "stderr), its exit status and the names of files it wrote. The task's attached files are in the "
            "working directory: open them by name. "
            + (f"Installed: {', '.join(installed)}. " if installed else "")
            + "No network access. Nothing carries over between calls and written files are deleted "
            f"afterwards, so print what you need. Limits: {self.limits.timeout:g} s, "
            f"{self.limits.memory_mb} MB of memory for all its processes together, "
            f"{self.limits.output_chars:,} characters of output.")

    @property
    def network_isolation(self) -> str:
        """"namespace" (kernel-enforced) or "audit_hook" (best effort); see bon.tools.sandbox."""
        return self.sandbox.network_isolation

    @property
    def file_isolation(self) -> str:
        """"own_uid" (kernel-enforced: bon is root and each run has a uid of its own), "audit_hook" or both."""
        return self.sandbox.file_isolation

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.max_parallel)
        return semaphore

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        code = arguments["code"]
        if not code.strip():
            return ToolResult.error("bad_arguments", "the code is empty")
        if len(code) > MAX_CODE_CHARS:
            return ToolResult.error("bad_arguments", f"the code is longer than {MAX_CODE_CHARS:,} characters")
        async with self._semaphore():
            try:
                outcome = await self.sandbox.run(code, context.files_dir)
            except (OSError, SandboxUnavailable) as exc:
                return ToolResult.error(SANDBOX_ERROR, f"the sandbox could not be set up: {exc}")
        return self._reply(outcome)

    def _reply(self, outcome: Outcome) -> ToolResult:
        limits = self.limits
        kind: str | None
        if outcome.ended == EXITED and outcome.exit_code == 0:
            kind = OUTPUT_TRUNCATED if outcome.omitted_chars else None
            first = "exit status 0"
        elif outcome.ended == EXITED:
            kind, first = EXIT_CODE, f"error: the program exited with status {outcome.exit_code}"
        elif outcome.ended == TIMEOUT:
            kind, first = TIMEOUT, f"error: killed at the wall-clock time limit of {limits.timeout:g} s"
        elif outcome.ended == CPU_LIMIT:
            kind, first = CPU_LIMIT, f"error: killed after using its {limits.cpu_seconds} s of CPU time"
        elif outcome.ended == MEMORY_LIMIT:
            held = f"; they held {outcome.peak_memory_mb} MB" if outcome.peak_memory_mb > limits.memory_mb else ""
            kind, first = MEMORY_LIMIT, (f"error: out of memory (the limit is {limits.memory_mb} MB for all its "
                                         f"processes together{held})")
        elif outcome.ended == KILLED:
            kind, first = KILLED, f"error: killed by {_signal_name(outcome.signal)}"
        else:
            kind, first = SANDBOX_ERROR, f"error: the sandbox failed before running the code: {outcome.detail}"
        lines = [f"{first} ({outcome.seconds:.2f} s; sandbox: {self.sandbox.mode.describe()})"]
        if outcome.omitted_chars:
            lines.append(f"The output was longer than {limits.output_chars:,} characters: "
                         f"{outcome.omitted_chars:,} characters from the middle are not shown.")
        lines.append("output:" if outcome.output else "output: (none)")
        if outcome.output:
            lines.append(outcome.output.rstrip("\n"))
        if outcome.created:
            listed = ", ".join(f"{name} ({size:,} bytes)" for name, size in outcome.created)
            more = f" and {outcome.more_created:,} more" if outcome.more_created else ""
            lines.append(f"files created (deleted after this call): {listed}{more}")
        return ToolResult(content="\n".join(lines), error_kind=kind)
