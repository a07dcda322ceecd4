"""Retry policy and Retry-After parsing (pure functions), and the lazy litellm import."""
from __future__ import annotations

import email.utils
import random
import subprocess
import sys

import pytest

from bon.llm.retry import Failure, RetryPolicy, parse_retry_after


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_backoff_is_full_jitter_bounded_by_max_delay_and_attempts():
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=5.0)
    transient = Failure("server_error", True, "boom")
    rng = random.Random(0)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        delays = [policy.delay(attempt, transient, rng) for _ in range(500)]
        assert 0 <= min(delays) and max(delays) <= cap and max(delays) > 0.8 * cap
    assert policy.delay(4, transient, rng) is None  # attempts used up
    assert RetryPolicy(max_attempts=20, base_delay=1.0, max_delay=5.0).delay(12, transient, rng) <= 5.0
    assert policy.delay(1, Failure("auth", False, "no"), rng) is None


def test_retry_after_is_a_floor_with_a_little_spread():
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=60)
    limited = Failure("rate_limit", True, "slow down", 429, retry_after=10.0)
    delays = [policy.delay(1, limited, random.Random(i)) for i in range(200)]
    assert min(delays) >= 10.0 and max(delays) <= 11.0
    assert policy.delay(1, Failure("rate_limit", True, "x", 429, retry_after=61.0)) is None


def test_importing_bon_llm_does_not_import_litellm():
    code = "import sys, bon.llm; assert 'litellm' not in sys.modules, 'litellm imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_dns_failure_under_a_500_is_a_connection_failure():
    """litellm wraps an unreachable host in InternalServerError (HTTP 500) for openai/ and hosted_vllm/;
    the cause underneath decides. (A real lookup would leave the machine, so the chain is built here.)"""
    import socket

    from bon.llm.retry import classify
    from bon.llm.transport import import_litellm

    litellm = import_litellm()

    def raised(cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except Exception as inner:
                raise litellm.InternalServerError("Connection error.", "openai", "openai/x") from inner
        except Exception as exc:  # noqa: BLE001
            return exc

    dns = classify(raised(socket.gaierror(-2, "Name or service not known")))
    assert (dns.kind, dns.retryable) == ("connection", True) and "gaierror" in dns.message
    assert classify(raised(TimeoutError("timed out"))).kind != "connection"  # a slow server is not a dead one
    assert classify(raised(ValueError("boom"))).kind == "server_error"  # a real 500 stays one
