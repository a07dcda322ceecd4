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

SQLite's locking needs every process on one host. Jobs on several nodes share a Redis server instead
(`cache.url=redis://host:port/db`, bon.llm.cache_redis): the same keys, modes and stored values.
`open_cache` is the one place that picks the backend.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

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


# Filesystems shared over a network (or by a cluster), where SQLite's WAL mode is unsafe.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "afs", "9p",
    "panfs", "wekafs", "orangefs", "pvfs2", "ocfs2", "gfs2", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs",
})
_warned_network_dirs: set[Path] = set()


class Entry(NamedTuple):
    """One stored response as both backends keep it: `value` is its compact JSON text."""

    key: str
    model: str
    created: float
    value: str


def encode(value: Mapping[str, Any]) -> str:
    """The stored text of a response (the same bytes in every backend)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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


class CacheBase:
    """What every backend shares: the modes and an async API over the blocking one.

    `mode`: off (nothing stored or read), read (hits only, nothing stored), write (always call,
    store/overwrite), readwrite (hits, and store misses). The async methods run the sync ones on a
    private thread, so a cache that waits (for a lock, for the network) never blocks the event loop.
    """

    mode: str
    threads = 1

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise BonError(f"unknown cache mode {mode!r}; valid choices: {', '.join(MODES)}")
        self.mode = mode
        self._executor: ThreadPoolExecutor | None = None

    @property
    def readable(self) -> bool:
        return self.mode in ("read", "readwrite")

    @property
    def writable(self) -> bool:
        return self.mode in ("write", "readwrite")

    @property
    def path(self) -> str | Path:
        """Where the responses are, for messages (never with a password)."""
        raise NotImplementedError

    def get(self, key: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def put(self, key: str, model: str, value: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def entries(self) -> Iterator[Entry]:
        """Every stored entry, as stored (for moving entries between caches)."""
        raise NotImplementedError

    def add_many(self, entries: Iterable[Entry]) -> dict[str, int]:
        """Store the entries this cache lacks, keeping its own where it has the key: counts of
        "copied", "present" (same value) and "conflicts" (another value, which is kept)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the cache (pending async operations finish first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._close()

    def __enter__(self) -> CacheBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="bon-llm-cache")
        return self._executor

    async def aget(self, key: str) -> dict[str, Any] | None:
        if not self.readable:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._pool(), self.get, key)

    async def aput(self, key: str, model: str, value: Mapping[str, Any]) -> None:
        if not self.writable:
            return
        await asyncio.get_running_loop().run_in_executor(self._pool(), self.put, key, model, value)


def same_value(a: str, b: str) -> bool:
    """Whether two stored texts hold the same response (formatting aside)."""
    if a == b:
        return True
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


class ResponseCache(CacheBase):
    """One SQLite file of responses, one row per key (modes: see CacheBase). Thread-safe."""

    def __init__(self, mode: str = "readwrite", cache_dir: str | os.PathLike[str] | None = None, *,
                 busy_timeout_s: float = 60.0) -> None:
        super().__init__(mode)
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.file = self.dir / FILENAME
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
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
        warn_if_network_filesystem(self.dir)

    def _damaged(self, exc: Exception) -> str:
        return (f"response cache {self.path} is damaged ({exc}); delete it (its responses will be fetched again) "
                f"or run with cache.mode=off")

    def _give_up(self, exc: sqlite3.DatabaseError) -> None:
        """Damage found mid-run: say so once, then run on without the cache (calls go to the API)."""
        if not self._broken:
            self._broken = True
            log.error("%s; the rest of this run makes its calls without the cache", self._damaged(exc))

    @property
    def path(self) -> Path:
        return self.file

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

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
        text = encode(value)
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

    # -- moving entries (bon.cache)
    def entries(self, batch: int = 1000) -> Iterator[Entry]:
        if not self.path.exists():
            return
        last = ""
        while True:
            with self._lock:
                rows = self._connection().execute(
                    "SELECT key, model, created, value FROM responses WHERE key > ? ORDER BY key LIMIT ?",
                    (last, batch)).fetchall()
            yield from (Entry(*row) for row in rows)
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def add_many(self, entries: Iterable[Entry], batch: int = 500) -> dict[str, int]:
        counts = {"copied": 0, "present": 0, "conflicts": 0}

        def flush(pending: list[Entry]) -> None:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")  # one transaction per batch: all of it or none
                try:
                    for e in pending:
                        cur = conn.execute("INSERT OR IGNORE INTO responses (key, model, created, value) "
                                           "VALUES (?, ?, ?, ?)", e)
                        if cur.rowcount == 1:
                            counts["copied"] += 1
                            continue
                        (held,) = conn.execute("SELECT value FROM responses WHERE key = ?", (e.key,)).fetchone()
                        counts["present" if same_value(held, e.value) else "conflicts"] += 1
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

        for pending in batches(entries, batch):
            flush(pending)
        return counts


