"""Offline tests of the AgentProcessBench download cache against a loopback HTTP server."""
from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import bon.datasets
from bon.datasets import fetch
from bon.errors import BonError

SHARED = "/work/shared/data/agentprocessbench"
SPACED_DIR = "eval/results/GPT-5.2-Thinking (medium) "
# the release at the pinned commit: 5 label/trajectory files and 4 files for each of its 20 judges
RELEASE_JUDGES = 20
# the five judge directories added in issue 12 §2 (SHA-256 as published there); note the trailing space
ADDED = {
    "eval/results/GPT-5.2-Chat /bfcl__blind_gpt-5.2-chat.jsonl":
        "6e530e3218c5b7640f0285be1222b1f7521e386a7d2502cdc0e0b9874279d7e2",
    "eval/results/Gemini-3-Flash-Preview/tau2__blind_gemini-3-flash-preview-nothinking.jsonl":
        "328d4bec551e621bce393d6cecda6f77129a35418fccb3953843060c80094849",
    "eval/results/Kimi-K2.5-Thinking/hotpotqa__blind_kimi-k2.5.jsonl":
        "ab63d951fce03c0f9ee109782734b16d2a6291830322ac7e725f133fa6ec73e6",
    "eval/results/Llama-3.3-70B-Instruct/gaia_dev__blind_Llama-3.3-70B-Instruct.jsonl":
        "b6727cf223cef6448a187d4fc6f857e74ef8b51e479ef790671bb8670627744e",
    "eval/results/Qwen3-8B/tau2__blind_Qwen3-8B-Non-Thinking.jsonl":
        "2e378bf9b688acc1326ae6513a1b794891eb9802305e82c8e5a1ea34b10eca3c",
}


@pytest.fixture(scope="module")
def source() -> Path:
    """The shared read-only copy; missing data is a failure, not a skip."""
    root = Path(os.environ.get("BON_DATA_DIR") or SHARED)
    assert (root / "data" / "AnswerOnly").is_dir(), f"AgentProcessBench copy not found at {root}"
    return root


@dataclass
class Server:
    url: str
    requests: list[str] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # URL paths served with a flipped first byte


class _Handler(SimpleHTTPRequestHandler):
    state: Server

    def do_GET(self) -> None:
        self.state.requests.append(self.path)
        if self.path in self.state.corrupt:
            body = bytearray(Path(self.translate_path(self.path)).read_bytes())
            body[0] ^= 0xFF
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(bytes(body))
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server(source: Path) -> Iterator[Server]:
    state = Server(url="")
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(source)))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def served(source: Path) -> fetch.Manifest:
    """The pinned manifest cut down to the files the local mirror holds (all of them where the copy is complete)."""
    full = fetch.load_manifest()
    present = _files(source)
    files = tuple(e for e in full.files if e.path in present)
    return fetch.Manifest(full.commit, files, f"{full.digest}:{len(files)}")


def test_manifest_covers_the_whole_release(source: Path) -> None:
    manifest = fetch.load_manifest()
    assert len(manifest.commit) == 40
    paths = {e.path for e in manifest.files}
    judges = {p.split("/")[2] for p in paths if p.startswith("eval/results/")}
    assert len(judges) == RELEASE_JUDGES and len(paths) == 5 + 4 * RELEASE_JUDGES
    assert "GPT-5.2-Chat " in judges  # the trailing space is part of the upstream name
    by_path = {e.path: e.sha256 for e in manifest.files}
    assert all(by_path[path] == digest for path, digest in ADDED.items())
    assert _files(source) <= paths  # every file of the local copy is pinned ...
    for path in _files(source):  # ... with the right hash
        assert fetch.sha256(source / path) == by_path[path], path
    assert any(e.path.startswith(SPACED_DIR + "/") for e in manifest.files)


def test_full_download_is_byte_identical(server: Server, served: fetch.Manifest, source: Path,
                                        tmp_path: Path) -> None:
    dest = fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path / "cache", manifest=served)
    assert dest == tmp_path / "cache"
    assert _files(dest) == _files(source) | {fetch.MARKER}
    for rel in _files(source):
        assert (dest / rel).read_bytes() == (source / rel).read_bytes(), rel
    spaced = dest / SPACED_DIR
    assert spaced.is_dir() and len(list(spaced.iterdir())) == 4
    assert any("%20%28medium%29%20/" in r for r in server.requests)


def test_second_call_makes_no_requests(server: Server, served: fetch.Manifest, tmp_path: Path) -> None:
    dest = fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=served)
    server.requests.clear()
    assert fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=served) == dest
    assert server.requests == []


def test_repairs_only_bad_files_when_unverified(server: Server, served: fetch.Manifest, tmp_path: Path) -> None:
    dest = fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=served)
    (dest / fetch.MARKER).unlink()
    bad = dest / "data" / "AnswerOnly" / "tau2_final.jsonl"
    bad.write_bytes(b"x" + bad.read_bytes()[1:])  # same size, wrong hash
    server.requests.clear()
    fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=served)
    assert server.requests == ["/data/AnswerOnly/tau2_final.jsonl"]
    assert (dest / fetch.MARKER).is_file()


def test_corrupted_download_raises_and_leaves_nothing(server: Server, served: fetch.Manifest, tmp_path: Path) -> None:
    rel = SPACED_DIR + "/bfcl__blind_gpt-5.2-medium.jsonl"
    server.corrupt.add(fetch.file_url("", rel))  # the URL path, quoted as the client sends it
    with pytest.raises(BonError, match="SHA-256") as info:
        fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=served)
    entry = next(e for e in fetch.load_manifest().files if e.path == rel)
    assert rel in str(info.value) and entry.sha256 in str(info.value)
    assert not (tmp_path / rel).exists()
    assert not list((tmp_path / SPACED_DIR).glob("*.part"))
    assert not (tmp_path / fetch.MARKER).exists()


def test_unreachable_mirror_says_how_to_use_local_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as sock:  # grab a free port, then close it so connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(fetch.ENV_MIRROR, f"http://127.0.0.1:{port}/")
    with pytest.raises(BonError) as info:
        fetch.ensure_cached(cache_dir=tmp_path)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "BON_DATA_DIR" in message and "dataset.root" in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_entries_pinned_by_hash_only_are_verified_by_hash(server: Server, served: fetch.Manifest,
                                                          tmp_path: Path) -> None:
    import dataclasses

    rel = "data/AnswerOnly/bfcl_final.jsonl"
    files = tuple(dataclasses.replace(e, size=None) if e.path == rel else e for e in served.files)
    hash_only = fetch.Manifest(served.commit, files, served.digest + ":hash-only")
    dest = fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=hash_only)
    (dest / fetch.MARKER).unlink()
    (dest / rel).write_bytes((dest / rel).read_bytes() + b"\n")  # a different file: must be fetched again
    server.requests.clear()
    fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=hash_only)
    assert server.requests == ["/" + rel]


def test_locate_root_falls_back_to_cache(server: Server, served: fetch.Manifest, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setattr(fetch, "load_manifest", lambda path=fetch.MANIFEST: served)
    monkeypatch.delenv(bon.datasets.ENV_ROOT, raising=False)
    monkeypatch.setenv(fetch.ENV_MIRROR, server.url)
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path))
    root = bon.datasets.locate_root(None)
    assert root == tmp_path / "agentprocessbench" / fetch.load_manifest().commit
    assert (root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl").is_file()
