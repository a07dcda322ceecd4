"""`visit_page`: read a web page (HTML, plain text or PDF) as text, one page of text at a time.

What the model gets back: a header (final URL, title, "page i of n", how to get the next page) and
one page of text: HTML converted to Markdown (scripts and styles dropped, links made absolute so they
can be visited next), text as is, PDF text with "[PDF page k of m]" markers. Long documents are
split into pages of about `page_chars` characters at paragraph, line or sentence boundaries; fetched
documents stay in a small per-instance cache, so paging and searching never refetch.

`find` searches the whole document (case-insensitive, any run of whitespace matches any other) and
answers with every page holding the text, an excerpt around each match, and then the first page
with a match at or after `page`: one call both locates a fact and shows its context, and calling
again with a later `page` walks through the remaining matches.

Fetching is guarded (see `netguard`): only http(s) to public addresses, every redirect hop checked
again (redirects are followed by hand, up to `max_redirects`), the connection pinned to the checked
address, no environment proxies (`trust_env=False`; use the `proxy` option), a connect timeout and a
total time limit, and a size cap: the body is streamed, decoded a piece at a time (`decoding`: gzip and
deflate, stacked too) and reading stops after `max_bytes` of decoded bytes. A cut HTML or text page is
still useful, so it is shown with a note saying it was cut; a cut PDF cannot be parsed, so a PDF past
the cap is a `too_large` error.

One budget, `timeout`, covers the download and the conversion to text: HTML and PDF are converted in
a worker process (`bounded`) with `memory_mb` of address space, killed when the budget runs out (a
`timeout` error) or the memory does (`memory_limit`). Elements nested deeper than `MAX_DEPTH` are
flattened to their text first, so no document is too deep to convert.
"""
from __future__ import annotations

import asyncio
import codecs
import io
import re
import ssl
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bon.errors import BonError
from bon.tools import bounded, decoding, netguard
from bon.tools.base import BAD_ARGUMENTS, TIMEOUT, Tool, ToolContext, ToolResult, option
from bon.tools.loop_client import LoopClient

HTTP_ERROR = "http_error"
TOO_LARGE = "too_large"
TOO_MANY_REDIRECTS = "too_many_redirects"
UNSUPPORTED_CONTENT = "unsupported_content"
MEMORY_LIMIT = bounded.MEMORY_LIMIT
NETWORK_ERROR = netguard.NETWORK_ERROR

DEFAULT_USER_AGENT = "Mozilla/5.0 (compatible; bon-visit-page/0.1; research agent)"
MAX_FIND_HITS = 20  # matches listed in one reply
EXCERPT_CHARS = 80  # context on each side of a match
_PINNED_TRIES = 3  # addresses tried in turn when the first does not accept a connection
MIN_MEMORY_MB = 256  # a worker starts at about 200 MB of address space (the parsers are loaded)
MAX_DEPTH = 100  # elements nested deeper are flattened to their text (markdownify recurses per level)
_HTML_TYPES = {"text/html", "application/xhtml+xml"}
_TEXT_TYPES = {"application/json", "application/xml", "application/javascript", "application/x-javascript",
               "application/ld+json", "application/rss+xml", "application/atom+xml", "application/x-yaml",
               "application/yaml", "application/csv"}
_SNIFF_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/x-download",
                "application/download", "application/force-download"}
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed", "head")


class FetchError(Exception):
    """The fetch failed in a way the model should hear about; `kind` is the tool result's error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple:  # raised in a worker process, re-raised here
        return type(self), (self.kind, str(self))


@dataclass(frozen=True)
class Document:
    """A fetched page as text, split into pages; `starts[i]` is page i's offset in `text`."""

    url: str  # as requested
    final_url: str  # after redirects
    title: str
    kind: str  # "HTML", "text" or "PDF"
    text: str
    starts: tuple[int, ...]
    notes: tuple[str, ...] = ()

    @property
    def n_pages(self) -> int:
        return len(self.starts)

    def page(self, i: int) -> str:
        """Page `i` (1-based) without the blank lines at its edges."""
        end = self.starts[i] if i < len(self.starts) else len(self.text)
        return self.text[self.starts[i - 1]:end].strip("\n")

    def page_of(self, offset: int) -> int:
        """The 1-based page holding character `offset`."""
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1


# --------------------------------------------------------------------------- text shaping


def _break_at(window: str) -> int:
    """Where to end a page within `window`: after the last paragraph, line, sentence or word break
    in its second half, else at its end."""
    half = len(window) // 2
    for sep in ("\n\n", "\n", ". ", " "):
        at = window.rfind(sep, half)
        if at != -1:
            return at + len(sep)
    return len(window)