def batches(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    """The entries in lists of at most `size`: each list is written in one transaction."""
    batch: list[Entry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- network filesystems


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes a space, tab, newline or backslash in a path as a 3-digit octal escape."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str | os.PathLike[str], mounts: str | None = None) -> str | None:
    """The type of the filesystem holding `path` (its longest mount point in the mounts table,
    /proc/mounts by default), or None where that cannot be told."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = Path(path).expanduser().resolve()  # symlinks followed as far as the path exists
    best, kind = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_unescape_mount(fields[1]))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def network_filesystem(path: str | os.PathLike[str], mounts: str | None = None) -> str | None:
    """The network filesystem type holding `path` (e.g. "nfs4", "lustre"), or None."""
    kind = filesystem_type(path, mounts)
    return kind if kind is not None and kind.lower() in NETWORK_FILESYSTEMS else None


def warn_if_network_filesystem(cache_dir: Path, mounts: str | None = None) -> bool:
    """Say once per directory that SQLite's WAL mode is unsafe there, and what to use instead."""
    kind = network_filesystem(cache_dir, mounts)
    if kind is None or cache_dir in _warned_network_dirs:
        return False
    _warned_network_dirs.add(cache_dir)
    log.warning("response cache %s is on a network filesystem (%s), where SQLite's locking is unsafe across "
                "nodes: set cache.url=redis://HOST:PORT/DB or a node-local cache.dir", cache_dir, kind)
    return True


# ---------------------------------------------------------------- the one place a backend is chosen


def open_cache(mode: str = "readwrite", url: str | None = None, cache_dir: str | os.PathLike[str] | None = None, *,
               option: str = "cache.url", password_in_url: bool = False) -> CacheBase:
    """The cache a `url` (sqlite:///DIR or redis://HOST:PORT/DB) or a directory names; neither: the default
    directory. Checked before any call: a Redis server that cannot be reached is a BonError naming `option`.
    `password_in_url`: allow redis://:PASSWORD@... (refused where the URL would be saved, as in a run's
    .hydra/ files; there the password comes from $BON_REDIS_PASSWORD)."""
    if url is not None and cache_dir is not None:
        raise BonError(f"set {option} or cache.dir, not both ({option} names the cache, directory or server)")
    if url is None:
        return ResponseCache(mode, cache_dir)
    scheme = str(url).partition("://")[0].lower() if "://" in str(url) else ""
    if scheme == "sqlite":
        path = str(url)[len("sqlite://"):]
        if not path:
            raise BonError(f"{option}={url!r} names no directory; write sqlite:///ABSOLUTE/DIR")
        folder = Path(path).expanduser()
        return ResponseCache(mode, folder.parent if folder.name == FILENAME else folder)
    if scheme in ("redis", "rediss", "unix"):
        from bon.llm.cache_redis import RedisCache

        return RedisCache(mode, str(url), option=option, password_in_url=password_in_url)
    from bon.llm.cache_redis import scrub_url

    raise BonError(f"{option}={scrub_url(str(url))!r} is not a cache url; valid schemes: sqlite:///DIR, "
                   f"redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS), unix:///SOCKET")
