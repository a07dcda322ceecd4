"""`python -m bon.report` on a real (small) multirun of bon.run, and its errors on bad input."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from commands import run_in_process

from bon import report
from bon.errors import BonError

SELECTORS = ("final", "two_stage")
JUDGES = ("GPT-5.2", "DeepSeek-V3.2")
SUBSET = "gaia_dev"


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def _report(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m bon.report` in this process (commands.py): the same exit code, stdout and stderr lines."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return run_in_process("bon.report", *args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def sweep(apb_root, tmp_path_factory) -> Path:
    """2 selectors x 2 judges on one subset, as `python -m bon.run -m` writes them (multirun/<job>/summary.json)."""
    tmp = tmp_path_factory.mktemp("report")
    proc = run_in_process("bon.run", "-m", "dataset=agentprocessbench", f"dataset.root={apb_root}", f"dataset.subset={SUBSET}",
                          f"selector={','.join(SELECTORS)}", f"judge.name={','.join(JUDGES)}", "bootstrap_resamples=999",
                          f"hydra.sweep.dir={tmp / 'multirun' / 'day' / 'time'}", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "multirun"


@pytest.fixture(scope="module")
def built(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_out") / "nested" / "out"
    proc = run_in_process("bon.report", str(sweep), "--out", str(out), cwd=sweep.parent)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _summaries(root: Path) -> dict[tuple[str, str], dict]:
    rows = [r for p in root.rglob("summary.json") for r in json.loads(p.read_text())["rows"]]
    return {(r["selector"], r["judge"]): r for r in rows}


def _header(summary_path: Path) -> dict:
    """The fields of a summary besides its rows (schema, kind, confidence, seed), to write a summary of one's own."""
    data = json.loads(summary_path.read_text())
    return {k: data[k] for k in ("schema", "kind", "confidence", "seed")}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def test_csv_has_one_line_per_selector_and_judge_with_the_summaries_accuracies(sweep, built):
    out, _ = built
    summaries = _summaries(sweep)
    assert set(summaries) == {(s, j) for s in SELECTORS for j in JUDGES}
    with (out / "report_long.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == 4 and {line["row_kind"] for line in lines} == {"run"}
    assert {(line["selector"], line["judge"]) for line in lines} == set(summaries)
    for line in lines:
        s = summaries[(line["selector"], line["judge"])]
        assert line["subset"] == SUBSET and line["dataset"] == "agentprocessbench"
        for key in ("accuracy", "accuracy_expected", "ci_low", "ci_high", "pass_at_n", "random"):
            assert line[key] == _pct(s[key]), key
            assert float(line[key]) == pytest.approx(100 * s[key], abs=0.05)
        assert int(line["n_tasks"]) == s["n_tasks"] == 50
        assert int(line["judge_failed"]) == s["judge_failed"]
        assert (sweep / line["source"]).is_file()


def test_report_csv_is_wide_like_table4(sweep, built):
    out, _ = built
    summaries = _summaries(sweep)
    with (out / "report.csv").open() as fh:
        reader = csv.DictReader(fh)
        lines = list(reader)
    assert reader.fieldnames == ["selector", *(f"{j} / {SUBSET}" for j in JUDGES)]
    assert [line["selector"] for line in lines] == list(SELECTORS)
    for line in lines:
        for judge in JUDGES:
            assert line[f"{judge} / {SUBSET}"] == _pct(summaries[(line["selector"], judge)]["accuracy"])


def _table_after(lines: list[str], header: str) -> list[str]:
    """The body lines of the Markdown table that starts with `header`."""
    body = []
    for line in lines[lines.index(header) + 2:]:
        if not line.startswith("|"):
            break
        body.append(line)
    return body


def test_markdown_has_selector_rows_and_judge_columns(sweep, built):
    out, proc = built
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| selector |"))
    # columns: judge / subset, judges in the order they were swept
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [f"{j} / {SUBSET}" for j in JUDGES]
    summaries = _summaries(sweep)
    table = _table_after(lines, header)
    body = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in table}
    assert len(body) == len(table) == 4
    assert list(body)[:4] == ["random (expected)", "final", "two_stage", "pass@N (oracle)"]
    # the headline table is the tie-aware expectation, its interval the best-of-k curve's at k = N
    for selector in SELECTORS:
        for cell, judge in zip(body[selector], JUDGES):
            s = summaries[(selector, judge)]
            bok = s["best_of_k"]
            assert bok["k"][-1] == 5 and bok["accuracy"][-1] == pytest.approx(s["accuracy_expected"])
            assert cell == f"{_pct(s['accuracy_expected'])} [{_pct(bok['ci_low'][-1])}, {_pct(bok['ci_high'][-1])}]"
    assert body["random (expected)"] == [_pct(summaries[("final", j)]["random"]) for j in JUDGES]
    assert "Tie-aware expected selection accuracy" in md and "95% bootstrap" in md
    # then the deterministic pick, labelled as such
    assert md.index("## Deterministic pick") > md.index(header)
    section = lines[lines.index("## Deterministic pick (ties to the lowest sample index)"):]
    det = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
           for line in _table_after(section, header)}
    for selector in SELECTORS:
        for cell, judge in zip(det[selector], JUDGES):
            s = summaries[(selector, judge)]
            assert cell == f"{_pct(s['accuracy'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]"
    # best-of-k table: k=1..5 per selector and judge, k=N equal to the expected accuracy
    bok_header = next(line for line in lines if line.startswith("| selector | judge | subset | method |"))
    assert bok_header.rstrip(" |").endswith("k=5")
    bok = _table_after(lines, bok_header)
    assert len(bok) == 4
    final_gpt = next(line for line in bok if line.startswith("| final | GPT-5.2 |"))
    assert final_gpt.rstrip(" |").endswith(_pct(summaries[("final", "GPT-5.2")]["accuracy_expected"]))
    # stdout: the table and the paths written
    assert header in proc.stdout
    for name in ("report.csv", "report_long.csv", "report.md", "report.png"):
        assert f"wrote {out / name}" in proc.stdout


