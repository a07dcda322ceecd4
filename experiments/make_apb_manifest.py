"""Write the AgentProcessBench manifest (path, SHA-256, size of every file) from a local copy.

The manifest pins the exact release `bon.datasets.fetch` downloads, so a cached or mirrored copy
can be verified without trusting the server. Run once per upstream commit:

    python experiments/make_apb_manifest.py /work/shared/data/agentprocessbench \
        --out bon/datasets/agentprocessbench_manifest.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bon.datasets.fetch import sha256

REPO = "RUCBM/AgentProcessBench"
COMMIT = "0a42606b178a8c69d40c5765dc05c342f921e578"


def manifest(root: Path, commit: str) -> dict:
    """Every regular file under `root`, by its upstream POSIX path (names kept verbatim, trailing spaces included)."""
    files = [
        {"path": p.relative_to(root).as_posix(), "sha256": sha256(p), "size": p.stat().st_size}
        for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix())
        if p.is_file() and ".git" not in p.relative_to(root).parts
    ]
    return {"repo": REPO, "commit": commit, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="local copy of the AgentProcessBench repository")
    parser.add_argument("--commit", default=COMMIT, help="upstream commit the copy was taken from")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args()
    text = json.dumps(manifest(args.root.resolve(), args.commit), indent=1) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
