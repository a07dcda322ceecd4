"""A persistent cache of AgentProcessBench label files, parsed and validated, as flat numpy arrays.

Parsing the 20 MB of recorded judges (long `explanations` text on every line) and checking every label
is most of the work of `python -m bon.prm_eval`; the labels themselves are a few hundred KB. So each
file's validated labels are kept in the user cache directory ($BON_CACHE_DIR, else the platform's user
cache for bon, as bon.datasets.fetch and the LLM cache use), under agentprocessbench-labels/.

An entry is used only when the source files' path, size, mtime_ns, device and inode and the FORMAT
below all match what it was written from, and its payload checksum and array shapes check out; anything
else (a changed, missing or corrupt entry, an unreadable cache directory) is a miss: the file is parsed
and checked as if there were no cache (so bad input still gets its error naming file:line) and the entry
is rewritten atomically. Failing to write is silent: the cache only ever saves time.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

import numpy as np
import orjson

from bon.metrics import LABEL_ORDER, MISSING
from bon.types import Judgement

FORMAT = 1  # bump when the columns' meaning or the checks that produce them change
ENV_CACHE = "BON_CACHE_DIR"
MIN_BYTES = 32 * 1024  # smaller files parse faster than an entry loads (and test releases leave no entries)
_FAR = 2**62  # message indices beyond this are stored as this (no human step is that far; int64 holds it)
_CODE = {label: code for code, label in enumerate(LABEL_ORDER)} | {None: MISSING}


@dataclass(frozen=True)
class LabelColumns:
    """One label file's judgements, in file order: record i's labels are keys/codes[offsets[i]:offsets[i+1]]."""

    record_ids: list[str]
    offsets: np.ndarray  # int64, one more than records
    keys: np.ndarray  # int64 message index of each label
    codes: np.ndarray  # int8 position of each label in bon.metrics.LABEL_ORDER; MISSING for a null label
    finals: np.ndarray  # int8 final label, 0 when none was given
    failed: np.ndarray  # bool: the call failed (its labels are kept here but never scored)
    reasons: list[str]  # why, one per failed record

    @classmethod
    def from_judgements(cls, items: Iterable[tuple[str, Judgement]]) -> LabelColumns:
        """From (record_id, judgement) pairs as the label readers return them."""
        pairs = list(items)
        judged = [j for _, j in pairs]
        return cls.from_labels([r for r, _ in pairs], [j.step_labels for j in judged], [j.final_label for j in judged],
                               [j.reason if j.failed else None for j in judged])

    @classmethod
    def from_labels(cls, record_ids: list[str], labels: Sequence[Mapping[int, int | None]],
                    finals: Sequence[int | None], failures: Sequence[str | None]) -> LabelColumns:
        """From each record's id, step labels, final label (None or 0: none) and why its call failed (None: it
        did not)."""
        keys = list(chain.from_iterable(labels))
        try:
            key_array = np.array(keys, dtype=np.int64)
        except OverflowError:  # an index past int64: no human step is there, so any far value does the same
            key_array = np.array([min(k, _FAR) for k in keys], dtype=np.int64)
        codes = np.fromiter(map(_CODE.__getitem__, chain.from_iterable(m.values() for m in labels)), np.int8,
                            key_array.size)
        offsets = np.zeros(len(record_ids) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, labels), np.int64, len(labels)), out=offsets[1:])
        failed = np.array([f is not None for f in failures], dtype=bool).reshape(-1)
        return cls(list(record_ids), offsets, np.minimum(key_array, _FAR), codes,
                   np.array([f or 0 for f in finals], dtype=np.int8).reshape(-1), failed,
                   [f for f in failures if f is not None])

    def for_records(self, record_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """These labels lined up with `record_ids` (e.g. a StepTable's trajectories), for StepTable.score_labels:
        (failed per record, then owner, message index and label code of each label of a record not failed).
        A record with no entry here counts as a failed judgement, as a judge that never produced one."""
        row_of = dict(zip(self.record_ids, range(len(self.record_ids))))
        rows = np.fromiter(map(row_of.get, record_ids, repeat(-1)), np.int64, len(record_ids))
        found = rows >= 0
        failed = ~found
        failed[found] = self.failed[rows[found]]
        kept = np.flatnonzero(~failed)
        starts, ends = self.offsets[rows[kept]], self.offsets[rows[kept] + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        # positions of each kept record's labels: its start plus 0, 1, ... (one gather for all records)
        flat = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        return failed, np.repeat(kept, lengths), self.keys[flat], self.codes[flat]

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"offsets": self.offsets, "keys": self.keys, "codes": self.codes, "finals": self.finals,
                "failed": self.failed}

    def consistent(self) -> bool:
        """Shapes as from_judgements makes them (with the checksum, what a cache entry must pass)."""
        n, o = len(self.record_ids), self.offsets
        return (type(self.record_ids) is list and type(self.reasons) is list and o.shape == (n + 1,)
                and int(o[0]) == 0 and int(o[-1]) == self.keys.size and self.codes.shape == self.keys.shape
                and self.finals.shape == self.failed.shape == (n,))


_DTYPES = {"offsets": "<i8", "keys": "<i8", "codes": "i1", "finals": "i1", "failed": "?"}


def cache_dir() -> Path:
    """<cache root>/agentprocessbench-labels; the root is $BON_CACHE_DIR or the platform's user cache for bon."""
    root = os.environ.get(ENV_CACHE)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("bon")
    return Path(root).expanduser() / "agentprocessbench-labels"


def _identity(sources: Sequence[Path]) -> list[list[object]]:
    """What an entry must have been written from: each source's path, and the size, mtime_ns, device and inode
    of the file it leads to (through any symlink: the device and inode say which file that is)."""
    out: list[list[object]] = []
    for source in sources:
        path = os.path.abspath(source)
        try:
            st = os.stat(path)
        except OSError:
            out.append([path, None])
        else:
            out.append([path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino])
    return out


def _entry_path(identity: list[list[object]]) -> Path:
    import hashlib

    names = "\0".join(str(source[0]) for source in identity)
    return cache_dir() / f"{hashlib.sha256(names.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.bin"


def encode(columns: LabelColumns, identity: object) -> bytes:
    """An entry: the CRC-32 of the rest (8 hex digits and a newline), a line of JSON (format, identity, record
    ids, failure reasons, array sizes), then the arrays' bytes."""
    arrays = columns._arrays()
    header = {"format": FORMAT, "identity": identity, "record_ids": columns.record_ids, "reasons": columns.reasons,
              "sizes": {name: int(a.size) for name, a in arrays.items()}}
    body = orjson.dumps(header) + b"\n" + b"".join(np.ascontiguousarray(a, dtype=_DTYPES[name]).tobytes()
                                                   for name, a in arrays.items())
    return b"%08x\n" % zlib.crc32(body) + body


def decode(data: bytes, identity: object) -> LabelColumns | None:
    """The columns of an entry written from `identity` in this FORMAT; None for anything else."""
    try:
        body = memoryview(data)[9:]
        if data[8:9] != b"\n" or int(data[:8], 16) != zlib.crc32(body):
            return None
        end = data.index(b"\n", 9)
        header = orjson.loads(body[:end - 9])
        if header["format"] != FORMAT or header["identity"] != identity:
            return None
        arrays, offset = {}, end + 1
        for name, dtype in _DTYPES.items():
            count = header["sizes"][name]
            if type(count) is not int or count < 0:
                return None
            arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += arrays[name].nbytes
        if offset != len(data):
            return None
        columns = LabelColumns(header["record_ids"], reasons=header["reasons"],
                               **{k: v.astype(v.dtype.newbyteorder("="), copy=False) for k, v in arrays.items()})
        return columns if columns.consistent() else None
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        return None


def cached(sources: Sequence[Path], build: Callable[[], LabelColumns]) -> LabelColumns:
    """The columns of `sources` from the cache, else `build()` (which parses and checks them), then stored.

    The first source names the entry; all of them must be unchanged for it to be used. Small files skip
    the cache. `build` raising (bad input) stores nothing.
    """
    identity = _identity(sources)
    size = identity[0][1]
    if not isinstance(size, int) or size < MIN_BYTES:
        return build()
    entry = _entry_path(identity)
    try:
        found = decode(entry.read_bytes(), identity)
    except OSError:
        found = None
    if found is not None:
        return found
    columns = build()
    try:
        data = encode(columns, identity)
    except (TypeError, ValueError):  # text JSON cannot hold (e.g. a lone surrogate read by the fallback parser)
        return columns
    _store(entry, data)
    return columns


def _store(entry: Path, data: bytes) -> None:
    """Write to a temporary file beside the entry, then rename over it: readers see the old or the new, whole."""
    import threading

    temp = entry.with_name(f"{entry.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, entry)
    except OSError:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
