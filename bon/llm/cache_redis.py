"""The response cache on a Redis server, for jobs on several nodes (SQLite's locking needs one host).

Each response is one hash `bon:llm:<key>` with the fields SQLite keeps in a row (model, created, value),
`value` holding the same JSON text, so entries move between backends unchanged (bon.cache). Every write
is a single command (HSET of all fields) or one MULTI/EXEC transaction, which Redis applies whole or not
at all: a killed process never leaves half an entry, and of two processes storing the same key the last
one wins, as SQLite's INSERT OR REPLACE does. redis-py is imported only when a redis:// url is used.

The password never appears in messages or reprs (`scrub_url`); a run reads it from $BON_REDIS_PASSWORD,
since a url given on the command line is saved with the run's config.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bon.errors import BonError
from bon.llm.cache import CacheBase, Entry, batches, encode, same_value

log = logging.getLogger(__name__)

PREFIX = "bon:llm:"
FIELDS = ("model", "created", "value")
PASSWORD_ENV = "BON_REDIS_PASSWORD"
_USERINFO = re.compile(r"(://[^/@]*?:)[^/@]*@")  # the password of scheme://user:password@host
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def scrub_url(url: str) -> str:
    """`url` with any password replaced by ***, for messages and reprs."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def _has_password(url: str) -> bool:
    return scrub_url(url) != url


class RedisCache(CacheBase):
    """Responses in a Redis database, one hash per key (modes: see CacheBase). Thread-safe.

    The server is asked for a PING on opening, so one that cannot be reached is a BonError before any
    LLM call. Trouble later in a run is said once and the run goes on without the cache (calls go to the
    API; only reuse is lost), as the SQLite cache does with a damaged file.
    """

    threads = 4  # each operation is a network round trip: let a few overlap

    def __init__(self, mode: str, url: str, *, option: str = "cache.url", password_in_url: bool = False,
                 timeout_s: float = 10.0) -> None:
        super().__init__(mode)
        self.url = scrub_url(url)
        self.option = option
        self._said = False
        self._client: Any = None
        self._errors: type[Exception] = Exception
        if _has_password(url) and not password_in_url:
            raise BonError(f"{option}={self.url!r} holds a password, which would be saved with the run's config "
                           f"(.hydra/): drop it from the url and set ${PASSWORD_ENV} instead")
        if mode == "off":
            return
        try:
            import redis
        except ImportError:
            raise BonError(f"{option}={self.url!r} needs the redis package: pip install 'redis>=5'") from None
        self._errors = redis.RedisError
        password = None if _has_password(url) else os.environ.get(PASSWORD_ENV) or None
        try:
            self._client = redis.Redis.from_url(url, password=password, decode_responses=True,
                                                socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
            self._client.ping()
        except (redis.RedisError, ValueError) as exc:
            self._close()
            raise BonError(f"{option}={self.url!r}: cannot use the Redis server ({self._scrub(exc)}); start it, "
                           f"fix {option}, or set cache.mode=off") from None

    @property
    def path(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RedisCache(mode={self.mode!r}, url={self.url!r})"

    def _scrub(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        password = os.environ.get(PASSWORD_ENV)
        return scrub_url(text.replace(password, "***") if password else text)

    def _trouble(self, exc: Exception) -> None:
        if not self._said:
            self._said = True
            log.error("response cache %s: %s; calls go to the API while it fails (their reuse is lost)",
                      self.url, self._scrub(exc))

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- one response
    def get(self, key: str) -> dict[str, Any] | None:
        if not self.readable or self._client is None:
            return None
        try:
            text = self._client.hget(PREFIX + key, "value")
        except self._errors as exc:
            self._trouble(exc)
            return None
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            log.warning("unreadable cache entry %s in %s; ignoring it", key[:12], self.url)
            return None

    def put(self, key: str, model: str, value: Mapping[str, Any]) -> None:
        """Store one complete response (one HSET: all fields or none; replaces an older entry)."""
        if not self.writable or self._client is None:
            return
        try:
            self._client.hset(PREFIX + key, mapping={"model": model, "created": repr(time.time()),
                                                     "value": encode(value)})
        except self._errors as exc:
            self._trouble(exc)

    def __len__(self) -> int:
        if self._client is None:
            return 0
        return sum(1 for _ in self._client.scan_iter(match=PREFIX + "*", count=1000))

    # -- moving entries (bon.cache)
    def entries(self, batch: int = 500) -> Iterator[Entry]:
        if self._client is None:
            return
        keys: list[str] = []
        for name in self._client.scan_iter(match=PREFIX + "*", count=1000):
            keys.append(name)
            if len(keys) >= batch:
                yield from self._fetch(keys)
                keys = []
        yield from self._fetch(keys)

    def _fetch(self, names: list[str]) -> Iterator[Entry]:
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, FIELDS)
        for name, (model, created, value) in zip(names, pipe.execute()):
            if value is not None:  # deleted since the scan
                yield Entry(name[len(PREFIX):], model or "", float(created or 0), value)

    def add_many(self, entries: Iterable[Entry], batch: int = 500) -> dict[str, int]:
        """HSETNX of each field inside one MULTI/EXEC per batch: a key already held keeps its entry."""
        counts = {"copied": 0, "present": 0, "conflicts": 0}
        if self._client is None:
            return counts
        client = self._client

        def flush(pending: list[Entry]) -> None:
            pipe = client.pipeline(transaction=True)
            for e in pending:
                for field_, value in zip(FIELDS, (e.model, repr(float(e.created)), e.value)):
                    pipe.hsetnx(PREFIX + e.key, field_, value)
            stored = pipe.execute()
            held = [e for i, e in enumerate(pending) if not stored[3 * i + 2]]
            counts["copied"] += len(pending) - len(held)
            if held:
                pipe = client.pipeline(transaction=False)
                for e in held:
                    pipe.hget(PREFIX + e.key, "value")
                for e, theirs in zip(held, pipe.execute()):
                    counts["present" if same_value(theirs, e.value) else "conflicts"] += 1

        for pending in batches(entries, batch):
            flush(pending)
        return counts
