"""One httpx client per event loop, for tools that talk HTTP.

A tool instance lives for a whole run, but an httpx client is bound to the event loop it was made on,
and a process may run several loops in turn (each `asyncio.run`). So the client is made on first use
and made again when the loop changes.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx


class LoopClient:
    """`get()` returns the client for the running loop, built by `factory`; `aclose()` closes it."""

    def __init__(self, factory: Callable[[], httpx.AsyncClient]) -> None:
        self._factory = factory
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._factory(), loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