def test_png_is_a_real_figure(built):
    out, _ = built
    png = out / "report.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    height, width = pixels.shape[:2]
    assert width >= 1000 and height >= 500
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    assert len({tuple(p) for p in pixels[::7, ::7, :3].reshape(-1, 3).round(2).tolist()}) > 50  # colours drawn


def test_out_defaults_to_the_input_directory(sweep, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(sweep, root)
    paths = report.build(root)
    assert {p.parent for p in paths.values()} == {root}
    assert all(p.is_file() for p in paths.values())
    assert "| final |" in capsys.readouterr().out


def _with_tables(dest: Path, jobs: list[Path]) -> None:
    """The jobs' candidates/selections tables, concatenated into `dest` (as one run with their rows writes them)."""
    import polars as pl

    for name in report.RUN_FILES:
        pl.concat([pl.read_parquet(job / name) for job in jobs]).write_parquet(dest / name)


def test_several_rows_per_summary_are_all_reported(sweep, tmp_path):
    """judge.name=all writes one summary with a row per judge."""
    jobs = [p.parent for p in sorted(sweep.rglob("summary.json"))
            if json.loads(p.read_text())["rows"][0]["selector"] == "final"]
    rows = [r for job in jobs for r in json.loads((job / "summary.json").read_text())["rows"]]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**_header(jobs[0] / "summary.json"), "rows": rows}))
    _with_tables(tmp_path / "run", jobs)
    records = report.csv_records(report.collect(tmp_path))
    assert [(r["selector"], r["judge"]) for r in records] == [("final", j) for j in JUDGES]


