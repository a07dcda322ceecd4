"""Move LLM responses between caches: `python -m bon.cache export|import|merge`.

After a sweep whose jobs each kept their own SQLite cache (node-local, as SQLite needs), `merge` folds them
into one; `export`/`import` carry a cache through a JSONL file, e.g. from SQLite into Redis. A cache is
named by a url (sqlite:///DIR, redis://HOST:PORT/DB) or a directory. An entry already in the target is
kept: the same response counts as present, a different one as a conflict (the target's stays).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bon import jsonl
from bon.errors import BonError, command, finished
from bon.llm.cache import FILENAME, CacheBase, Entry, encode, open_cache

_KEY = re.compile(r"[0-9a-f]{64}")


def open_named(name: str, mode: str, what: str) -> CacheBase:
    """The cache `name` (a url or a directory); one to read from must exist."""
    if "://" in name:
        return open_cache(mode, url=name, option=what, password_in_url=True)
    folder = Path(name).expanduser()
    if mode == "read" and not (folder / FILENAME).is_file():
        raise BonError(f"{what} {name}: no response cache there (no {FILENAME}); name a cache directory "
                       f"or a url (sqlite:///DIR, redis://HOST:PORT/DB)")
    return open_cache(mode, cache_dir=folder)


def _entries_of(path: Path) -> Iterator[Entry]:
    """The entries of an exported JSONL file; a bad line is a BonError naming path:line."""
    for lineno, record in jsonl.read(path):
        key, model, value = record.get("key"), record.get("model"), record.get("value")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise BonError(f"{path}:{lineno}: 'key' must be a 64-digit lowercase hex cache key")
        if not isinstance(model, str) or not isinstance(value, dict):
            raise BonError(f"{path}:{lineno}: expected 'model' (a string) and 'value' (a JSON object), "
                           f"as `python -m bon.cache export` writes")
        created = record.get("created", time.time())
        if isinstance(created, bool) or not isinstance(created, (int, float)):
            raise BonError(f"{path}:{lineno}: 'created' must be a number (seconds since the epoch)")
        yield Entry(key, model, float(created), encode(value))


def export(source: str, out: Path) -> int:
    """Write every entry of `source` to `out` (JSONL, replaced whole by rename: never half a file)."""
    if out.is_dir() or not out.parent.is_dir():
        raise BonError(f"output file {out}: {'is a directory' if out.is_dir() else 'its directory does not exist'}")
    n = 0
    tmp = out.with_name(out.name + ".part")
    with open_named(source, "read", "cache") as cache, open(tmp, "w", encoding="utf-8") as f:
        for e in cache.entries():
            record = {"key": e.key, "model": e.model, "created": e.created, "value": json.loads(e.value)}
            f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    os.replace(tmp, out)
    return n


def import_(path: Path, target: str) -> dict[str, int]:
    """Add the entries of an exported file to `target` (the file is checked whole first: all or nothing)."""
    if not path.is_file():
        raise BonError(f"input file {path}: not found")
    for _ in _entries_of(path):
        pass
    with open_named(target, "readwrite", "target cache") as cache:
        return cache.add_many(_entries_of(path))


def merge(sources: list[str], target: str) -> dict[str, int]:
    """Add the entries of every source cache to `target`."""
    opened = [open_named(s, "read", "cache") for s in sources]  # all checked before anything is written
    totals = {"copied": 0, "present": 0, "conflicts": 0}
    with open_named(target, "readwrite", "--into") as into:
        for cache in opened:
            with cache:
                for k, v in into.add_many(cache.entries()).items():
                    totals[k] += v
    return totals


def _said(counts: dict[str, int]) -> str:
    return (f"{counts['copied']} copied, {counts['present']} already present, {counts['conflicts']} conflicts "
            f"(same key, another response: the target's kept)")


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bon.cache",
        description="Move cached LLM responses between caches. A cache is a directory (holding responses.sqlite) "
                    "or a url: sqlite:///DIR or redis://HOST:PORT/DB (password: redis://:PASSWORD@HOST... or "
                    "$BON_REDIS_PASSWORD; never printed).")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("export", help="write a cache's entries to a JSONL file")
    p.add_argument("cache")
    p.add_argument("file", type=Path)
    p = sub.add_parser("import", help="add a JSONL file's entries to a cache")
    p.add_argument("file", type=Path)
    p.add_argument("cache")
    p = sub.add_parser("merge", help="add the entries of several caches to one")
    p.add_argument("caches", nargs="+")
    p.add_argument("--into", required=True, help="the cache that receives the entries")
    args = parser.parse_args(argv)
    if args.action == "export":
        print(f"exported {export(args.cache, args.file)} entries to {args.file}")
    elif args.action == "import":
        print(f"imported {args.file}: {_said(import_(args.file, args.cache))}")
    else:
        print(f"merged {len(args.caches)} caches: {_said(merge(args.caches, args.into))}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
    finished()  # done: no interpreter teardown (bon.errors.finished)
