"""A persistent cache of LLM responses in SQLite, shared by processes and safe against SIGKILL.

Why SQLite: multirun jobs (joblib, submitit) hit the same cache at once, and a run may be killed at
any moment. SQLite in WAL mode gives concurrent readers, one writer at a time (others wait up to
`busy_timeout`), and atomic transactions, so a reader sees either a complete row or none. A row is
written only once a response is complete, in one statement; a crash loses at most the responses
still in flight, never the file's consistency. `synchronous=NORMAL` in WAL mode survives a killed
process (only a power cut can drop the last commits), at a fraction of the cost of FULL.

The key is a SHA-256 over a canonical JSON of what determines the reply: model, messages, tools,
sampling parameters and the sample index. Transport settings and credentials (api_key, api_base,
timeouts, retry counts, headers) are left out, so a key rotation or a new port for a local server
keeps the cache, and no secret can reach the file.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import platformdirs

from bon.errors import BonError

log = logging.getLogger(__name__)

MODES = ("off", "read", "write", "readwrite")
FILENAME = "responses.sqlite"
SCHEMA_VERSION = 1

# Parameters that change how a request travels, not what the model answers.
TRANSPORT_PARAMS = frozenset({
    "api_key", "api_base", "base_url", "api_version", "organization", "timeout", "request_timeout",
    "num_retries", "max_retries", "extra_headers", "headers", "metadata", "caching", "cache",
    "stream", "stream_options", "litellm_logging_obj", "mock_response", "client", "aws_access_key_id",
    "aws_secret_access_key", "aws_session_token", "vertex_credentials", "azure_ad_token",
})
_SECRET_MARKERS = ("api_key", "secret", "password", "credential", "access_token")


def default_cache_dir() -> Path:
    """<root>/llm, where root is $BON_CACHE_DIR or the platform's user cache directory for bon."""
    root = os.environ.get("BON_CACHE_DIR") or platformdirs.user_cache_dir("bon")
    return Path(root).expanduser() / "llm"


def _plain(obj: Any) -> Any:
    """JSON fallback for pydantic objects (e.g. a litellm Message passed back in `messages`)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_none=True)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key; pass plain JSON data")


def key_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that belong in the key: everything except transport settings and secrets."""
    return {k: v for k, v in params.items()
            if v is not None and k not in TRANSPORT_PARAMS and not any(m in k.lower() for m in _SECRET_MARKERS)}


def cache_key(model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
              params: Mapping[str, Any], sample: int) -> str:
    """SHA-256 hex of the canonical JSON of what determines a reply (never credentials)."""
    doc = {"v": SCHEMA_VERSION, "model": model, "messages": list(messages), "tools": list(tools or []),
           "params": key_params(params), "sample": int(sample)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """One SQLite file of responses, one row per key.

    `mode`: off (no file), read (hits only, nothing stored), write (always call, store/overwrite),
    readwrite (hits, and store misses). The sync methods are thread-safe; the async ones run on a
    private thread so a writer waiting for another process's lock never blocks the event loop.
    """

    def __init__(self, mode: str = "readwrite", cache_dir: str | os.PathLike[str] | None = None, *,
                 busy_timeout_s: float = 60.0) -> None:
        if mode not in MODES:
            raise BonError(f"unknown cache mode {mode!r}; valid choices: {', '.join(MODES)}")
        self.mode = mode
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.path = self.dir / FILENAME
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._broken = False
        if mode != "off":
            self._check_usable()

    def _check_usable(self) -> None:
        """Refuse an unusable cache before any call is made (a call made first would be paid for twice)."""
        if self.dir.exists() and not self.dir.is_dir():
            raise BonError(f"cache.dir {self.dir} is a file, not a directory; point cache.dir at a directory "
                           f"(or set cache.mode=off)")
        if self.writable:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BonError(f"cannot create cache.dir {self.dir}: {exc.strerror}; point cache.dir at a "
                               f"writable directory (or set cache.mode=off)") from None
        if self.path.exists() and not self.path.is_file():
            raise BonError(f"response cache {self.path} is not a file; move it away or set cache.mode=off")
        if self.path.exists():
            try:
                with self._lock:
                    self._connection().execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as exc:
                self.close()
                raise BonError(self._damaged(exc)) from None

    def _damaged(self, exc: Exception) -> str:
        return (f"response cache {self.path} is damaged ({exc}); delete it (its responses will be fetched again) "
                f"or run with cache.mode=off")

    def _give_up(self, exc: sqlite3.DatabaseError) -> None:
        """Damage found mid-run: say so once, then run on without the cache (calls go to the API)."""
        if not self._broken:
            self._broken = True
            log.error("%s; the rest of this run makes its calls without the cache", self._damaged(exc))

    @property
    def readable(self) -> bool:
        return self.mode in ("read", "readwrite")

    @property
    def writable(self) -> bool:
        return self.mode in ("write", "readwrite")

    def __repr__(self) -> str:
        return f"ResponseCache(mode={self.mode!r}, path={str(self.path)!r})"

    # -- connection
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS responses ("
                         " key TEXT PRIMARY KEY, model TEXT NOT NULL, created REAL NOT NULL,"
                         " value TEXT NOT NULL) WITHOUT ROWID")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the file (pending async operations finish first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sync API
    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response for `key`, or None (also when the mode does not read)."""
        if not self.readable or self._broken or (self._conn is None and not self.path.exists()):
            return None  # a read-only cache never creates the file
        try:
            with self._lock:
                row = self._connection().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:  # OperationalError (a lock held past busy_timeout) is raised
            if isinstance(exc, sqlite3.OperationalError):
                raise
            self._give_up(exc)
            return None
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except ValueError:  # cannot happen for rows we wrote; treat as a miss rather than fail the run
            log.warning("unreadable cache row %s in %s; ignoring it", key[:12], self.path)
            return None

    def put(self, key: str, model: str, value: Mapping[str, Any]) -> None:
        """Store one complete response (atomically; replaces an older row for the same key)."""
        if not self.writable or self._broken:
            return
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        try:
            with self._lock:
                self._connection().execute(
                    "INSERT OR REPLACE INTO responses (key, model, created, value) VALUES (?, ?, ?, ?)",
                    (key, model, time.time(), text))
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            self._give_up(exc)

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def rows(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(key, model, response) for every row, for inspection and tests."""
        with self._lock:
            rows = self._connection().execute("SELECT key, model, value FROM responses").fetchall()
        for key, model, value in rows:
            yield key, model, json.loads(value)

    # -- async API
    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bon-llm-cache")
        return self._executor

    async def aget(self, key: str) -> dict[str, Any] | None:
        if not self.readable:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._pool(), self.get, key)

    async def aput(self, key: str, model: str, value: Mapping[str, Any]) -> None:
        if not self.writable:
            return
        await asyncio.get_running_loop().run_in_executor(self._pool(), self.put, key, model, value)
