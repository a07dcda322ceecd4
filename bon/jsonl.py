"""JSONL reading with errors that name the file and line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from bon.errors import BonError


def read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line; a bad line is a BonError naming it."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise BonError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BonError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise BonError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record
