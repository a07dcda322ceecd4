"""Per-model limits: requests in flight (a semaphore) and requests per period (a throttler).

The throttler sits *behind* the semaphore: a task first wins one of `concurrency` slots, then
waits for rate budget. So at most `concurrency` tasks ever poll the throttler, however many are
queued, and a retry goes through both again (the client takes a new slot for every attempt and
holds none while it backs off).

The rate limit must hold where the provider counts: at its server. A plain throttler counts a
request when it is admitted, but it reaches the server later: litellm spends a few ms of CPU on
each request, so the last of a burst admitted together leaves ~0.1-0.2 s after the first, and on a
cold start (litellm's first call, new connections) we measured 0.4-0.5 s. The next period's
requests then crowd into the server's window of the previous burst. So a request counts in the
throttler's log from its completion (by then it has surely arrived), or from `hold_s` (2 s) after
admission if it takes longer than that: the limit holds at the server as long as every request
leaves within `hold_s` of its admission. That costs min(latency, hold_s) per period: at most 3.3%
of the rate at 60 s.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from typing import AsyncIterator

from asyncio_throttle import Throttler


DEFAULT_HOLD_S = 2.0


class ArrivalThrottler(Throttler):
    """asyncio-throttle's sliding window, where a request counts from when it reached the server.

    On admission the request is logged at the latest time it can arrive (admission + hold: a
    request in flight never expires early); on completion it is re-dated to the completion time
    if that is earlier. The log stays sorted, as Throttler.flush expects.
    """

    async def acquire(self, hold: float = DEFAULT_HOLD_S) -> float:  # type: ignore[override]
        """Wait for budget; return the provisional time logged for this request."""
        await super().acquire()
        provisional = self._task_logs.pop() + hold  # the entry super() just appended: its admission
        bisect.insort(self._task_logs, provisional)
        return provisional

    def settle(self, provisional: float, arrived: float) -> None:
        """Re-date one request to `arrived` (a no-op if its entry has already expired)."""
        try:
            self._task_logs.remove(provisional)
        except ValueError:
            return
        bisect.insort(self._task_logs, min(arrived, provisional))


class Limiter:
    """At most `concurrency` requests in flight and at most `rpm` per `period` seconds at the server.

    Share one Limiter between clients that draw on the same provider quota. Safe to reuse across
    `asyncio.run` calls: the primitives are rebuilt for each new event loop.
    """

    def __init__(self, concurrency: int = 16, rpm: int | None = None, period: float = 60.0,
                 hold_s: float = DEFAULT_HOLD_S) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be >= 1 (or None for no rate limit)")
        if period <= 0:
            raise ValueError("period must be > 0")
        self.concurrency = concurrency
        self.rpm = rpm
        self.period = period
        self.hold_s = hold_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._throttler: ArrivalThrottler | None = None
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"Limiter(concurrency={self.concurrency}, rpm={self.rpm}, period={self.period})"

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._sem = asyncio.Semaphore(self.concurrency)
            self._throttler = (ArrivalThrottler(rate_limit=self.rpm, period=self.period,
                                                retry_interval=min(0.01, self.period / 100))
                               if self.rpm else None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request slot: concurrency first, then rate budget."""
        self._bind()
        assert self._sem is not None
        async with self._sem:
            throttler = self._throttler
            provisional = await throttler.acquire(self.hold_s) if throttler is not None else 0.0
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
                if throttler is not None:
                    throttler.settle(provisional, time.monotonic())
