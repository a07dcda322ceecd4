"""Offline tests of the AgentProcessBench download cache against a loopback HTTP server."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror_server import Server, dead_url, serve

import bon.datasets
from bon.datasets import fetch
from bon.errors import BonError

REPO = Path(__file__).resolve().parents[1]
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
def source(apb_root: Path) -> Path:
    """The copy the tests serve: $BON_DATA_DIR (read-only), else the verified download; missing data fails."""
    return apb_root


@pytest.fixture
def server(source: Path) -> Iterator[Server]:
    with serve(source) as state:
        yield state


def _files(root: Path) -> set[str]:
    """Every file of a copy but the cache's own marker."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != fetch.MARKER}


@pytest.fixture
def served(source: Path) -> fetch.Manifest:
    """The pinned manifest cut down to the files the local mirror holds (all of them where the copy is complete)."""
    full = fetch.load_manifest()
    present = _files(source)
    files = tuple(e for e in full.files if e.path in present)
    return dataclasses.replace(full, files=files, digest=f"{full.digest}:{len(files)}")


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
    assert _files(dest) == _files(source) and (dest / fetch.MARKER).is_file()
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
    url = dead_url()
    monkeypatch.setenv(fetch.APB.env_mirror, url)
    with pytest.raises(BonError) as info:
        fetch.ensure_cached(cache_dir=tmp_path)
    message = str(info.value)
    assert url in message
    assert "BON_DATA_DIR" in message and "dataset.root" in message
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_entries_pinned_by_hash_only_are_verified_by_hash(server: Server, served: fetch.Manifest,
                                                          tmp_path: Path) -> None:
    rel = "data/AnswerOnly/bfcl_final.jsonl"
    files = tuple(dataclasses.replace(e, size=None) if e.path == rel else e for e in served.files)
    hash_only = dataclasses.replace(served, files=files, digest=served.digest + ":hash-only")
    dest = fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=hash_only)
    (dest / fetch.MARKER).unlink()
    (dest / rel).write_bytes((dest / rel).read_bytes() + b"\n")  # a different file: must be fetched again
    server.requests.clear()
    fetch.ensure_cached(base_url=server.url, cache_dir=tmp_path, manifest=hash_only)
    assert server.requests == ["/" + rel]


def test_locate_root_falls_back_to_cache(server: Server, served: fetch.Manifest, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setattr(fetch, "load_manifest", lambda path=fetch.APB.manifest: served)
    monkeypatch.delenv(bon.datasets.ENV_ROOT, raising=False)
    monkeypatch.setenv(fetch.APB.env_mirror, server.url)
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path))
    root = bon.datasets.locate_root(None)
    assert root == tmp_path / "agentprocessbench" / fetch.load_manifest().commit
    assert (root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl").is_file()


def test_tests_on_a_fresh_machine_fail_clearly_without_data_or_network(tmp_path: Path) -> None:
    """The README's test command with no copy, no cache and no network: a test needing the data errors (never
    skips), saying how to point at a local copy."""
    env = {k: v for k, v in os.environ.items() if k not in ("BON_DATA_DIR", fetch.APB.env_mirror, fetch.ENV_CACHE)}
    env |= {fetch.APB.env_mirror: dead_url(), fetch.ENV_CACHE: str(tmp_path / "cache")}
    node = "tests/test_prm_eval.py::test_human_judge_is_perfect"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", node], capture_output=True,
                          text=True, cwd=REPO, env=env)
    assert proc.returncode == 1 and "1 error" in proc.stdout and "skipped" not in proc.stdout, proc.stdout
    assert "this test needs the AgentProcessBench release" in proc.stdout and "BON_DATA_DIR" in proc.stdout
