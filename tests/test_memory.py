"""The memory estimate a big run is warned with, before any work."""
from __future__ import annotations

import subprocess
import sys

from bon import memory


def test_the_warning_names_the_size_and_the_way_out(tmp_path, capsys):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert memory.available(meminfo) == 8_000_000 * 1024
    assert not memory.warn_if_too_big(1_000_000, "a run", free=memory.available(meminfo))  # ~0.7 GB of 8
    assert memory.warn_if_too_big(50_000_000, "a run", free=memory.available(meminfo))  # ~21 GB of 8
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "50,000,000 candidates" in err and "dataset.num_shards" in err
    assert memory.available(tmp_path / "missing") is None


def test_a_sim_run_too_big_for_the_machine_is_warned_before_the_work(tmp_path):
    # 10^9 tasks x 8 samples cannot fit anywhere: the warning comes first; the run is stopped right after it
    proc = subprocess.Popen([sys.executable, "-m", "bon.run", "dataset.n_tasks=1000000000",
                             f"hydra.run.dir={tmp_path / 'o'}"], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    proc.kill()
    proc.wait()
    assert first.startswith("warning: dataset=sim with 1,000,000,000 tasks x 8 samples") and "GB" in first
