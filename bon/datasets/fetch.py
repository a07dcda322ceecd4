"""Download and verify a pinned data release (AgentProcessBench, ReHAC) into a per-user cache.

The data is never vendored into this repository. Instead a manifest (path, SHA-256, size of every
file bon reads at one upstream commit) pins the exact release, so any mirror can be used without
trusting it and a half-finished or tampered download can never be mistaken for the real thing.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from tqdm import tqdm

from bon.errors import BonError

ENV_CACHE = "BON_CACHE_DIR"
MARKER = ".verified"
TIMEOUT = 60.0  # seconds per connect/read; a stalled server must fail, not hang
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Release:
    """A published data set bon can fetch: where its manifest is and how a user points bon at a copy."""

    name: str  # shown in messages
    slug: str  # the cache subdirectory
    manifest: Path
    env_mirror: str  # environment variable naming another base URL (http(s):// or file://)
    local_copy: str  # how to use a local copy instead, for the error when the download fails


APB = Release(
    "AgentProcessBench", "agentprocessbench", Path(__file__).with_name("agentprocessbench_manifest.json"),
    "BON_APB_MIRROR",
    "set dataset.root=/path/to/AgentProcessBench or the environment variable BON_DATA_DIR")
REHAC = Release(
    "ReHAC", "rehac", Path(__file__).with_name("rehac_manifest.json"), "BON_REHAC_MIRROR",
    "set dataset.path=/path/to/ReHAC or the environment variable BON_REHAC_DIR")


@dataclass(frozen=True)
class Entry:
    """One file of the release, as recorded in the manifest."""

    path: str  # upstream POSIX path, verbatim (directory names may end in a space)
    sha256: str
    size: int | None  # bytes, a cheap pre-check before hashing; None where only the SHA-256 is pinned


@dataclass(frozen=True)
class Manifest:
    repo: str  # GitHub owner/name, for the default download URL
    commit: str
    files: tuple[Entry, ...]
    digest: str  # SHA-256 of the manifest itself; stored in the marker so a new manifest re-verifies


def load_manifest(path: Path = APB.manifest) -> Manifest:
    """A pinned release shipped with the package (AgentProcessBench unless `path` names another)."""
    raw = path.read_bytes()
    data = json.loads(raw)
    files = tuple(Entry(f["path"], f["sha256"], None if f.get("size") is None else int(f["size"]))
                  for f in data["files"])
    return Manifest(data["repo"], data["commit"], files, hashlib.sha256(raw).hexdigest())


def default_base_url(manifest: Manifest, release: Release = APB) -> str:
    """The release's mirror variable (e.g. $BON_APB_MIRROR), else GitHub's raw files at the pinned commit."""
    return (os.environ.get(release.env_mirror)
            or f"https://raw.githubusercontent.com/{manifest.repo}/{manifest.commit}/")


def default_cache_dir(commit: str, release: Release = APB) -> Path:
    """<cache root>/<release>/<commit>; the root is $BON_CACHE_DIR or the platform's user cache."""
    root = os.environ.get(ENV_CACHE) or platformdirs.user_cache_dir("bon")
    return Path(root).expanduser() / release.slug / commit


def file_url(base_url: str, path: str) -> str:
    """Quote each segment on its own: names hold spaces, parentheses and trailing spaces."""
    return base_url.rstrip("/") + "/" + "/".join(urllib.parse.quote(seg, safe="") for seg in path.split("/"))


def ensure_cached(release: Release = APB, base_url: str | None = None, cache_dir: Path | None = None,
                  manifest: Manifest | None = None) -> Path:
    """A directory holding every file of the verified release; downloads only what is missing or wrong."""
    manifest = manifest or load_manifest(release.manifest)
    dest = Path(cache_dir) if cache_dir is not None else default_cache_dir(manifest.commit, release)
    marker = dest / MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == manifest.digest:
        return dest
    todo = [e for e in manifest.files if not _is_valid(dest / e.path, e)]
    if todo:
        base = base_url or default_base_url(manifest, release)
        print(f"downloading {len(todo)} {release.name} files from {base} to {dest}", file=sys.stderr)
        with tqdm(total=sum(e.size or 0 for e in todo), unit="B", unit_scale=True, file=sys.stderr,
                  desc=release.name) as bar:
            for entry in todo:
                _download(file_url(base, entry.path), dest / entry.path, entry, release, bar)
    _atomic_write(marker, manifest.digest + "\n")
    return dest


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _is_valid(path: Path, entry: Entry) -> bool:
    if not path.is_file() or (entry.size is not None and path.stat().st_size != entry.size):
        return False
    return sha256(path) == entry.sha256


def _download(url: str, target: Path, entry: Entry, release: Release, bar: tqdm) -> None:
    """Stream into a temp file beside `target`, verify, then rename: the final name only ever holds good data."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise BonError(
                    f"{release.name} data could not be downloaded from {url} ({reason}). "
                    f"To use a local copy of the repository instead, {release.local_copy} "
                    f"(or point {release.env_mirror} at a reachable mirror)."
                ) from exc
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise BonError(
                f"SHA-256 mismatch for {release.name} file {entry.path!r} downloaded from {url}: "
                f"expected {entry.sha256}, got {actual}; the file was discarded"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
