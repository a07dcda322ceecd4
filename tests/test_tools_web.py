"""visit_page and netguard over real HTTP to a server on 127.0.0.1.

An audit hook watches every socket connect and name lookup these tests make: anything but loopback
(or a lookup of a non-local name) is refused before it happens and fails the test, so the
redirects to 10.0.0.1 and 169.254.169.254 below can never leave the machine even if the guard broke.
"""
from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import os
import re
import resource
import socket
import ssl
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bon.errors import BonError
from bon.tools import bounded, decoding, netguard
from bon.tools.base import ToolContext, run_tool
from bon.tools.web import VisitPage, page_starts
from bon.types import Task

CTX = ToolContext(task=Task("t1", "q"))

# --------------------------------------------------------------------------- loopback-only guard

_LOOPBACK = {"127.0.0.1", "::1"}
_LOCAL_NAMES = {"localhost", "2130706433"}
_guard: dict[str, Any] = {"on": False, "violations": [], "loopback": _LOOPBACK}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _audit(event: str, args: tuple) -> None:
    if not _guard["on"]:
        return
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in _guard["loopback"]:
            _guard["violations"].append(address)
            raise ConnectionRefusedError(f"test guard: connect to {address} refused")
    elif event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        if host not in _LOCAL_NAMES and not _is_ip(host):  # looking up a literal sends nothing
            _guard["violations"].append(host)
            raise socket.gaierror(f"test guard: lookup of {host} refused")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def loopback_only():
    _guard.update(on=True, violations=[], loopback=_LOOPBACK)
    yield
    _guard["on"] = False
    assert _guard["violations"] == [], f"traffic to non-loopback addresses was attempted: {_guard['violations']}"


def test_the_guard_itself_refuses_a_non_allowed_address():
    _guard["loopback"] = {"127.0.0.1"}  # 127.0.0.2 stands in for "elsewhere", and is still loopback
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="test guard"):
        sock.connect(("127.0.0.2", 9))
    assert _guard["violations"] == [("127.0.0.2", 9)]
    _guard["violations"].clear()


# --------------------------------------------------------------------------- a scripted web server


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str | None = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


@dataclass
class WebServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def start(self, tls: ssl.SSLContext | None = None) -> WebServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                route = owner.routes.get(self.path) or Route(b"<h1>no such page</h1>", status=404)
                if route.delay and owner.stop_event.wait(route.delay):
                    return
                try:
                    self.send_response(route.status)
                    if route.content_type is not None:
                        self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(route.body)))
                    for name, value in route.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(r["path"] == path for r in self.requests)


@pytest.fixture
def web():
    server = WebServer().start()
    yield server
    server.stop()


def visit(tool: VisitPage, url: str, **args: Any):
    async def go():
        try:
            return await tool.call({"url": url, **args}, CTX)
        finally:
            await tool.aclose()
    return asyncio.run(go())


