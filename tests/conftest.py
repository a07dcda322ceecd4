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


@pytest.fixture(scope="session")
def rehac_root() -> Path:
    """The ReHAC release: $BON_REHAC_DIR, else $BON_DATA_DIR/../rehac (a missing copy fails, never skips)."""
    value = os.environ.get("BON_REHAC_DIR")
    if not value and os.environ.get("BON_DATA_DIR"):
        value = str(Path(os.environ["BON_DATA_DIR"]) / ".." / "rehac")
    if not value:
        pytest.fail("neither BON_REHAC_DIR nor BON_DATA_DIR is set: point BON_REHAC_DIR at the ReHAC release "
                    "(e.g. ../shared/data/rehac)", pytrace=False)
    root = Path(value).expanduser().resolve()
    if not (root / "dataset" / "gpt4" / "strategyqa.jsonl").is_file():
        pytest.fail(f"{root} does not hold the ReHAC release (no dataset/gpt4/strategyqa.jsonl)", pytrace=False)
    os.environ["BON_REHAC_DIR"] = str(root)  # absolute, so subprocesses started elsewhere find it too
    return root