def test_pooled_run_adds_per_subset_lines(sweep, tmp_path):
    first = next(sweep.rglob("summary.json"))
    row = json.loads(first.read_text())["rows"][0]
    _with_tables(tmp_path, [first.parent])
    row |= {"subset": "all", "by_subset": {
        "hotpotqa": {"n_tasks": 50, "accuracy": 0.76, "accuracy_expected": 0.775, "pass_at_n": 0.9, "random": 0.652},
        "gaia_dev": {"n_tasks": 50, "accuracy": 0.52, "accuracy_expected": 0.518, "pass_at_n": 0.7, "random": 0.332}}}
    (tmp_path / "summary.json").write_text(json.dumps({**_header(first), "rows": [row]}))
    records = report.csv_records(report.collect(tmp_path))
    assert [(r["subset"], r["row_kind"]) for r in records] == [("all", "run"), ("hotpotqa", "by_subset"),
                                                               ("gaia_dev", "by_subset")]
    assert records[1]["accuracy"] == "76.0" and records[1]["ci_low"] == "" and records[2]["n_tasks"] == "50"
    md, _ = report.markdown(report.collect(tmp_path))
    assert "## Per-subset breakdown" in md


def test_selector_order_puts_random_first_and_oracles_last():
    rows = [{"selector": s, "oracle": s == "pass_at_n"} for s in
            ("pass_at_n", "majority", "two_stage", "clean_prefix", "final", "random", "pos_ratio", "pos_count")]
    assert report.selector_order(rows) == ["random", "final", "pos_count", "pos_ratio", "two_stage",
                                           "clean_prefix", "majority", "pass_at_n"]


