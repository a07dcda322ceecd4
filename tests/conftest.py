"""Shared fixtures: the AgentProcessBench release, found through $BON_DATA_DIR (a missing copy fails, never skips)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def apb_root() -> Path:
    value = os.environ.get("BON_DATA_DIR")
    if not value:
        pytest.fail("BON_DATA_DIR is not set: point it at the AgentProcessBench release "
                    "(e.g. ../shared/data/agentprocessbench)", pytrace=False)
    root = Path(value).expanduser().resolve()
    if not (root / "data" / "AnswerOnly").is_dir():
        pytest.fail(f"BON_DATA_DIR={root} does not hold the AgentProcessBench release (no data/AnswerOnly/)",
                    pytrace=False)
    os.environ["BON_DATA_DIR"] = str(root)  # absolute, so subprocesses started elsewhere find it too
    return root
