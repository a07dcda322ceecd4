"""JSONL reading with errors that name the file and line."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bon.errors import BonError


def read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line; a bad line is a BonError naming it.

    Lines are decoded one at a time, so a byte that is not UTF-8 is reported at its line (a text-mode
    reader decodes in blocks and could only say that some block failed).
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise BonError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        lineno = 0
        for block in handle:
            for raw in block.splitlines():  # \n, \r\n and a lone \r end a line, as in text mode
                lineno += 1
                line = _decode(raw, path, lineno)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BonError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(record, dict):
                    raise BonError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BonError(f"{path}:{lineno}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                       f"JSONL files must be UTF-8 text") from None