def visits(tool: VisitPage, *calls: dict[str, Any]):
    """Several calls on one tool in one event loop (as an agent run makes them)."""
    async def go():
        try:
            return [await tool.call(c, CTX) for c in calls]
        finally:
            await tool.aclose()
    return asyncio.run(go())


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (offsets computed, not hard-coded)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            ("<< /Type /Pages /Kids [{}] /Count {} >>".format(
                " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))), len(pages))).encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append((f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                     f"/Contents {5 + 2 * i} 0 R >>").encode())
        objs.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (k, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


# --------------------------------------------------------------------------- content

ARTICLE = b"""<!doctype html><html><head><title>Mercedes Sosa - Discography</title>
<style>body { color: red }</style><script>var secret_js = "do not show";</script></head>
<body><h1>Studio albums</h1><p>Between <b>2000</b> and 2009 she released <i>Cantora</i>.</p>
<a href="/wiki/Cantora">Cantora article</a> <a href="javascript:alert(1)">bad link</a>
<noscript>enable js</noscript><ul><li>Misa Criolla</li><li>Coraz\xc3\xb3n Libre</li></ul>
<table><tr><th>Year</th><th>Album</th></tr><tr><td>2009</td><td>Cantora 1</td></tr></table>
</body></html>"""


def test_html_becomes_markdown_without_scripts_and_with_absolute_links(web):
    web.routes["/wiki/Sosa"] = Route(ARTICLE)
    result = visit(VisitPage(allow_private=True), web.url("/wiki/Sosa"))
    assert result.error_kind is None, result.content
    text = result.content
    assert "Title: Mercedes Sosa - Discography" in text
    assert "# Studio albums" in text
    assert "**2000**" in text and "*Cantora*" in text
    assert f"[Cantora article]({web.url('/wiki/Cantora')})" in text  # relative link made absolute
    assert "javascript:" not in text and "bad link" in text
    assert "secret_js" not in text and "color: red" not in text and "enable js" not in text
    assert "- Misa Criolla" in text and "Corazón Libre" in text
    assert "| 2009 | Cantora 1 |" in text
    assert "Page 1 of 1" in text and "whole document" in text


def _paragraphs(n: int) -> list[str]:
    return [f"Paragraph {i:02d} " + "word " * 30 for i in range(n)]


def test_long_text_is_split_into_pages_fetched_once(web):
    paras = _paragraphs(12)  # each 168 chars; 12 of them with blank lines between: 2,038 chars
    doc = "\n\n".join(p.strip() for p in paras)
    web.routes["/long.txt"] = Route(doc.encode(), content_type="text/plain; charset=utf-8")
    tool = VisitPage(allow_private=True, page_chars=400)
    url = web.url("/long.txt")
    starts = page_starts(doc, 400)
    n = len(starts)
    assert n >= 6  # at most 2 paragraphs (336 + 2 chars) fit in 400
    replies = visits(tool, *({"url": url, "page": i} for i in range(1, n + 2)))
    assert web.hits("/long.txt") == 1  # paging reads the cache
    bodies = []
    for i, reply in enumerate(replies[:n], 1):
        assert reply.error_kind is None, reply.content
        assert f"Page {i} of {n}" in reply.content
        body = reply.content.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
        assert len(body) <= 400
        bodies.append(body)
    assert f"page={2}" in replies[0].content
    assert "end of document" in replies[n - 1].content
    assert "\n\n".join(bodies) == doc  # pages break between paragraphs: nothing lost, nothing cut mid-word
    assert replies[n].error_kind == "bad_arguments" and f"has {n} page(s)" in replies[n].content


def test_page_breaks_prefer_paragraphs_then_lines_then_words():
    assert page_starts("a" * 50, 100) == (0,)
    text = "x" * 60 + "\n\n" + "y" * 60
    assert page_starts(text, 100) == (0, 62)
    text = "x" * 60 + " " + "y" * 60
    assert page_starts(text, 100) == (0, 61)
    assert page_starts("z" * 250, 100) == (0, 100, 200)  # no break anywhere: hard cuts


def test_find_lists_every_page_and_shows_the_first_match(web):
    paras = _paragraphs(12)
    paras[3] = paras[3].replace("word word", "the Golden   Ratio word", 1)
    paras[9] = paras[9].replace("word word", "GOLDEN RATIO word", 1)
    doc = "\n\n".join(p.strip() for p in paras)
    web.routes["/doc.txt"] = Route(doc.encode(), content_type="text/plain")
    starts = page_starts(doc, 400)
    page_of = lambda offset: max(i for i, s in enumerate(starts, 1) if s <= offset)  # noqa: E731
    p1, p2 = page_of(doc.index("Golden")), page_of(doc.index("GOLDEN"))
    assert p1 < p2
    url = web.url("/doc.txt")
    first, later, none, anchored = visits(VisitPage(allow_private=True, page_chars=400),
                                          {"url": url, "find": "golden ratio"},
                                          {"url": url, "find": "golden ratio", "page": p1 + 1},
                                          {"url": url, "find": "silver ratio"},
                                          {"url": url + "#section-2"})
    assert first.error_kind is None
    assert f"2 match(es), on page(s) {p1}, {p2}" in first.content
    assert "Golden Ratio word" in first.content and "GOLDEN RATIO word" in first.content  # excerpts
    assert f"Page {p1} of {len(starts)}" in first.content and f"Showing page {p1}" in first.content
    assert f"Page {p2} of" in later.content and f"at or after page {p1 + 1}" in later.content
    assert none.error_kind is None and "No match for 'silver ratio'" in none.content
    assert anchored.error_kind is None
    assert web.hits("/doc.txt") == 1  # searching, and a #fragment of the same URL, read the cache


def test_pdf_by_content_type_and_by_magic_bytes(web):
    pdf = make_pdf(["Annual report 2023", "Revenue grew by 12 percent"])
    web.routes["/report.pdf"] = Route(pdf, content_type="application/pdf")
    web.routes["/download"] = Route(pdf, content_type="application/octet-stream")
    for path in ("/report.pdf", "/download"):
        result = visit(VisitPage(allow_private=True), web.url(path))
        assert result.error_kind is None, result.content
        assert "[PDF page 1 of 2]\nAnnual report 2023" in result.content
        assert "[PDF page 2 of 2]\nRevenue grew by 12 percent" in result.content
        assert "PDF, 2 PDF page(s)" in result.content


def test_text_uses_the_declared_charset(web):
    web.routes["/latin1.txt"] = Route("Café crème".encode("latin-1"), content_type="text/plain; charset=iso-8859-1")
    assert "Café crème" in visit(VisitPage(allow_private=True), web.url("/latin1.txt")).content


def test_http_errors_are_results_not_exceptions(web):
    result = asyncio.run(run_tool({"visit_page": VisitPage(allow_private=True)}, "visit_page",
                                  json.dumps({"url": web.url("/missing")}), CTX, timeout_s=10))
    assert result.error_kind == "http_error"
    assert "HTTP 404" in result.content and "/missing" in result.content


def test_run_tool_dispatches_arguments_and_checks_them(web):
    web.routes["/a"] = Route(b"<p>alpha</p>")
    tools = {"visit_page": VisitPage(allow_private=True)}
    ok = asyncio.run(run_tool(tools, "visit_page", json.dumps({"url": web.url("/a"), "page": 1}), CTX, timeout_s=10))
    assert ok.error_kind is None and "alpha" in ok.content
    bad = asyncio.run(run_tool(tools, "visit_page", json.dumps({"url": web.url("/a"), "page": "2"}), CTX))
    assert bad.error_kind == "bad_arguments"
    assert visit(VisitPage(allow_private=True), web.url("/a"), page=0).error_kind == "bad_arguments"


def test_redirect_chain_within_the_limit_is_followed(web):
    web.routes["/r1"] = Route(status=302, headers=(("Location", "/r2"),))
    web.routes["/r2"] = Route(status=301, headers=(("Location", web.url("/final")),))
    web.routes["/final"] = Route(b"<p>arrived</p>")
    result = visit(VisitPage(allow_private=True, max_redirects=2), web.url("/r1"))
    assert result.error_kind is None, result.content
    assert f"URL: {web.url('/final')} (redirected from {web.url('/r1')})" in result.content
    assert "arrived" in result.content


def test_redirect_chain_beyond_the_limit_is_refused(web):
    web.routes["/r1"] = Route(status=302, headers=(("Location", "/r2"),))
    web.routes["/r2"] = Route(status=302, headers=(("Location", "/final"),))
    web.routes["/final"] = Route(b"<p>arrived</p>")
    result = visit(VisitPage(allow_private=True, max_redirects=1), web.url("/r1"))
    assert result.error_kind == "too_many_redirects"
    assert web.hits("/final") == 0


@pytest.mark.parametrize("location, kind", [
    ("http://10.0.0.1/admin", "blocked_url"),
    ("http://169.254.169.254/latest/meta-data/", "blocked_url"),
    ("http://[::ffff:10.0.0.1]/", "blocked_url"),
    ("file:///etc/passwd", "bad_url"),
])
def test_redirect_to_a_private_address_is_refused_before_connecting(web, location, kind):
    web.routes["/go"] = Route(status=302, headers=(("Location", location),))
    # 127.0.0.1 is allowed as a listed network, so the first hop works and only the redirect is judged
    tool = VisitPage(allow_private=False, allow_networks=["127.0.0.1/32"])
    result = visit(tool, web.url("/go"))
    assert result.error_kind == kind, result.content
    assert web.hits("/go") == 1


def test_html_past_the_size_cap_is_cut_with_a_note(web):
    body = b"<p>" + b"lorem ipsum " * 5000 + b"</p><p>THE END</p>"
    web.routes["/big"] = Route(body)
    result = visit(VisitPage(allow_private=True, max_bytes=10_000, page_chars=100_000), web.url("/big"))
    assert result.error_kind is None
    assert "only its first 10,000 bytes were read" in result.content
    assert "THE END" not in result.content and "lorem ipsum" in result.content


def test_pdf_past_the_size_cap_is_too_large(web):
    pdf = make_pdf(["x" * 50] * 40)
    web.routes["/big.pdf"] = Route(pdf, content_type="application/pdf")
    web.routes["/big.bin"] = Route(pdf, content_type="application/octet-stream")  # found by sniffing
    for path in ("/big.pdf", "/big.bin"):
        result = visit(VisitPage(allow_private=True, max_bytes=len(pdf) // 2), web.url(path))
        assert result.error_kind == "too_large", result.content


def test_slow_server_times_out(web):
    web.routes["/slow"] = Route(b"<p>late</p>", delay=5)
    result = visit(VisitPage(allow_private=True, timeout=0.3), web.url("/slow"))
    assert result.error_kind == "timeout"


def test_binary_content_is_unsupported(web):
    web.routes["/logo.png"] = Route(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), content_type="image/png")
    web.routes["/blob"] = Route(b"\x00\x01\x02 not text" + bytes(range(256)), content_type="application/octet-stream")
    for path in ("/logo.png", "/blob"):
        result = visit(VisitPage(allow_private=True), web.url(path))
        assert result.error_kind == "unsupported_content", result.content


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:text/plain,hi",
                                 "gopher://127.0.0.1/", "javascript:alert(1)"])
def test_non_http_schemes_are_refused(url):
    result = visit(VisitPage(allow_private=True), url)
    assert result.error_kind == "bad_url"
    assert "only http and https" in result.content


def test_a_url_without_scheme_gets_a_hint():
    result = visit(VisitPage(), "en.wikipedia.org/wiki/Python")
    assert result.error_kind == "bad_url" and "https://en.wikipedia.org/wiki/Python" in result.content


def test_loopback_is_refused_by_default_and_allowed_on_request(web):
    web.routes["/"] = Route(b"<p>local</p>")
    refused = visit(VisitPage(), web.url("/"))
    assert refused.error_kind == "blocked_url" and "loopback" in refused.content
    assert web.requests == []
    allowed = visit(VisitPage(allow_private=True), web.url("/"))
    assert allowed.error_kind is None and "local" in allowed.content


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "localhost", "LOCALHOST.", "foo.localhost",
                                  "0.0.0.0", "2130706433", "[::]"])
