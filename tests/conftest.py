"""Shared fixtures: the AgentProcessBench and ReHAC releases.

Each is found as bon finds it with no `dataset.root` / `dataset.path` set: its environment variable
($BON_DATA_DIR, $BON_REHAC_DIR; CI points them at ../shared), else the pinned release downloaded and
verified into the user cache (bon.datasets.fetch). A release that is neither there nor downloadable fails
the tests that need it, with the reason, never skips them.
"""
from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bon.errors import BonError

# The tests start some 70 Python processes (commands, workers, sandboxes). With PYTHONDONTWRITEBYTECODE set
# (as on this project's machines), each would compile bon from source again and every pytest-xdist worker
# would rewrite the test modules' asserts again on every run: the suite writes bytecode (beside the sources,
# gitignored) for itself and the processes it starts.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def _exit_without_teardown() -> None:
    if sys.gettrace() is not None or sys.getprofile() is not None or "coverage" in sys.modules:
        return  # a coverage tool or profiler may still write its data after this
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (not a pytest a test starts): every result has gone to the controller
    before the exit handlers run, and tearing down an interpreter that holds litellm, polars and every
    test module then takes 2-3 s, which the whole suite waits for. Registered before any handler a test
    adds (a worker zygote, a cache), so it runs after all of them."""
    if hasattr(config, "workerinput"):
        atexit.register(_exit_without_teardown)


def _release(locate: Callable[[], Path], env: str, name: str, landmark: str) -> Path:
    try:
        root = locate()
    except BonError as exc:
        problem = str(exc)  # failed outside the handler, so the report is this line, not a chained traceback
    else:
        problem = None
    if problem:
        pytest.fail(f"this test needs the {name} release: {problem}", pytrace=False)
    if not (root / landmark).exists():
        pytest.fail(f"{root} does not hold the {name} release (no {landmark})", pytrace=False)
    os.environ[env] = str(root)  # absolute, so subprocesses started elsewhere find the same copy
    return root


@pytest.fixture(scope="session")
def apb_root() -> Path:
    """The AgentProcessBench release: $BON_DATA_DIR, else the verified download."""
    from bon.datasets import locate_root

    return _release(lambda: locate_root(None), "BON_DATA_DIR", "AgentProcessBench", "data/AnswerOnly")


@pytest.fixture(scope="session")
def rehac_root() -> Path:
    """The ReHAC release: $BON_REHAC_DIR, else $BON_DATA_DIR/../rehac if it exists, else the verified download."""
    from bon.rehac.report import locate_root

    return _release(lambda: locate_root(None), "BON_REHAC_DIR", "ReHAC", "dataset/gpt4/strategyqa.jsonl")
