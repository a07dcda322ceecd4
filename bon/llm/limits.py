"""Per-model limits: requests in flight (a semaphore) and requests per period (a throttler).

The throttler sits *behind* the semaphore: a task first wins one of `concurrency` slots, then
waits for rate budget. So at most `concurrency` tasks ever poll the throttler, however many are
queued, and a retry goes through both again (the client takes a new slot for every attempt and
holds none while it backs off).

The rate limit must hold where the provider counts: at its server. Admission is not arrival:
between the two lie litellm's import on the first call (5-11 s, during which the event loop is
blocked), a worker process starting, litellm's lazy set-up during its first calls in a process
(seconds on a loaded machine: we measured requests reaching the server >2 s after being handed to
litellm), and then a few ms of litellm CPU per request (a burst admitted together leaves over
~0.1-0.2 s). Dating a request from its admission let a request imported late arrive after its slot
had already been given back: the server saw R+1 in one window. So the throttler logs each request
as *undated* (it counts, and never expires) from admission until it completes, and dates it then;
except that once litellm is warm (a call has returned in that process) the transport reports the
moment it hands the request over (`Lease.sent`), and the request is dated `hold_s` (2 s) after that
if it has not completed by then. Either way the date is no earlier than its arrival at the server,
which is what keeps every server-side window at R (proof: of R+1 requests arriving within one
period, the last admitted would have found the other R still dated inside the period).

Cost: a warm request reserves budget for the period plus min(latency, hold_s) after it is sent, at
least 60/62 = 97% of the rate at a 60 s period; the first wave of a process waits for its latency
once. The bound relies on a warm request arriving within `hold_s` of being handed to litellm.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import AsyncIterator

from asyncio_throttle import Throttler

DEFAULT_HOLD_S = 2.0


class ArrivalThrottler(Throttler):
    """asyncio-throttle's sliding window, where a request counts from when it reached the server.

    On admission the request is logged undated (+inf: it counts and cannot expire); `redate` moves
    it to a finite time once known. The log stays sorted, as Throttler.flush expects.
    """

    async def acquire(self) -> float:
        """Wait for budget; log the request undated and return its entry."""
        await super().acquire()
        self._task_logs.pop()  # the entry super() just appended: its admission time
        self._task_logs.append(math.inf)  # +inf sorts last
        return math.inf

    def redate(self, entry: float, when: float) -> float:
        """Move one request's entry to min(entry, when); returns the new entry."""
        new = min(entry, when)
        if new == entry:
            return entry
        try:
            self._task_logs.remove(entry)
        except ValueError:  # already expired
            return new
        bisect.insort(self._task_logs, new)
        return new


class Lease:
    """One admitted request. Call `sent(warm)` when the request is handed to the HTTP layer."""

    def __init__(self, throttler: ArrivalThrottler | None, entry: float, hold_s: float) -> None:
        self._throttler, self._entry, self._hold = throttler, entry, hold_s

    def sent(self, warm: bool = True, when: float | None = None) -> None:
        """The request is handed to litellm now (or at `when`, a time.monotonic()). If litellm is `warm`
        it reaches the server within `hold_s`: count it until then. If not, it stays undated until done."""
        if self._throttler is not None and warm:
            t = time.monotonic() if when is None else when
            self._entry = self._throttler.redate(self._entry, t + self._hold)

    def done(self, when: float | None = None) -> None:
        """The request has completed (it reached the server by now, if it ever left)."""
        if self._throttler is not None:
            self._entry = self._throttler.redate(self._entry, time.monotonic() if when is None else when)


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
    async def slot(self) -> AsyncIterator[Lease]:
        """Hold one request slot: concurrency first, then rate budget. The caller reports through the
        yielded Lease when the request is sent; until then (or until it completes) it counts undated."""
        self._bind()
        assert self._sem is not None
        async with self._sem:
            throttler = self._throttler
            entry = await throttler.acquire() if throttler is not None else 0.0
            lease = Lease(throttler, entry, self.hold_s)
            self.in_flight += 1
            try:
                yield lease
            finally:
                self.in_flight -= 1
                lease.done()
