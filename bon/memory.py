"""Will a run fit in memory? An estimate before the work, said once, so a big sweep fails early, not at 90%.

Measured (dataset=sim, N=16, selector=majority, the peak among selectors): peak resident memory rose from
0.97 GB at 1.6M candidates to 2.41 GB at 4.8M, i.e. about 0.45 KB per candidate through generation,
judging, selection, best-of-k and the bootstrap, on top of about 0.25 GB for the interpreter and imports.
"""
from __future__ import annotations

import sys
from pathlib import Path

PER_CANDIDATE = 450  # bytes, measured as above
BASE = 250 * 2**20  # bytes: Python, numpy, polars, Hydra


def estimate(candidates: int) -> int:
    """Bytes a run with this many candidates (tasks x samples x judges) is expected to peak at."""
    return BASE + PER_CANDIDATE * candidates


def available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory the kernel says a new process can use (MemAvailable), in bytes; None where it cannot tell."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def warn_if_too_big(candidates: int, what: str, free: int | None = None) -> bool:
    """Print one warning when the estimate exceeds 90% of the available memory; True when it did."""
    free = available() if free is None else free
    need = estimate(candidates)
    if free is None or need <= 0.9 * free:
        return False
    print(f"warning: {what} is {candidates:,} candidates, which needs about {need / 2**30:.1f} GB "
          f"(~{PER_CANDIDATE} bytes each), but only {free / 2**30:.1f} GB is available; use fewer tasks or "
          f"samples, or split the run with dataset.num_shards=K and merge it with python -m bon.merge",
          file=sys.stderr)
    return True