def test_local_spellings_are_refused(web, host):
    result = visit(VisitPage(), f"http://{host}:{web.port}/")
    assert result.error_kind == "blocked_url", result.content
    assert web.requests == []


def test_a_name_is_pinned_to_its_checked_address_and_keeps_its_host_header(web):
    web.routes["/who"] = Route(b"<p>hi</p>")
    result = visit(VisitPage(allow_private=True), f"http://localhost:{web.port}/who")
    assert result.error_kind is None, result.content
    assert web.requests[-1]["headers"]["host"] == f"localhost:{web.port}"


# A self-signed certificate for the name "localhost" only (EC P-256, valid 2000-2100), made for this test with
# `openssl ca -selfsign`; its key protects nothing.
LOCALHOST_CERT = """-----BEGIN CERTIFICATE-----
MIIBhDCCASqgAwIBAgICEAAwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJbG9jYWxo
b3N0MCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAUMRIwEAYDVQQD
DAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQWWoMv8rC6WdS8
rzJpdfw5GFVvipxDbDSasXUhGVBsa+XvJexRFFYkfHbrIw3l2rwsj1fEW5xzEcS4
y+Q0zrNDo2owaDAUBgNVHREEDTALgglsb2NhbGhvc3QwDAYDVR0TAQH/BAIwADAO
BgNVHQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0OBBYEFJrH
IdXY2rnN/6EgxQlLU03Q2yZIMAoGCCqGSM49BAMCA0gAMEUCIB7YoC7NOYi0l9Fn
ww/5BTtWFe64qPGXHb9K56s7jAwHAiEAxnzoA/WOi4b3yWb7JzLoCdbFollCKlqz
x9QWxiTor+c=
-----END CERTIFICATE-----
"""
LOCALHOST_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgKV+o2bfl+wptr1aP
KeqCsRCvax7GqbVcXK/xwKd3ODShRANCAAQWWoMv8rC6WdS8rzJpdfw5GFVvipxD
bDSasXUhGVBsa+XvJexRFFYkfHbrIw3l2rwsj1fEW5xzEcS4y+Q0zrND
-----END PRIVATE KEY-----
"""


def test_https_to_a_pinned_address_still_verifies_the_certificate_for_the_name(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(LOCALHOST_CERT)
    key.write_text(LOCALHOST_KEY)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = WebServer().start(tls=tls)
    server.routes["/secure"] = Route(b"<p>over TLS</p>")
    try:
        # connected to the checked 127.0.0.1, but TLS is verified for "localhost", the name in the URL
        ok = visit(VisitPage(allow_private=True, ca_file=str(cert)), f"https://localhost:{server.port}/secure")
        assert ok.error_kind is None, ok.content
        assert "over TLS" in ok.content
        # the same server by address: the certificate does not name 127.0.0.1, so verification must fail
        wrong = visit(VisitPage(allow_private=True, ca_file=str(cert)), f"https://127.0.0.1:{server.port}/secure")
        assert wrong.error_kind == "network_error" and "CERTIFICATE_VERIFY_FAILED" in wrong.content
    finally:
        server.stop()


@pytest.mark.parametrize("address", ["10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.169.254",
                                     "0.0.0.0", "224.0.0.1", "100.64.0.1", "255.255.255.255", "240.0.0.1",
                                     "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1",
                                     "::ffff:169.254.169.254", "2002:a00:1::", "64:ff9b::a00:1"])
def test_non_public_addresses_have_a_problem(address):
    assert netguard.address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert netguard.address_problem(ipaddress.ip_address(address)) is None


def test_allow_networks_only_lifts_the_listed_networks():
    async def check(url: str, networks: list[str]) -> netguard.Target:
        return await netguard.check_url(url, allow_networks=netguard.parse_networks(networks, "opt"))
    assert asyncio.run(check("http://10.1.2.3/", ["10.1.0.0/16"])).addresses == ("10.1.2.3",)
    with pytest.raises(netguard.Refused, match="private"):
        asyncio.run(check("http://10.2.0.1/", ["10.1.0.0/16"]))


@pytest.mark.parametrize("options, named", [
    ({"max_bytes": 0}, "tools.visit_page.max_bytes"),
    ({"page_chars": 10}, "tools.visit_page.page_chars"),
    ({"max_redirects": -1}, "tools.visit_page.max_redirects"),
    ({"timeout": 0}, "tools.visit_page.timeout"),
    ({"allow_networks": ["not-a-net"]}, "tools.visit_page.allow_networks"),
    ({"proxy": "ftp://x"}, "tools.visit_page.proxy"),
    ({"ca_file": "/nonexistent/ca.pem"}, "tools.visit_page.ca_file"),
])
def test_bad_options_name_the_option(options, named):
    with pytest.raises(BonError, match=re.escape(named)):
        VisitPage(**options)


# --------------------------------------------------------------------------- hostile pages: bounded decoding and conversion


def _gzip_zeros_stream(megabytes: int, unit: bytes = b"<p>bomb</p>") -> bytes:
    """`megabytes` MB of repeated `unit`, gzipped a block at a time (never held whole)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 31)  # the fastest level: the outer gzip still makes it a few KB
    block = unit * ((1 << 20) // len(unit))
    return b"".join(z.compress(block) for _ in range(megabytes)) + z.flush()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_stacked_gzip_bomb_is_decoded_only_up_to_max_bytes(web):
    bomb = gzip.compress(_gzip_zeros_stream(256), 9)  # 256 MB of HTML in a few KB
    assert len(bomb) < 10_000
    web.routes["/bomb"] = Route(bomb, headers=(("Content-Encoding", "gzip, gzip"),))
    before = _peak_rss_mb()
    result = visit(VisitPage(allow_private=True, max_bytes=1_000_000), web.url("/bomb"))
    assert result.error_kind is None, result.content
    assert "only its first 1,000,000 bytes were read" in result.content
    assert "bomb" in result.content
    assert _peak_rss_mb() - before < 128  # decoding the whole body would have taken 256 MB at once


def test_the_decoder_never_holds_more_than_a_piece_per_stage():
    bomb = gzip.compress(_gzip_zeros_stream(64), 9)
    decoder = decoding.Decoder("gzip, gzip", 3_000_000)
    pieces = [p for i in range(0, len(bomb), 512) for p in decoder.feed(bomb[i:i + 512])]
    assert decoder.cut and sum(map(len, pieces)) == 3_000_000
    assert max(map(len, pieces)) <= decoding.PIECE


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", lambda b: gzip.compress(b[:100]) + gzip.compress(b[100:])),  # two gzip members
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ("gzip, deflate", lambda b: zlib.compress(gzip.compress(b))),
    ("identity", lambda b: b),
])
def test_every_supported_coding_decodes_to_the_page(web, coding, encode):
    page = b"<h1>Coded</h1>" + b"<p>filler text</p>" * 500 + b"<p>THE END</p>"
    web.routes["/coded"] = Route(encode(page), headers=(("Content-Encoding", coding),))
    result = visit(VisitPage(allow_private=True, page_chars=100_000), web.url("/coded"))
    assert result.error_kind is None, result.content
    assert "# Coded" in result.content and "THE END" in result.content and "Note:" not in result.content


