"""What stops a run's LLM calls early: an endpoint that never answered, and a spending cap.

`Breaker`: a run pointed at a dead server or with a wrong key would otherwise retry every call with
backoff, fail every sample and bill the judge for grading nothing. When the first `after` requests
to an endpoint all fail to connect or authenticate, the breaker trips: every call through it raises
`EndpointDown` (a BonError: one line, non-zero exit) and the run stops. Once any request gets an
answer of another kind the endpoint is known to work, and later outages are left to the retries.

`Budget`: `budget.usd` / `budget.calls` for the whole run (shared by every client). Once reached, no
new request is sent: the call fails with kind "budget" (never retried), calls already in flight
finish and are counted, and the run writes what it has. Calls are reserved when admitted, so
`calls` is never exceeded; dollars are known only when a response returns, so the USD cap can be
passed by what was in flight when it was reached.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from bon.errors import BonError
from bon.llm.retry import Failure

DEFAULT_BREAKER_AFTER = 8
_BREAKING = ("connection", "auth")


class EndpointDown(BonError):
    """The breaker tripped: the endpoint never answered. Raised from LLMClient.complete."""


def endpoint_of(model: str, api_base: str | None) -> str:
    """host:port of where a model's requests go: api_base, else the provider's <PROVIDER>_API_BASE
    variable (which litellm reads), else litellm's default for the provider."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    base = api_base or os.environ.get(f"{provider.upper()}_API_BASE")
    if not base:
        return f"{provider}'s default endpoint"
    parts = urlsplit(base if "://" in base else f"http://{base}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return base
    return f"{parts.hostname}:{port}"


class Breaker:
    """Counts the first requests to one endpoint; trips when `after` of them in a row failed to
    connect or authenticate before any other answer came back."""

    def __init__(self, endpoint: str, after: int = DEFAULT_BREAKER_AFTER) -> None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 1:
            raise BonError(f"breaker_after must be an integer >= 1, got {after!r}")
        self.endpoint = endpoint
        self.after = after
        self.failures = 0
        self.answered = False
        self.tripped: EndpointDown | None = None

    def __repr__(self) -> str:
        return f"Breaker({self.endpoint!r}, after={self.after}, failures={self.failures}, answered={self.answered})"

    def check(self) -> None:
        """Raise EndpointDown if the breaker has tripped."""
        if self.tripped is not None:
            raise self.tripped

    def record(self, failure: Failure | None, who: str = "") -> None:
        """One request's outcome (None: it succeeded). Raises EndpointDown when this trips the breaker."""
        if self.answered or self.tripped is not None:
            self.check()
            return
        if failure is None or failure.kind not in _BREAKING:
            self.answered = True
            return
        self.failures += 1
        if self.failures >= self.after:
            what = "could not connect" if failure.kind == "connection" else "were refused as unauthorized"
            hint = ("is the server running there?" if failure.kind == "connection" else
                    "check the API key (the variable named by api_key_env).")
            self.tripped = EndpointDown(
                f"{self.endpoint}{f' ({who})' if who else ''} never answered: the first {self.failures} requests "
                f"{what} (last: {failure.kind}: {failure.message[:200]}); {hint} The run is stopped.")
            raise self.tripped


class Budget:
    """A run's spending cap in USD and/or API requests (None: no cap)."""

    def __init__(self, usd: float | None = None, calls: int | None = None) -> None:
        if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or usd <= 0):
            raise BonError(f"budget.usd must be a number of dollars > 0 (or null), got {usd!r}")
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
            raise BonError(f"budget.calls must be an integer >= 1 (or null), got {calls!r}")
        self.usd = None if usd is None else float(usd)
        self.calls = calls
        self.spent_usd = 0.0
        self.calls_made = 0
        self.refused = 0  # requests not sent because the budget was reached

    @classmethod
    def from_options(cls, options: Any) -> Budget | None:
        """A Budget from the run's `budget` options (bon.config.BudgetOptions), or None when neither cap is set."""
        if options is None or (options.usd is None and options.calls is None):
            return None
        return cls(options.usd, options.calls)

    def __repr__(self) -> str:
        return (f"Budget(usd={self.usd}, calls={self.calls}, spent_usd={self.spent_usd:.6f}, "
                f"calls_made={self.calls_made})")

    @property
    def reached(self) -> bool:
        return ((self.calls is not None and self.calls_made >= self.calls)
                or (self.usd is not None and self.spent_usd >= self.usd))

    @property
    def stopped(self) -> bool:
        """True once a request was refused: the run is incomplete because of the budget."""
        return self.refused > 0

    def refuses(self) -> bool:
        """True (and counted as refused) when the cap is already reached, so a call is not even queued."""
        if self.reached:
            self.refused += 1
            return True
        return False

    def admit(self) -> bool:
        """Reserve one request, or refuse it (False) when the budget is reached."""
        if self.reached:
            self.refused += 1
            return False
        self.calls_made += 1
        return True

    def charge(self, usd: float | None) -> None:
        self.spent_usd += usd or 0.0

    def why(self) -> str:
        """Which cap was reached, for the failed call's message and the run's last line."""
        parts = []
        if self.usd is not None:
            parts.append(f"budget.usd={self.usd:g} (spent ${self.spent_usd:.4f})")
        if self.calls is not None:
            parts.append(f"budget.calls={self.calls} (made {self.calls_made})")
        return "budget reached: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "calls": self.calls, "spent_usd": round(self.spent_usd, 6),
                "calls_made": self.calls_made, "refused": self.refused, "stopped": self.stopped}