def _user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_directory_without_summaries_exits_2_naming_it(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    _user_error(_python("-m", "bon.report", str(empty), cwd=tmp_path), str(empty), "summary.json")
    _user_error(_report(str(tmp_path / "missing"), cwd=tmp_path), str(tmp_path / "missing"))
    assert not (empty / "report.md").exists()


def test_duplicate_results_name_both_files(sweep, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(sweep, root / "first")
    job = next(p.parent for p in sorted((root / "first").rglob("summary.json")))
    shutil.copytree(job, root / "second" / "0")
    proc = _report(str(root), cwd=tmp_path)
    _user_error(proc, "duplicate", str(job / "summary.json"), str(root / "second" / "0" / "summary.json"))
    assert not (root / "report.csv").exists()


HEADER = '"schema": 1, "kind": "selection", "confidence": 0.95, "seed": 0'


@pytest.mark.parametrize("content, needle", [
    ('{"rows": [{"selector": "final"', "malformed"),
    ('[1, 2]', "expected a JSON object"),
    ('{' + HEADER + ', "rows": []}', "non-empty"),
    ('{' + HEADER + ', "rows": [{"selector": "final", "judge": "GPT-5.2"}]}', "missing dataset"),
    ('{"rows": [{"selector": "final", "judge": "GPT-5.2"}]}', "no schema field: written by an older bon"),
    ('{"schema": 99, "kind": "selection", "rows": [{}]}', "schema 99"),
    ('{"schema": 1, "kind": "selection", "confidence": 95, "seed": 0, "rows": [{}]}', "confidence"),
])
def test_malformed_summary_names_the_file(tmp_path, content, needle):
    path = tmp_path / "run" / "summary.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(BonError, match=needle) as info:
        report.collect(tmp_path)
    assert str(path) in str(info.value)


def test_malformed_summary_exits_2(sweep, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(sweep, root)
    path = next(root.rglob("summary.json"))
    summary = json.loads(path.read_text())
    summary["rows"][0]["accuracy"] = "high"
    path.write_text(json.dumps(summary))
    _user_error(_report(str(root), cwd=tmp_path), str(path), "accuracy")


def test_summary_from_an_older_bon_exits_2_naming_file_and_field(sweep, tmp_path):
    """A summary without a schema version (written before summaries had one) is refused, not half-read."""
    root = tmp_path / "root"
    shutil.copytree(sweep, root)
    path = next(root.rglob("summary.json"))
    summary = json.loads(path.read_text())
    del summary["schema"]
    path.write_text(json.dumps(summary))
    _user_error(_report(str(root), cwd=tmp_path), str(path), "schema")


def test_bad_count_names_the_row_and_field(sweep, tmp_path):
    path = next(sweep.rglob("summary.json"))
    summary = json.loads(path.read_text())
    summary["rows"][0]["n_candidates"] = -3
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(BonError, match=r"rows\[0\]\.n_candidates must be a non-negative integer, got -3"):
        report.load_rows(tmp_path / "summary.json")


def test_interval_level_comes_from_the_summary_not_the_hydra_config(sweep, tmp_path):
    """The run's confidence travels in summary.json: the report states it even without .hydra/ beside it,
    and a .hydra/config.yaml that says otherwise is not consulted."""
    root = tmp_path / "root"
    shutil.copytree(sweep, root)
    for path in root.rglob("summary.json"):
        summary = json.loads(path.read_text())
        summary["confidence"] = 0.9
        path.write_text(json.dumps(summary))
    first_job = next(p.parent for p in root.rglob("summary.json"))
    shutil.rmtree(first_job / ".hydra")
    md, _ = report.markdown(report.collect(root))
    assert "with 90% bootstrap intervals" in md and "95%" not in md


def test_not_applicable_cells_show_na_and_do_not_break_the_report(apb_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_in_process("bon.run", "-m", "dataset=agentprocessbench", f"dataset.root={apb_root}", "selector=majority,final",
                          "dataset.subset=gaia_dev", "bootstrap_resamples=999", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = run_in_process("bon.report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    md = (sweep / "report.md").read_text()
    majority_line = next(line for line in md.splitlines() if line.startswith("| majority"))
    assert "n/a" in majority_line
    assert (sweep / "report.png").stat().st_size > 10_000


def test_a_selector_that_left_tasks_out_of_its_accuracy_is_reported(apb_root, tmp_path):
    """majority over subset=all scores only the tasks with final answers (hotpotqa's), yet candidates.parquet keeps
    every candidate: the report takes the run as written, and still refuses that table cut short."""
    sweep = tmp_path / "sweep"
    proc = run_in_process("bon.run", "-m", "dataset=agentprocessbench", f"dataset.root={apb_root}", "selector=majority",
                          "dataset.subset=all", "judge.name=GPT-5.2", "bootstrap_resamples=999",
                          f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert "evaluated only on tasks with final answers" in summary["note"]
    assert summary["n_candidates"] < summary["table_rows"] == 1000  # 250 scored, 1,000 written
    report = _report(str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    _drop_rows(sweep / "0" / "candidates.parquet")
    _user_error(_report(str(sweep), cwd=tmp_path), "candidates.parquet has 10 rows", "counts 1000 candidates")


def test_paired_comparison_against_final_matches_the_summaries(sweep, built):
    out, _ = built
    summaries = _summaries(sweep)
    text = (out / "report.md").read_text()
    md = text[text.index("## Paired comparison"):].splitlines()
    for judge in JUDGES:
        line = next(l for l in md if l.startswith(f"| two_stage | {judge} | {SUBSET} |"))
        diff = 100 * (summaries[("two_stage", judge)]["accuracy"] - summaries[("final", judge)]["accuracy"])
        assert f"{diff:+.1f} [" in line


def _copy(sweep: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "root"
    shutil.copytree(sweep, root)
    return root, sorted((p.parent for p in root.rglob("summary.json")), key=report._natural_key)


def test_failed_and_unstarted_jobs_are_named_not_silently_left_out(sweep, tmp_path):
    root, jobs = _copy(sweep, tmp_path)
    failed = jobs[1]
    for name in ("summary.json", *report.RUN_FILES):  # a job that died before writing anything
        (failed / name).unlink()
    shutil.rmtree(jobs[3])  # a job Hydra never started: multirun.yaml lists 4 jobs
    proc = _report(str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    overrides = " ".join(yaml.safe_load((failed / ".hydra/overrides.yaml").read_text()))
    assert "MISSING: 2 job(s)" in proc.stderr and str(failed) in proc.stderr and overrides in proc.stderr
    assert f"{jobs[3]} (never started)" in proc.stderr
    md = (root / "report.md").read_text()
    assert md.index("MISSING: 2 job(s)") < md.index("| selector |")  # above the table, not in a footnote
    assert "MISSING" in proc.stdout  # the printed table carries it too


def test_complete_sweep_reports_nothing_missing(sweep, built):
    assert report.missing_jobs(sweep) == []
    assert "MISSING" not in built[1].stdout + built[1].stderr


def _drop_rows(path: Path) -> None:
    import polars as pl

    pl.read_parquet(path).head(10).write_parquet(path)


@pytest.mark.parametrize("damage, needles", [
    (lambda job: (job / "candidates.parquet").unlink(), ["candidates.parquet is missing"]),
    (lambda job: (job / "selections.parquet").write_bytes(b"PAR1 truncated"), ["selections.parquet is unreadable"]),
    (lambda job: _drop_rows(job / "selections.parquet"), ["selections.parquet has 10 rows", "counts 50 tasks"]),
    (lambda job: _drop_rows(job / "candidates.parquet"), ["candidates.parquet has 10 rows", "counts 250 candidates"]),
])
def test_run_directory_with_inconsistent_files_is_refused(sweep, tmp_path, damage, needles):
    root, jobs = _copy(sweep, tmp_path)
    damage(jobs[2])
    proc = _report(str(root), cwd=tmp_path)
    _user_error(proc, str(jobs[2]), *needles)
    assert not (root / "report.md").exists()


def _synthetic_rows(judges: list[str], selectors: list[str]) -> list[dict]:
    rows = []
    for j, judge in enumerate(judges):
        for i, selector in enumerate(selectors):
            expected = 0.3 + 0.01 * j + 0.05 * (i > 0)  # pos_ratio and two_stage identical: both must show
            rows.append({"dataset": "d", "subset": "s", "judge": judge, "selector": selector, "oracle": False,
                         "note": "", "n_tasks": 50, "accuracy": expected - 0.1, "accuracy_expected": expected,
                         "ci_low": 0.0, "ci_high": 1.0, "random": 0.3, "pass_at_n": 0.8,
                         "best_of_k": {"k": [1, 5], "accuracy": [0.3, expected], "ci_low": [0.2, expected - 0.1],
                                       "ci_high": [0.4, expected + 0.1]},
                         "vs_final": None if selector == "final" else {"diff": 0.05, "ci_low": 0.01, "ci_high": 0.09}})
    return rows


def test_report_figure_shows_every_judge_tie_aware_with_the_difference_from_final():
    from bon import plots

    judges = [f"Judge-{j}.5 (v{j}) " for j in range(20)]  # spaces, dots, parentheses, a trailing space
    selectors = ["final", "pos_ratio", "two_stage"]
    fig = plots.accuracy_figure(_synthetic_rows(judges, selectors), selectors=selectors, judges=judges,
                                subsets=["s"])
    accuracy, difference = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in accuracy.get_yticklabels()] == judges  # all 20, none dropped
    points = {i: list(zip(c.lines[0].get_xdata(), c.lines[0].get_ydata())) for i, c in enumerate(accuracy.containers)}
    assert len(points) == 3 and all(len(p) == 20 for p in points.values())
    # x is the tie-aware expectation, not the deterministic accuracy
    assert [x for x, _ in points[0]] == pytest.approx([100 * (0.3 + 0.01 * j) for j in range(20)])
    # identical selectors are drawn apart (dodged), not on top of each other
    assert all(abs(a[1] - b[1]) > 0.1 for a, b in zip(points[1], points[2]))
    assert [x for x, _ in points[1]] == [x for x, _ in points[2]]
    # the paired difference panel: one series per selector other than final, at the difference
    diffs = [list(c.lines[0].get_xdata()) for c in difference.containers]
    assert len(diffs) == 2 and all(x == pytest.approx([5.0] * 20) for x in diffs)


def test_a_selector_scored_on_fewer_tasks_says_so_in_the_legends(tmp_path):
    # majority over subset=all scores only the tasks with final answers: its points are over other tasks
    from bon import plots

    selectors = ["final", "majority"]
    rows = _synthetic_rows(["J"], selectors)
    rows[1]["n_tasks"] = 20
    fig = plots.accuracy_figure(rows, selectors=selectors, judges=["J"], subsets=["s"])
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels[:2] == ["final", "majority (20 of 50 tasks)"]
    (path,) = plots.best_of_k_figures(rows, tmp_path, selectors=selectors, judges=["J"], subsets=["s"])
    assert path.exists()
    # all the tasks of the subsets it applies to: no note (majority on hotpotqa only, not on bfcl)
    other = [dict(r, subset="t") for r in _synthetic_rows(["J"], ["final"])]
    assert plots._fewer_tasks(_synthetic_rows(["J"], selectors) + other, selectors) == {}


def test_each_selector_keeps_its_colour_in_the_compute_figure(tmp_path, monkeypatch):
    # report_compute.png draws only the selectors with a cost; each must look as it does in report.png
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    from bon import plots

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    selectors = ["final", "pos_ratio", "two_stage"]
    rows = _synthetic_rows(["J"], selectors)
    for r in rows[1:]:
        r["compute"] = {"per_task": {"tokens": 1000.0}, "per_sample": {"tokens": 200.0}}
    plots.compute_figure(rows, tmp_path / "c.png", selectors=selectors)
    legend = saved[0].axes[-1].get_legend()
    drawn = {t.get_text(): to_hex(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles)}
    report = plots._colours(selectors)
    assert drawn == {s: to_hex(report[s]) for s in ("pos_ratio", "two_stage")}


def test_tie_aware_difference_from_final_is_the_mean_paired_expected_success(sweep, built):
    """Recomputed from the selections tables: mean over tasks of expected(two_stage) - expected(final)."""
    import polars as pl

    out, _ = built
    frames = pl.concat([pl.read_parquet(p) for p in sweep.rglob("selections.parquet")])
    md = (out / "report.md").read_text()
    section = md[md.index("## Paired comparison"):].splitlines()
    for judge in JUDGES:
        mine = frames.filter(pl.col("judge") == judge).pivot(on="selector", index="task_id", values="expected")
        diff = 100 * (mine["two_stage"] - mine["final"]).mean()
        line = next(l for l in section if l.startswith(f"| two_stage | {judge} | {SUBSET} |"))
        assert line.split("|")[5].strip().startswith(f"{diff:+.1f} [")
    assert (out / f"report_best_of_k_{SUBSET}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_pick_without_a_best_of_k_curve_keeps_its_own_interval():
    """A comparing judge's pick (list-wise, pairwise) has no best-of-k curve: report.png, the tie-aware column and
    the compute table show the pick's own interval, not a bare point."""
    from bon.plots import tie_aware

    row = {"accuracy_expected": 0.69, "ci_low": 0.64, "ci_high": 0.74, "best_of_k": None}
    assert tie_aware(row) == (0.69, 0.64, 0.74)
    curve = {"k": [1, 2], "accuracy": [0.5, 0.7], "ci_low": [0.4, 0.6], "ci_high": [0.6, 0.8]}
    assert tie_aware({**row, "accuracy_expected": 0.7, "best_of_k": curve}) == (0.7, 0.6, 0.8)
    assert tie_aware({**row, "best_of_k": curve}) == (0.69, None, None)  # a curve that is not this expectation