def test_visit_page_asks_only_for_codings_it_can_bound_and_refuses_others(web):
    web.routes["/br"] = Route(b"\x1b\x03\x00\xf8", headers=(("Content-Encoding", "br"),))
    result = visit(VisitPage(allow_private=True), web.url("/br"))
    assert result.error_kind == "unsupported_content" and "br" in result.content
    assert web.requests[-1]["headers"]["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("depth", [400, 3000])
def test_deeply_nested_html_is_flattened_not_a_recursion_error(web, depth):
    web.routes["/deep"] = Route(b"<p>top</p>" + b"<div><b>x</b>" * depth + b"bottom" + b"</div>" * depth)
    result = visit(VisitPage(allow_private=True, page_chars=100_000), web.url("/deep"))
    assert result.error_kind is None, result.content
    assert "top" in result.content and "bottom" in result.content
    assert "nested more than 100 deep are shown as plain text" in result.content


def _slow_html(rows: int = 20_000) -> bytes:
    return b"<table>" + b"".join(b"<tr><td><a href='/r%d'>row %d</a></td><td><b>%d</b></td></tr>" % (i, i, i)
                                 for i in range(rows)) + b"</table>"


def test_a_conversion_past_the_budget_is_stopped_and_reported_as_timeout(web):
    web.routes["/slow.html"] = Route(_slow_html())
    start = time.monotonic()
    result = visit(VisitPage(allow_private=True, timeout=1.0), web.url("/slow.html"))
    assert result.error_kind == "timeout", result.content
    assert "converting it to text was stopped" in result.content and "tools.visit_page.timeout" in result.content
    assert time.monotonic() - start < 1.0 + 10  # a behaviour check (stopped, not run to the end), not a benchmark


def _helper_children() -> list[int]:
    helper = bounded._helper._process
    if helper is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == helper.pid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _wait_no_workers(seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while _helper_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _helper_children()


def test_a_worker_runs_under_its_address_space_limit_and_fails_cleanly_past_it():
    assert asyncio.run(bounded.run(bounded.address_space_limit_mb, timeout=30, memory_mb=300)) == 300
    with pytest.raises(bounded.Overrun) as caught:
        asyncio.run(bounded.run(bytearray, 600 << 20, timeout=30, memory_mb=300))
    assert caught.value.kind == "memory_limit"


def test_a_worker_past_its_time_or_abandoned_is_killed():
    with pytest.raises(bounded.Overrun) as caught:
        asyncio.run(bounded.run(time.sleep, 60, timeout=0.5, memory_mb=512))
    assert caught.value.kind == "timeout"
    assert _wait_no_workers() == []

    async def abandon():
        task = asyncio.ensure_future(bounded.run(time.sleep, 60, timeout=60, memory_mb=512))
        await asyncio.sleep(1.0)
        assert _helper_children()  # the worker is running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(abandon())
    assert _wait_no_workers() == []


def test_a_worker_that_raises_or_dies_is_reported():
    with pytest.raises(ValueError, match="invalid literal"):
        asyncio.run(bounded.run(int, "not a number", timeout=30, memory_mb=512))
    with pytest.raises(bounded.WorkerFailed, match="died without answering"):
        asyncio.run(bounded.run(os._exit, 3, timeout=30, memory_mb=512))


def test_memory_mb_is_checked():
    with pytest.raises(BonError, match=re.escape("tools.visit_page.memory_mb")):
        VisitPage(memory_mb=64)
