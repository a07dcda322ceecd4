"""User-facing errors: one clear message, no traceback, non-zero exit.

Commands exit 2 on bad input (`BonError`) and 130 on Ctrl-C, each with a single line on stderr.
"""
from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import NoReturn, TypeVar, cast

F = TypeVar("F", bound=Callable)

USER_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
INTERRUPT_GRACE_S = 0.5
INTERRUPT_NOTE = ("interrupted: stopped (files already written are kept; trajectories and cached LLM responses "
                  "let a rerun of the same command resume)")


class BonError(Exception):
    """A problem with the user's input or environment that they can fix."""


def unknown_choice(kind: str, value: object, valid: Iterable[str]) -> BonError:
    """Error for an unknown option, listing the valid ones."""
    choices = ", ".join(sorted(valid))
    return BonError(f"unknown {kind} {value!r}; valid choices: {choices}")


def fail(message: str) -> NoReturn:
    """Print one `error:` line and exit 2 (newlines in the message are folded into the line)."""
    leave("error: " + " ".join(str(message).split()), USER_ERROR)


def finished(code: int = 0) -> NoReturn:
    """End a command that has done its work without the interpreter's teardown.

    Tearing down every module and object that polars, numpy and Hydra created takes 0.1-0.15 s of a
    one-second command on 2 cores, and saves nothing: the outputs are written and closed. So: flush
    stdout and stderr, run the exit handlers (logging's flush of run.log, the worker zygote's close, any
    library's), then end the process with os._exit. When another non-daemon thread is still running, or
    a profiler, debugger or coverage tool is watching, the process exits normally instead.
    """
    import atexit

    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # stdout closed early (`| head`)
        stdout_gone()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # the normal exit waits for it
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # `python -m cProfile -m bon.run`, a debugger, coverage: they report after the module returns
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


class JobStopped(Exception):
    """A command that stopped with `line` and exit code `code` inside a job of a submitit sweep
    (hydra/launcher=submitit_local, slurm); `logs` is the job's log folder.

    submitit sends a job's exception back to the sweep at once, but waits 15-30 s for the result of a
    job that exited, then reports it as a lost job; the sweep says `line` and exits `code` (bon.config).
    Loading the pickled exception raises it: the sweep stops where submitit reads the job's result,
    before Hydra would add its own "Error executing job" line to the one line.
    """

    def __init__(self, line: str, code: int, logs: str | None) -> None:
        super().__init__(line, code, logs)
        self.line, self.code, self.logs = line, code, logs

    def __reduce__(self) -> tuple[Callable[..., NoReturn], tuple[str, int, str | None]]:
        return _stop_the_sweep, (self.line, self.code, self.logs)


def _stop_the_sweep(line: str, code: int, logs: str | None) -> NoReturn:
    raise JobStopped(line, code, logs)


def leave(line: str, code: int) -> NoReturn:
    """Say `line` on stderr and exit `code`; inside a submitit job, raise JobStopped for the sweep instead."""
    print(line, file=sys.stderr, flush=True)
    if os.environ.get("SUBMITIT_FOLDER"):  # set by submitit in its jobs, and only there
        from submitit import JobEnvironment

        raise JobStopped(line, code, str(JobEnvironment().paths.folder))
    sys.exit(code)


def exit_on_user_error(fn: F) -> F:
    """Turn a BonError raised inside a command into a one-line message and exit code 2, and stdout closed
    early (`| head`) into a quiet exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BonError as exc:
            fail(str(exc))
        except BrokenPipeError:  # raised inside Hydra's job, it would add "Error executing job" to stderr
            stdout_gone()

    return cast(F, wrapper)  # functools.wraps keeps fn's signature


def stdout_gone() -> NoReturn:
    """Stdout was closed early (`... | head`): nothing more can reach it, so exit 1 without a word
    (and without the interpreter's complaint when it flushes stdout at exit)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)


class _Interrupts:
    """Ctrl-C stops the command within INTERRUPT_GRACE_S, with one line and exit code 130.

    Why a thread: Python runs its SIGINT handler only between bytecodes of the main thread, so a
    main thread inside Rust or C (a polars collect, a numpy kernel) would not notice Ctrl-C until
    that call returns, possibly many seconds later. `signal.set_wakeup_fd` makes the C-level
    handler write the signal number to a pipe at once; a watcher thread reading it prints the
    line, gives the main thread's own KeyboardInterrupt path the grace period to finish normal
    cleanup, and otherwise ends the process with `os._exit(130)`. Nothing half-written is left
    behind by that: trajectories are appended and fsync'd line by line, the LLM cache is SQLite
    (a transaction is either in the file or not), and summary.json is written last by rename.
    A second Ctrl-C ends the process at once.
    """

    def __init__(self, grace_s: float = INTERRUPT_GRACE_S) -> None:
        self.grace_s = grace_s
        self._said = threading.Lock()
        self._announced = False
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            return  # SIGINT is ignored (e.g. a background job) or not handled by Python: leave it so
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="bon-interrupt", daemon=True).start()
        self._installed = True

    def announce(self) -> None:
        """Print the one line, once, whichever thread sees the interrupt first."""
        with self._said:
            if self._announced:
                return
            self._announced = True
        lead = "\n" if sys.stderr.isatty() else ""  # end a progress bar's line first
        try:
            sys.stderr.write(f"{lead}{INTERRUPT_NOTE}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _watch(self, read_fd: int) -> None:
        seen = 0
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            seen += data.count(signal.SIGINT)
            if seen == 0:
                continue
            self.announce()
            if seen == 1:
                select.select([read_fd], [], [], self.grace_s)  # a second Ctrl-C cuts the grace short
            os._exit(INTERRUPTED)


INTERRUPTS = _Interrupts()


def command(fn: F) -> F:
    """Wrap a command's entry point: BonError -> one line + exit 2; Ctrl-C -> one line + exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        INTERRUPTS.install()
        try:
            return fn(*args, **kwargs)
        except BonError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            INTERRUPTS.announce()
            sys.exit(INTERRUPTED)

    return cast(F, wrapper)  # functools.wraps keeps fn's signature