def page_starts(text: str, page_chars: int) -> tuple[int, ...]:
    """Offsets where each page of at most `page_chars` characters begins (always at least one page)."""
    starts = [0]
    pos = 0
    while len(text) - pos > page_chars:
        pos += _break_at(text[pos:pos + page_chars])
        starts.append(pos)
    return tuple(starts)


def _tidy(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def flatten_deep(soup: Any, max_depth: int = MAX_DEPTH) -> int:
    """Replace what lies inside elements at depth `max_depth` by its plain text; how many were flattened.

    Walks with an explicit stack, so depth itself costs no recursion here.
    """
    from bs4 import NavigableString, Tag

    flattened = 0
    stack = [(soup, 0)]
    while stack:
        tag, depth = stack.pop()
        children = [c for c in tag.children if isinstance(c, Tag)]
        if depth >= max_depth and children:
            text = tag.get_text(" ")
            tag.clear()
            tag.append(NavigableString(text))
            flattened += 1
            continue
        stack.extend((child, depth + 1) for child in children)
    return flattened


def html_to_markdown(body: bytes | str, charset: str | None, base_url: str | None) -> tuple[str, str, list[str]]:
    """(title, Markdown, notes) of an HTML document; links and images made absolute (against `base_url`,
    if given), data: URIs dropped, elements nested over `MAX_DEPTH` deep flattened to text."""
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    if isinstance(body, str):
        soup = BeautifulSoup(body, "html.parser")
    else:
        soup = BeautifulSoup(body, "html.parser", from_encoding=charset)
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    notes = []
    if flatten_deep(soup):
        notes.append(f"elements nested more than {MAX_DEPTH} deep are shown as plain text")
    base = httpx.URL(base_url) if base_url else None
    for name, attr in (("a", "href"), ("img", "src")):
        for el in soup.find_all(name):
            raw = el.get(attr)  # href and src are single-valued: a string or absent
            value = raw.strip() if isinstance(raw, str) else ""
            if not value:
                continue
            if value.lower().startswith(("javascript:", "data:", "vbscript:")):
                del el[attr]
                continue
            if base is not None:
                try:
                    el[attr] = str(base.join(value))
                except (httpx.InvalidURL, ValueError):
                    del el[attr]
    converter = MarkdownConverter(heading_style="ATX", bullets="-", escape_underscores=False,
                                  escape_asterisks=False, table_infer_header=True)
    return title, _tidy(converter.convert_soup(soup)), notes


def pdf_to_text(body: bytes) -> tuple[str, str, int, int]:
    """(title, text, PDF pages, PDF pages with text); each page's text follows a "[PDF page k of m]" marker."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(body))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FetchError(UNSUPPORTED_CONTENT, "the PDF is password-protected")
        pages = list(reader.pages)
        meta = reader.metadata
        title = str(meta.title or "") if meta is not None else ""
    except FetchError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise FetchError(UNSUPPORTED_CONTENT, f"the PDF could not be read ({type(exc).__name__}: {exc})") from None
    parts, with_text = [], 0
    for k, page in enumerate(pages, 1):
        try:
            text = _tidy(page.extract_text() or "")
            with_text += bool(text)
        except Exception as exc:  # noqa: BLE001 - one bad page must not lose the others
            text = f"(the text of this page could not be extracted: {type(exc).__name__})"
        parts.append(f"[PDF page {k} of {len(pages)}]\n{text}")
    return title.strip(), "\n\n".join(parts), len(pages), with_text


def _decode(body: bytes, charset: str | None) -> str:
    if charset:
        try:
            return body.decode(codecs.lookup(charset).name, errors="replace")
        except LookupError:
            pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def _kind(content_type: str, head: bytes) -> str:
    """"pdf", "html", "text" or "" (unsupported) from the media type and the first bytes of the body."""
    if head.lstrip()[:5] == b"%PDF-" or content_type in ("application/pdf", "application/x-pdf"):
        return "pdf"
    if content_type in _HTML_TYPES:
        return "html"
    if (content_type.startswith("text/") or content_type in _TEXT_TYPES
            or content_type.endswith(("+xml", "+json"))):
        return "text"
    if content_type in _SNIFF_TYPES:
        start = head.lstrip()[:64].lower()
        if start.startswith((b"<!doctype html", b"<html")):
            return "html"
        if not content_type and b"\x00" not in head:
            try:
                head.decode("utf-8")
                return "text"
            except UnicodeDecodeError as exc:
                if exc.start >= len(head) - 3:  # only a character cut at the end of the sample
                    return "text"
    return ""


def convert(kind: str, body: bytes, charset: str | None, url: str) -> tuple[str, str, str, list[str]]:
    """(title, text, label, notes) of an HTML or PDF body; run in a worker process (see `bounded`)."""
    if kind == "pdf":
        title, text, n, with_text = pdf_to_text(body)
        notes = [] if with_text else [f"no text could be extracted from this {n}-page PDF (it may be scanned images)"]
        return title, text, f"PDF, {n} PDF page(s)", notes
    title, text, notes = html_to_markdown(body, charset, url)
    return title, text, "HTML as Markdown", notes


# --------------------------------------------------------------------------- replies


def _excerpt(text: str, start: int, end: int) -> str:
    a, b = max(0, start - EXCERPT_CHARS), min(len(text), end + EXCERPT_CHARS)
    snippet = re.sub(r"\s+", " ", text[a:b]).strip()
    return ("…" if a > 0 else "") + snippet + ("…" if b < len(text) else "")


def _header(doc: Document) -> list[str]:
    lines = [f"URL: {doc.final_url}" + (f" (redirected from {doc.url})" if doc.final_url != doc.url else "")]
    if doc.title:
        lines.append(f"Title: {doc.title}")
    lines.extend(f"Note: {note}" for note in doc.notes)
    return lines


def _footer(doc: Document, page: int) -> str:
    if doc.n_pages == 1:
        return "[Page 1 of 1: this is the whole document.]"
    if page == doc.n_pages:
        return f"[Page {page} of {doc.n_pages}: end of document.]"
    return (f"[Page {page} of {doc.n_pages}. For more, call visit_page with the same url and page={page + 1}; "
            f"use find to jump to a phrase.]")


def render_page(doc: Document, page: int, preface: Iterable[str] = ()) -> str:
    body = doc.page(page) or "(this page has no text)"
    lines = _header(doc)
    lines.append(f"Page {page} of {doc.n_pages} ({doc.kind}, {len(doc.text):,} characters in all).")
    lines.extend(preface)
    lines += ["", body, "", _footer(doc, page)]
    return "\n".join(lines)


def find_in(doc: Document, phrase: str, page: int) -> str:
    """The reply to a `find`: where `phrase` occurs, then the first page holding it at or after `page`."""
    pattern = re.compile(r"\s+".join(re.escape(w) for w in phrase.split()), re.IGNORECASE)
    matches = list(pattern.finditer(doc.text))
    if not matches:
        return "\n".join(_header(doc) + [
            f"No match for {phrase!r} in this document ({doc.n_pages} page(s)). Matching ignores case and "
            "spacing; try a shorter phrase or other words, or read the pages in turn."])
    pages = sorted({doc.page_of(m.start()) for m in matches})
    shown = matches[:MAX_FIND_HITS]
    count = f"{len(matches)} match(es)" + (f", the first {len(shown)} listed" if len(matches) > len(shown) else "")
    preface = [f"Find {phrase!r}: {count}, on page(s) {', '.join(map(str, pages))}:"]
    preface += [f"- page {doc.page_of(m.start())}: {_excerpt(doc.text, m.start(), m.end())}" for m in shown]
    later = [p for p in pages if p >= page]
    target = later[0] if later else pages[0]
    if later:
        preface.append(f"Showing page {target}, the first page with a match at or after page {page}.")
    else:
        preface.append(f"No match at or after page {page}; showing page {target}, the first page with a match.")
    return render_page(doc, target, preface)


# --------------------------------------------------------------------------- the tool


class VisitPage(Tool):
    name = "visit_page"
    description = ("Read a web page or PDF at an http(s) URL as text. Long documents come in pages: the reply "
                   "says 'page i of n'; ask for another with `page`. `find` locates a phrase: it lists the "
                   "pages holding it with an excerpt around each match and shows the first such page.")
    parameters = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {
            "url": {"type": "string", "description": "a full http:// or https:// URL"},
            "page": {"type": "integer", "minimum": 1, "description": "which page of the document to show (default 1)"},
            "find": {"type": "string", "description": "a phrase to locate (case-insensitive); the reply lists "
                                                      "its matches and shows the first page at or after `page` "
                                                      "that holds one"},
        },
    }

    def __init__(self, *, allow_private: bool = False, allow_networks: Iterable[str] = (), page_chars: int = 8000,
                 max_bytes: int = 10_000_000, max_redirects: int = 5, timeout: float = 30.0,
                 connect_timeout: float = 10.0, memory_mb: int = 1024, cache_size: int = 16,
                 proxy: str | None = None, ca_file: str | None = None, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self.allow_private = bool(allow_private)
        if isinstance(allow_networks, str):
            allow_networks = [allow_networks]
        try:
            self.allow_networks = netguard.parse_networks(allow_networks, "tools.visit_page.allow_networks")
        except (ValueError, TypeError) as exc:
            raise BonError(str(exc)) from None
        self.page_chars = option("visit_page", "page_chars", page_chars, integer=True, minimum=100)
        self.max_bytes = option("visit_page", "max_bytes", max_bytes, integer=True, strict=True)
        self.max_redirects = option("visit_page", "max_redirects", max_redirects, integer=True)
        self.timeout = float(option("visit_page", "timeout", timeout, strict=True))
        self.connect_timeout = float(option("visit_page", "connect_timeout", connect_timeout, strict=True))
        self.memory_mb = option("visit_page", "memory_mb", memory_mb, integer=True, minimum=MIN_MEMORY_MB)
        self.cache_size = option("visit_page", "cache_size", cache_size, integer=True, minimum=1)
        if proxy is not None and not (isinstance(proxy, str) and re.match(r"^(https?|socks5h?)://", proxy)):
            raise BonError(f"tools.visit_page.proxy must be an http(s):// or socks5:// URL, got {proxy!r}")
        self.proxy = proxy
        self._verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                self._verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise BonError(f"tools.visit_page.ca_file: cannot load CA certificates from {ca_file!r} "
                               f"({exc})") from None
        self.user_agent = str(user_agent)
        self._cache: OrderedDict[str, Document] = OrderedDict()
        self._client = LoopClient(self._new_client)

    # -- client
    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            trust_env=False, proxy=self.proxy, follow_redirects=False, verify=self._verify,
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            # no pooled connections: a pinned connection is to an IP, and must not serve another host name
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": self.user_agent, "Accept-Language": "en",
                     "Accept-Encoding": ", ".join(decoding.ACCEPTED),
                     "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.9,*/*;q=0.5"})

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the call
    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        page = arguments.get("page", 1)
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            return ToolResult.error(BAD_ARGUMENTS, f"page must be an integer >= 1, got {page!r}")
        phrase = arguments.get("find")
        if phrase is not None and not str(phrase).strip():
            return ToolResult.error(BAD_ARGUMENTS, "find is empty; give the phrase to locate, or leave find out")
        try:
            doc = await self.document(str(arguments["url"]))
        except FetchError as exc:
            return ToolResult.error(exc.kind, str(exc))
        except netguard.Refused as exc:
            return ToolResult.error(exc.kind, str(exc))
        if phrase is not None:
            return ToolResult(find_in(doc, str(phrase), min(page, doc.n_pages)))
        if page > doc.n_pages:
            return ToolResult.error(BAD_ARGUMENTS, f"page {page} does not exist: {doc.final_url} has "
                                                   f"{doc.n_pages} page(s)")
        return ToolResult(render_page(doc, page))

    async def document(self, url: str) -> Document:
        """The document at `url`, from the cache or fetched; raises `FetchError` / `netguard.Refused`."""
        key = str(netguard.parse_url(url).copy_with(fragment=None))  # "#section" names the same document
        doc = self._cache.get(key)
        if doc is not None:
            self._cache.move_to_end(key)
            return doc
        doc = await self._load(key)
        self._cache[key] = doc
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return doc

    async def _load(self, url: str) -> Document:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout  # one budget for the download and the conversion
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                final_url, content_type, charset, kind, body, cut = await self._fetch(url)
        except TimeoutError:
            if not scope.expired():
                raise
            raise FetchError(TIMEOUT, f"{url} did not finish loading within {self.timeout:g} s") from None
        except httpx.TimeoutException as exc:
            raise FetchError(TIMEOUT, f"{url} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise FetchError(NETWORK_ERROR, f"could not fetch {url} ({type(exc).__name__}: {exc})") from None
        notes = []
        if cut:
            notes.append(f"the page is larger than {self.max_bytes:,} bytes; only its first {self.max_bytes:,} "
                         "bytes were read, so its end is missing")
        if kind == "text":
            title, text, label = "", _tidy(_decode(body, charset)), f"text, {content_type or 'no content type'}"
        else:
            try:
                title, text, label, more = await bounded.run(convert, kind, body, charset, final_url,
                                                             timeout=deadline - loop.time(),
                                                             memory_mb=self.memory_mb)
            except bounded.Overrun as exc:
                budget = (f"tools.visit_page.timeout, {self.timeout:g} s for download and conversion"
                          if exc.kind == TIMEOUT else f"tools.visit_page.memory_mb, {self.memory_mb:,} MB")
                raise FetchError(exc.kind, f"{url} was downloaded, but converting it to text was stopped: it {exc} "
                                           f"({budget})") from None
            except bounded.WorkerFailed as exc:
                raise FetchError(UNSUPPORTED_CONTENT, f"{url} could not be converted to text ({exc})") from None
            notes += more
        return Document(url=url, final_url=final_url, title=title, kind=label, text=text,
                        starts=page_starts(text, self.page_chars), notes=tuple(notes))

    async def _fetch(self, url: str) -> tuple[str, str, str | None, str, bytes, bool]:
        """Follow redirects by hand, checking each hop; return (final url, media type, charset, kind, body, cut)."""
        current: str | httpx.URL = url
        for _hop in range(self.max_redirects + 1):
            target = await netguard.check_url(current, allow_private=self.allow_private,
                                              allow_networks=self.allow_networks)
            async with self._open(target) as response:
                location = response.headers.get("location")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    try:
                        current = target.url.join(location.strip())
                    except (httpx.InvalidURL, ValueError):
                        raise FetchError(HTTP_ERROR, f"{target.url} redirected to an invalid URL "
                                                     f"{location[:200]!r}") from None
                    continue
                if response.status_code >= 300:
                    reason = response.reason_phrase or ""
                    raise FetchError(HTTP_ERROR, f"HTTP {response.status_code} {reason}".rstrip()
                                     + f" for {target.url}")
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return (str(target.url), content_type, response.charset_encoding,
                        *await self._read(response, content_type, str(target.url)))
        raise FetchError(TOO_MANY_REDIRECTS, f"{url} redirected more than {self.max_redirects} times "
                                             f"(last to {current}); give the final URL directly")

    @asynccontextmanager
    async def _open(self, target: netguard.Target) -> AsyncIterator[httpx.Response]:
        """A streamed GET of `target`, connected to an address netguard checked (unless through a proxy)."""
        client = self._http()
        if self.proxy or target.literal:
            response = await client.send(client.build_request("GET", target.url), stream=True)
        else:
            host_header = target.url.netloc.decode("ascii")
            tries = target.addresses[:_PINNED_TRIES]
            for i, address in enumerate(tries):
                request = client.build_request("GET", target.url.copy_with(host=address),
                                               headers={"Host": host_header},
                                               extensions={"sni_hostname": target.host})
                try:
                    response = await client.send(request, stream=True)
                    break
                except httpx.ConnectError:
                    if i == len(tries) - 1:
                        raise
        try:
            yield response
        finally:
            await response.aclose()

    async def _read(self, response: httpx.Response, content_type: str, url: str) -> tuple[str, bytes, bool]:
        """(kind, body, cut): the body read up to `max_bytes`; unsupported types are refused unread."""
        declared = response.headers.get("content-length", "")
        length = int(declared) if declared.isdigit() else None
        early = _kind(content_type, b"") if content_type not in _SNIFF_TYPES else None
        if early == "":
            raise FetchError(UNSUPPORTED_CONTENT, f"{url} is {content_type}, which visit_page cannot read "
                                                  "(it reads HTML, text and PDF)")
        if early == "pdf" and length is not None and length > self.max_bytes:
            raise FetchError(TOO_LARGE, f"{url} is a {length:,}-byte PDF, larger than the {self.max_bytes:,}-byte "
                                        "limit (tools.visit_page.max_bytes)")
        encoding = ",".join(response.headers.get_list("content-encoding"))
        try:
            decoder = decoding.Decoder(encoding, self.max_bytes)
        except decoding.UnsupportedCoding as exc:
            raise FetchError(UNSUPPORTED_CONTENT, f"{url} was sent encoded as {encoding!r}: {exc}") from None
        chunks: list[bytes] = []
        try:
            async for raw in response.aiter_raw():  # decoded here, piece by piece, never past max_bytes
                chunks += decoder.feed(raw)
                if decoder.cut:
                    break
        except zlib.error as exc:
            raise FetchError(NETWORK_ERROR, f"{url} sent a damaged {encoding} body ({exc})") from None
        cut = decoder.cut
        body = b"".join(chunks)
        kind = _kind(content_type, body[:1024])
        if not kind:
            raise FetchError(UNSUPPORTED_CONTENT, f"{url} is {content_type or 'of no declared type'} and does not "
                                                  "look like HTML, text or PDF, which is what visit_page reads")
        if kind == "pdf" and cut:
            raise FetchError(TOO_LARGE, f"{url} is a PDF larger than the {self.max_bytes:,}-byte limit "
                                        "(tools.visit_page.max_bytes); a cut PDF cannot be read")
        return kind, body, cut
