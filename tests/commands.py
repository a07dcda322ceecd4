"""Run a bon command (`python -m bon.run ...`) inside the test process, for tests of what a run produces.

A subprocess start costs Python, Hydra and polars imports again (and litellm's, ~3 s, on the live path);
most tests assert on what the run wrote, printed and sent to the fake server, which the same entry point
called here produces just as well. Tests of the process itself stay subprocesses: exit codes of errors
with their one-line message, Ctrl-C and kill, import costs (which modules a command pulls in).

`run_in_process` takes what `subprocess.run` would (module, arguments, cwd, environment) and returns a
`subprocess.CompletedProcess` with the exit code and the captured stdout and stderr, so a test reads the
same either way. It calls the module's `main()` as `python -m` would: with `sys.argv`, the working
directory and `os.environ` set for the call and restored after, and the root logger (which Hydra
reconfigures for each run) put back as it was. Warnings go to the captured stderr as they would in a
fresh interpreter. A test of a one-line error may run here too: the entry point turns the error into
the same exit code and `error:` line; at least one such test per command stays a subprocess.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from unittest import mock

_INTERPRETER_FILTERS = list(warnings.filters)  # as at collection: what `python -m` starts with


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Warnings printed on stderr as a fresh interpreter would (pytest would otherwise record them), so a
    test of "one line on stderr" sees them in-process too."""
    with warnings.catch_warnings():  # also resets the once-per-location registries
        warnings.filters[:] = _INTERPRETER_FILTERS
        getattr(warnings, "_filters_mutated", lambda: None)()
        warnings.showwarning = warnings._showwarning_orig  # type: ignore[attr-defined]
        yield


@contextlib.contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _root_logger_kept() -> Iterator[None]:
    """Hydra's logging config replaces the root logger's handlers (pytest's capture among them): undo that."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()  # the run's console and file handlers
        root.handlers[:] = handlers
        root.setLevel(level)


def run_in_process(module: str, *args: str, cwd: Path | str, env: Mapping[str, str] | None = None,
                   ) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` (module: bon.run, bon.prm_eval, bon.report, ...) called in this process."""
    from hydra.core.global_hydra import GlobalHydra

    from bon import errors

    entry = importlib.import_module(module)
    started = getattr(entry, "_started", None)  # hydra_command's "run directory made" flag: new for each run
    if started is not None:
        started.clear()
    out, err = io.StringIO(), io.StringIO()
    argv = [module, *args]
    code: int | str | None = 0
    GlobalHydra.instance().clear()
    with (_environment(env), _root_logger_kept(), _warnings_to_stderr(), contextlib.chdir(cwd), mock.patch.object(sys, "argv", argv),
          mock.patch.object(errors.INTERRUPTS, "install", lambda: None),  # Ctrl-C stays pytest's
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            entry.main()
        except SystemExit as exc:
            code = exc.code
        except Exception:  # what the interpreter would print before exiting 1
            traceback.print_exc()
            code = 1
        finally:
            GlobalHydra.instance().clear()
    if isinstance(code, str):  # sys.exit("message"): printed, exit 1
        print(code, file=err)
        code = 1
    return subprocess.CompletedProcess([sys.executable, "-m", *argv], code or 0, out.getvalue(), err.getvalue())

