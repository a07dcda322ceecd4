"""Undo a response's content codings (gzip, deflate, stacked) a piece at a time, stopping at a size cap.

A size cap applied after decoding is no cap: 1.8 KB of `Content-Encoding: gzip, gzip` expands to
gigabytes. Here every stage hands on at most `PIECE` bytes at a time and nothing is decoded beyond
what the cap still wants, so memory stays at a few pieces per stage whatever the ratio. Each stage's
total output is capped too (compressed data is rarely larger than what it decodes to), which bounds
the work spent in a middle stage whose output decodes to nothing.

Only codings that can be decoded this way are accepted (gzip, x-gzip, deflate, identity; at most
`MAX_STAGES` of them): visit_page asks for just these, and refuses a body sent in another.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator

PIECE = 64 << 10
MAX_STAGES = 3
SUPPORTED = ("gzip", "x-gzip", "deflate", "identity")
ACCEPTED = ("gzip", "deflate")  # what to ask for in Accept-Encoding


class UnsupportedCoding(ValueError):
    """The response uses a content coding that cannot be decoded piecewise here."""


class _Inflater:
    """One gzip or deflate stage; yields its output in pieces of at most PIECE bytes."""

    def __init__(self, coding: str, cap: int) -> None:
        self.gzip = coding in ("gzip", "x-gzip")
        self._wbits = 16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS
        self._z = zlib.decompressobj(self._wbits)
        self._started = False
        self.cap = cap  # total output this stage may produce
        self.size = 0
        self.cut = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        while True:
            room = self.cap - self.size
            if room <= 0:  # (a max_length of 0 would mean "no limit" to zlib)
                self.cut = True
                return
            asked = min(PIECE, room)
            try:
                out = self._z.decompress(data, asked)
            except zlib.error:
                if self.gzip or self._started:
                    raise
                # "deflate" sent as raw deflate, without the zlib header (some servers do)
                self._z, self._started = zlib.decompressobj(-zlib.MAX_WBITS), True
                continue
            self._started = True
            if self._z.eof:
                # gzip allows several members one after another; anything after a deflate stream is ignored
                data = self._z.unused_data if self.gzip else b""
                if data:
                    self._z = zlib.decompressobj(self._wbits)
            else:
                data = self._z.unconsumed_tail
            self.size += len(out)
            if out:
                yield out
            if not data and len(out) < asked:
                return  # all input used and no output held back


def codings(header: str) -> list[str]:
    """The codings named in a Content-Encoding header, in the order they were applied; raises UnsupportedCoding."""
    named = [c.strip().lower() for c in header.split(",") if c.strip()]
    unknown = [c for c in named if c not in SUPPORTED]
    if unknown:
        raise UnsupportedCoding(f"content coding {', '.join(unknown)} is not supported (supported: gzip, deflate)")
    named = [c for c in named if c != "identity"]
    if len(named) > MAX_STAGES:
        raise UnsupportedCoding(f"{len(named)} stacked content codings ({header}); at most {MAX_STAGES} are decoded")
    return named


class Decoder:
    """Feed raw body chunks; get decoded bytes up to `limit` in all. `cut` is set when output was left undecoded."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        stage_cap = 2 * limit + PIECE
        self._stages = [_Inflater(c, stage_cap) for c in reversed(codings(content_encoding))]
        self.limit = limit
        self.size = 0
        self.raw = 0
        self.cut = False

    def _through(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self._stages):
            yield data
            return
        stage = self._stages[i]
        for piece in stage.pieces(data):
            yield from self._through(i + 1, piece)
        if stage.cut:
            self.cut = True

    def feed(self, chunk: bytes) -> list[bytes]:
        """The decoded output of `chunk`, within what is left of `limit`; nothing once `cut` is set."""
        out: list[bytes] = []
        if self.cut:
            return out
        self.raw += len(chunk)
        for piece in self._through(0, chunk):
            room = self.limit - self.size
            if len(piece) > room:
                piece, self.cut = piece[:room], True
            out.append(piece)
            self.size += len(piece)
            if self.cut:
                break
        if self.raw > self.limit and self._stages:  # a stream that expands to nothing is still a long read
            self.cut = True
        return out
