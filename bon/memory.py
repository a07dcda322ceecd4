"""Will a run fit in memory? An estimate before the work, said once, so a big sweep fails early, not at 90%.

Measured by benchmarks/bench_memory.py (dataset=sim, N=16, selectors majority and two_stage; peak resident
memory of the whole `bon.run` minus that of a 100-task run, per candidate): 0.16-0.18 KB per candidate with
the gaia_dev profile and 0.26-0.29 KB with tau2, whose long trajectories make the simulator's padded
[candidates, steps] label arrays the largest (before the compact candidate table: 0.47-0.49 and 1.0-1.04 KB).
The estimate takes the larger figure, on top of about 120 MB for the interpreter, the imports and Hydra.
"""
from __future__ import annotations

import sys
from pathlib import Path

PER_CANDIDATE = 300  # bytes, measured as above (tau2: 0.29 KB)
BASE = 120 * 2**20  # bytes: Python, numpy, polars, Hydra (a 100-task run peaks at 111-121 MB)


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
