"""bon: Best-of-N test-time scaling for tool-using LLM agents."""
from __future__ import annotations

__version__ = "0.1.0"

# The library API for agent loops (bon.api), loaded on first use so `import bon` stays light
# (not even `typing` is imported here; type checkers read the names below).
_API = ("best_of_n", "beam", "stepwise", "dvts", "listwise", "pairwise", "Result", "Compute")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bon.api import Compute, Result, beam, best_of_n, dvts, listwise, pairwise, stepwise  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        from bon import api

        return getattr(api, name)
    raise AttributeError(f"module 'bon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
