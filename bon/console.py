"""What a live run says: one line per event on the terminal (above any progress bar), everything in run.log.

Shared by the live pipeline and the commands that only judge (bon.prm_eval, the ReHAC judge predictor).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Loggers whose records belong in run.log only, never on the terminal: one line per failed call, and
# the copies of what was said on the terminal.
FILE_ONLY_LOGGERS = ("bon.llm.calls", "bon.live.said")
said = logging.getLogger("bon.live.said")


def say(message: str) -> None:
    """A line for the terminal (stderr, above any progress bar), copied into run.log."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
    said.info(message)


def say_failures(stage: str, stats: Any) -> None:
    """One terminal line per kind of failed call (each call's details are in run.log)."""
    for kind, n in sorted(stats.failures.items(), key=lambda kv: -kv[1]):
        example = stats.failure_example.get(kind, "")
        say(f"{stage}: {n} of {stats.calls} calls failed with {kind}"
            + (f" (last: {example[:160]})" if example else "") + "; each is in run.log")


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(FILE_ONLY_LOGGERS)


@contextlib.contextmanager
def run_logging(out_dir: Path | None) -> Iterator[None]:
    """During a live run, log records reach the terminal through tqdm (never glued to a progress bar),
    and run.log in the run directory gets everything, including one line per failed call. Under Hydra
    run.log is its job log; otherwise a file handler is added for the run (none for out_dir=None:
    the process's own log files, if any, get the per-call lines)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    root = logging.getLogger()
    target = None if out_dir is None else (out_dir / "run.log").resolve()
    added = None
    if target is not None and not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == target
                                      for h in root.handlers):
        target.parent.mkdir(parents=True, exist_ok=True)
        added = logging.FileHandler(target, encoding="utf-8")
        added.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(added)
    quiet = _FileOnly()
    levels = {name: logging.getLogger(name).level for name in FILE_ONLY_LOGGERS}
    for name in FILE_ONLY_LOGGERS:
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():
            terminal = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
            for handler in terminal:
                handler.addFilter(quiet)
            try:
                yield
            finally:
                for handler in terminal:
                    handler.removeFilter(quiet)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if added is not None:
            root.removeHandler(added)
            added.close()
