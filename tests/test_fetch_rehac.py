"""The pinned ReHAC download, offline: served read-only from the local copy by a loopback HTTP server or as
a file:// mirror, verified file by file, and the fallback `dataset=rehac` and the test fixtures use."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror_server import Server, dead_url, serve
from omegaconf import OmegaConf

from bon.datasets import fetch
from bon.errors import BonError
from bon.rehac.report import locate_root

REPO = Path(__file__).resolve().parents[1]
COMMIT = "91b88fd4d846c745290c4675854cecd3bed8cd5c"  # the release the README's ReHAC figures come from
# read by bon beyond conf/dataset/rehac.yaml's defaults: the other tasks' trained runs (dataset.reference)
# and the training questions' step tree
ALSO_READ = ("hotpotqa/results/hotpotqa_lambda0.08.jsonl", "intercode/results/intercode_lambda0.08.jsonl",
             "strategyqa/test_data/localgpt_train250.jsonl")
TREE = "strategyqa/test_data/localgpt_test100.jsonl"
DATA_ENV = ("BON_REHAC_DIR", "BON_DATA_DIR", "BON_REHAC_MIRROR", "BON_CACHE_DIR")


@pytest.fixture
def server(rehac_root: Path) -> Iterator[Server]:
    with serve(rehac_root) as state:
        yield state


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine with no local copy configured and an empty cache; returns where the download must land."""
    monkeypatch.delenv("BON_REHAC_DIR", raising=False)
    monkeypatch.delenv("BON_DATA_DIR", raising=False)
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path / "cache" / "rehac" / COMMIT


def _manifest() -> fetch.Manifest:
    return fetch.load_manifest(fetch.REHAC.manifest)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_manifest_pins_every_file_bon_reads_at_the_release_commit(rehac_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest()
    assert (manifest.repo, manifest.commit) == ("XueyangFeng/ReHAC", COMMIT)
    conf = OmegaConf.load(REPO / "conf" / "dataset" / "rehac.yaml")
    wanted = {conf.episodes, conf.test_episodes, conf.trained, *ALSO_READ}
    assert {e.path for e in manifest.files} == wanted
    for entry in manifest.files:  # the local copy is the release: every size and hash agrees
        assert (rehac_root / entry.path).stat().st_size == entry.size, entry.path
        assert fetch.sha256(rehac_root / entry.path) == entry.sha256, entry.path
    monkeypatch.delenv(fetch.REHAC.env_mirror, raising=False)
    assert fetch.default_base_url(manifest, fetch.REHAC) == \
        f"https://raw.githubusercontent.com/XueyangFeng/ReHAC/{COMMIT}/"


def test_download_from_a_mirror_is_byte_identical_and_made_once(server: Server, rehac_root: Path,
                                                                 tmp_path: Path) -> None:
    dest = fetch.ensure_cached(fetch.REHAC, base_url=server.url, cache_dir=tmp_path)
    paths = {e.path for e in _manifest().files}
    assert _files(dest) == paths | {fetch.MARKER}
    for rel in paths:
        assert (dest / rel).read_bytes() == (rehac_root / rel).read_bytes(), rel
    assert sorted(server.requests) == sorted("/" + p for p in paths)
    server.requests.clear()
    assert fetch.ensure_cached(fetch.REHAC, base_url=server.url, cache_dir=tmp_path) == dest
    assert server.requests == []


def test_mirror_variable_accepts_a_local_directory(rehac_root: Path, no_settings: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fetch.REHAC.env_mirror, rehac_root.as_uri() + "/")
    dest = fetch.ensure_cached(fetch.REHAC)
    assert dest == no_settings
    assert _files(dest) == {e.path for e in _manifest().files} | {fetch.MARKER}


def test_corrupted_file_is_refused_with_its_path_and_expected_hash(server: Server, tmp_path: Path) -> None:
    server.corrupt.add("/" + TREE)
    with pytest.raises(BonError, match="SHA-256 mismatch for ReHAC file") as info:
        fetch.ensure_cached(fetch.REHAC, base_url=server.url, cache_dir=tmp_path)
    expected = next(e.sha256 for e in _manifest().files if e.path == TREE)
    assert TREE in str(info.value) and expected in str(info.value)
    assert not (tmp_path / TREE).exists() and not list(tmp_path.rglob("*.part"))
    assert not (tmp_path / fetch.MARKER).exists()
    # a later good download fetches only what is still missing, not the files already verified
    server.corrupt.clear()
    server.requests.clear()
    fetch.ensure_cached(fetch.REHAC, base_url=server.url, cache_dir=tmp_path)
    assert "/" + TREE in server.requests and len(server.requests) < len(_manifest().files)
    assert (tmp_path / fetch.MARKER).is_file()


def test_without_network_the_error_says_how_to_use_a_local_copy(no_settings: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = dead_url()
    monkeypatch.setenv(fetch.REHAC.env_mirror, url)
    with pytest.raises(BonError) as info:
        locate_root(None)
    message = str(info.value)
    assert url in message and "ReHAC data could not be downloaded" in message
    assert "BON_REHAC_DIR" in message and "dataset.path=" in message and "BON_REHAC_MIRROR" in message
    assert not [p for p in no_settings.parent.rglob("*") if p.is_file()]


def test_dataset_rehac_without_a_path_falls_back_to_the_verified_download(server: Server, no_settings: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    monkeypatch.setenv(fetch.REHAC.env_mirror, server.url)
    # an AgentProcessBench copy with no ReHAC beside it does not stop the download
    (tmp_path / "apb").mkdir()
    monkeypatch.setenv("BON_DATA_DIR", str(tmp_path / "apb"))
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bon.run", "dataset=rehac", "dataset.predictors=[oracle]",
                           "bootstrap_resamples=100", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"downloading {len(_manifest().files)} ReHAC files from {server.url} to {no_settings}" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [s["file"] for s in summary["question_sets"]] == ["dataset/gpt4/strategyqa.jsonl", TREE]
    server.requests.clear()
    assert locate_root(None) == no_settings and server.requests == []  # verified once, then read in place


@pytest.mark.parametrize("mirror", ["serve", "dead"])
def test_tests_on_a_fresh_machine_download_or_fail_clearly(mirror: str, rehac_root: Path, tmp_path: Path) -> None:
    """The README's test command on a machine without the data: the fixture downloads it, or fails (not skips)."""
    env = {k: v for k, v in os.environ.items() if k not in DATA_ENV}
    env[fetch.ENV_CACHE] = str(tmp_path / "cache")
    node = "tests/test_rehac_episodes.py::test_results_files_without_idx"
    with serve(rehac_root) as server:
        env[fetch.REHAC.env_mirror] = server.url if mirror == "serve" else dead_url()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", node], capture_output=True,
                              text=True, cwd=REPO, env=env)
    if mirror == "serve":
        assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]
        assert (tmp_path / "cache" / "rehac" / COMMIT / fetch.MARKER).is_file()
    else:
        assert proc.returncode == 1 and "1 error" in proc.stdout and "skipped" not in proc.stdout, proc.stdout
        assert "this test needs the ReHAC release" in proc.stdout and "BON_REHAC_DIR" in proc.stdout
