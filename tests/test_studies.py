"""The experiments/study_*.py scripts: each writes a readable PNG and a CSV with plausible numbers, quickly."""
from __future__ import annotations

import csv
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def study(name: str):
    return importlib.import_module(name)


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 20_000, f"{path} is suspiciously small ({len(data)} bytes)"


def read_csv(path: Path, columns: set[str]) -> list[dict[str, str]]:
    assert path.is_file(), f"{path} was not written"
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows, f"{path} is empty"
    assert columns <= set(rows[0]), f"{path} lacks columns {columns - set(rows[0])}"
    return rows


def num(value: str) -> float:
    return float(value) if value not in ("", None) else math.nan


def n_judges(root: Path) -> int:
    """The recorded judges the release holds (counted, never assumed)."""
    from bon.datasets.agentprocessbench import resolve_judges

    return len(resolve_judges(root, "all"))


def test_bootstrap_bands_match_bon_metrics_bootstrap_ci():
    from bon.metrics import bootstrap_bands, bootstrap_ci

    rng = np.random.default_rng(3)
    values = (rng.random((300, 2)) < [0.3, 0.7]).astype(float)
    low, high = bootstrap_bands(values, resamples=4000, seed=1)
    for i in range(2):
        ref = bootstrap_ci(values[:, i], n_resamples=4000, seed=1)
        assert low[i] == pytest.approx(ref[0], abs=0.012) and high[i] == pytest.approx(ref[1], abs=0.012)
    assert bootstrap_bands(np.full(20, 0.5)) == (0.5, 0.5)


@pytest.mark.parametrize("name", ["GPT-5.2-Thinking (medium) ", "it's", "a\\b", "ends\\", "x,y=z", "[1, 2]", "null",
                                  "${oops}", "42"])
def test_configs_are_composed_by_hydra_and_any_value_survives_the_override(name):
    from _common import compose, sim_configs

    dataset, generator, judge = sim_configs("hotpotqa", 3, 7, calibrate_from=name)
    assert judge["calibrate_from"] == name  # a string stays that string, whatever it holds
    assert (dataset["profile"], dataset["n_tasks"], generator["n"]) == ("hotpotqa", 7, 3)
    plain = compose("generator=sim", "judge=sim", "dataset=sim")  # the defaults `python -m bon.run` uses
    assert {k: v for k, v in judge.items() if k != "calibrate_from"} == \
        {k: v for k, v in plain["judge"].items() if k != "calibrate_from"}


def test_bootstrap_bands_leave_out_missing_entries_per_column():
    from bon.metrics import bootstrap_bands

    values = np.array([[1.0, np.nan, np.nan], [0.0, 0.25, np.nan], [1.0, 0.25, np.nan], [0.0, np.nan, np.nan]])
    low, high = bootstrap_bands(values, resamples=500)
    assert 0 <= low[0] < high[0] <= 1
    assert (low[1], high[1]) == (0.25, 0.25)  # a NaN never counts as 0: only the 0.25s are averaged
    assert np.isnan(low[2]) and np.isnan(high[2])  # no value at all: no interval


def test_a_root_that_is_not_a_release_is_named(apb_root, tmp_path, monkeypatch):
    from bon.datasets import locate_root
    from bon.errors import BonError

    assert locate_root(str(apb_root)) == Path(apb_root).resolve()
    monkeypatch.setenv("BON_DATA_DIR", str(tmp_path))  # set, but not a release: an error naming it, no download
    with pytest.raises(BonError, match=f"BON_DATA_DIR is {tmp_path}, which has no data/AnswerOnly/"):
        locate_root(None)
    with pytest.raises(BonError, match=f"--root is {tmp_path}, which has no data/AnswerOnly/"):
        locate_root(tmp_path, option="--root")


def test_best_of_k_writes_curves_for_sim_and_replay(apb_root, tmp_path, capsys):
    study("study_best_of_k").main(["--out", str(tmp_path), "--root", str(apb_root), "--tasks", "200", "--n", "6",
                                   "--resamples", "200", "--subset", "hotpotqa"])
    assert_png(tmp_path / "best_of_k.png")
    rows = read_csv(tmp_path / "best_of_k.csv", {"source", "dataset", "subset", "judge", "selector", "k",
                                                  "n_candidates", "n_tasks", "accuracy", "ci_low", "ci_high"})
    assert {r["source"] for r in rows} == {"sim", "replay"}
    for source, n in (("sim", 6), ("replay", 5)):
        mine = [r for r in rows if r["source"] == source]
        assert {int(r["k"]) for r in mine} == set(range(1, n + 1))
        assert "majority" in {r["selector"] for r in mine}  # hotpotqa has final answers
        at = {(r["selector"], int(r["k"])): num(r["accuracy"]) for r in mine}
        for r in mine:
            acc, low, high = num(r["accuracy"]), num(r["ci_low"]), num(r["ci_high"])
            assert 0 <= low <= acc <= high <= 100
        for s in {r["selector"] for r in mine}:  # with one candidate every selector is a random pick
            assert at[(s, 1)] == pytest.approx(at[("random", 1)], abs=1e-9)
            assert at[(s, n)] <= at[("pass_at_n", n)] + 1e-9
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "replay/hotpotqa" in out


def test_best_of_k_sim_half_needs_no_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BON_DATA_DIR", raising=False)
    monkeypatch.setenv("BON_APB_MIRROR", "http://127.0.0.1:9/nowhere")  # any attempt to fetch data would fail
    monkeypatch.setenv("BON_CACHE_DIR", str(tmp_path / "empty-cache"))  # ... even where a download is cached
    study("study_best_of_k").main(["--out", str(tmp_path), "--only", "sim", "--tasks", "100", "--n", "4",
                                   "--resamples", "100", "--selectors", "final,two_stage,random,pass_at_n"])
    assert_png(tmp_path / "best_of_k.png")
    rows = read_csv(tmp_path / "best_of_k.csv", {"source", "accuracy"})
    assert {r["source"] for r in rows} == {"sim"} and len(rows) == 4 * 4


def test_judge_quality_sweep_crossover_and_real_judges(apb_root, tmp_path, capsys):
    study("study_judge_quality").main(["--out", str(tmp_path), "--root", str(apb_root), "--tasks", "400",
                                       "--steps", "6", "--biases", "0,0.3", "--resamples", "100"])
    assert_png(tmp_path / "judge_quality.png")
    rows = read_csv(tmp_path / "judge_quality.csv", {"kind", "bias", "q", "judge", "step_acc", "selector", "accuracy"})
    kinds = {r["kind"] for r in rows}
    assert kinds == {"sweep", "sweep_diff", "sim_calibrated", "real_replay", "crossover"}
    for r in rows:
        if r["kind"] in ("sweep", "sim_calibrated", "real_replay"):
            assert 0 <= num(r["accuracy"]) <= 100 and 0 <= num(r["step_acc"]) <= 100
    sweep = [r for r in rows if r["kind"] == "sweep" and r["selector"] == "pos_ratio" and num(r["bias"]) == 0]
    acc = [num(r["step_acc"]) for r in sorted(sweep, key=lambda r: num(r["q"]))]
    assert acc == sorted(acc) and acc[0] < 40 and acc[-1] > 95  # q walks StepAcc from noise to near perfect
    final = {num(r["accuracy"]) for r in rows if r["kind"] == "sweep" and r["selector"] == "final"}
    assert len(final) == 1  # the ORM is held fixed, and every point shares its random numbers
    crossings = [r for r in rows if r["kind"] == "crossover"]
    assert sorted(num(r["bias"]) for r in crossings) == [0.0, 0.3]
    assert all(40 < num(r["step_acc"]) < 100 for r in crossings)
    for kind in ("sim_calibrated", "real_replay"):
        assert len({r["judge"] for r in rows if r["kind"] == kind}) == n_judges(apb_root)
    for r in rows:  # every real judge's accuracy has its interval
        if r["kind"] == "real_replay":
            assert num(r["ci_low"]) <= num(r["accuracy"]) <= num(r["ci_high"]) and num(r["ci_high"]) > num(r["ci_low"])
    assert "Crossover" in capsys.readouterr().out


def test_confusion_matrices_and_orm_accuracy(apb_root, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("BON_DATA_DIR", raising=False)
    before = dict(os.environ)
    study("study_confusion").main(["--out", str(tmp_path), "--root", str(apb_root)])
    assert dict(os.environ) == before  # --root reaches the data through the configs, not through BON_DATA_DIR
    assert_png(tmp_path / "confusion.png")
    assert_png(tmp_path / "stepacc_vs_orm.png")
    judges = read_csv(tmp_path / "judges.csv", {"judge", "step_acc", "orm_acc", "n_failed"})
    assert len(judges) == n_judges(apb_root)
    by = {r["judge"]: r for r in judges}
    assert num(by["GPT-5.2"]["step_acc"]) == pytest.approx(70.1, abs=0.1)  # the paper's Table 3 / README
    assert all(0 <= num(r["orm_acc"]) <= 100 for r in judges)
    cells = read_csv(tmp_path / "confusion.csv", {"judge", "human", "judge_label", "count", "row_share"})
    assert len(cells) == n_judges(apb_root) * 3 * 4
    totals: dict[tuple[str, str], float] = {}
    for r in cells:
        totals[(r["judge"], r["human"])] = totals.get((r["judge"], r["human"]), 0.0) + num(r["row_share"])
    assert all(v == pytest.approx(100.0) for v in totals.values())


def test_heatmap_gain_over_random(apb_root, tmp_path):
    study("study_heatmap").main(["--out", str(tmp_path), "--root", str(apb_root), "--resamples", "200"])
    assert_png(tmp_path / "heatmap.png")
    rows = read_csv(tmp_path / "heatmap.csv", {"selector", "judge", "n_tasks", "accuracy", "random", "gain_pp",
                                                "ci_low", "ci_high", "note"})
    assert len({r["judge"] for r in rows}) == n_judges(apb_root) + 1 and "human" in {r["judge"] for r in rows}
    for r in rows:
        assert 0 <= num(r["accuracy"]) <= 100
        assert num(r["gain_pp"]) == pytest.approx(num(r["accuracy"]) - num(r["random"]), abs=1e-6)
    majority = [r for r in rows if r["selector"] == "majority"]
    assert all(int(r["n_tasks"]) == 50 and "hotpotqa" in r["note"] for r in majority)
    human_final = next(r for r in rows if r["selector"] == "final" and r["judge"] == "human")
    oracle = next(r for r in rows if r["selector"] == "pass_at_n" and r["judge"] == "human")
    assert num(human_final["accuracy"]) == pytest.approx(num(oracle["accuracy"]))  # human final labels are the truth


def test_heatmap_leaves_vote_cells_blank_without_answers(apb_root, tmp_path):
    study("study_heatmap").main(["--out", str(tmp_path), "--root", str(apb_root), "--resamples", "100",
                                 "--subset", "gaia_dev", "--selectors", "final,majority,pass_at_n"])
    assert_png(tmp_path / "heatmap.png")
    rows = read_csv(tmp_path / "heatmap.csv", {"selector", "gain_pp", "note"})
    assert all(r["gain_pp"] == "" and r["note"].startswith("blank") for r in rows if r["selector"] == "majority")
    assert all(r["gain_pp"] != "" for r in rows if r["selector"] != "majority")


def test_scatter_labels_never_overlap_with_twenty_judges():
    """20 judges, two of them almost on the same point: every name is drawn and no two labels overlap."""
    from matplotlib.text import Text

    confusion = study("study_confusion")
    rng = np.random.default_rng(3)
    names = ["GPT-5.2-Chat ", "Gemini-3-Flash-Preview", "Kimi-K2.5-Thinking", "Llama-3.3-70B-Instruct", "Qwen3-8B",
             *(f"Judge-{i}.5 (v{i})" for i in range(15))]
    summary = [{"judge": n, "step_acc": float(60 + rng.normal(0, 5)), "orm_acc": float(65 + rng.normal(0, 5)),
                "subset": "all", "n_trajectories": 1000} for n in names]
    summary[1].update(step_acc=summary[0]["step_acc"] + 0.2, orm_acc=summary[0]["orm_acc"] + 0.3)
    fig = confusion.scatter_figure(summary)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text() in names]
    assert sorted(t.get_text() for t in labels) == sorted(names)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]
    frame = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (labels[i].get_text(), "overlaps another label")


def test_heatmap_colour_scale_fits_the_judges_cells():
    heatmap = study("study_heatmap")
    m = np.array([[35.5, 2.0, 19.0], [35.5, 35.5, 35.5]])  # rows: final, pass_at_n; columns: human, two judges
    norm, cmap, fitted = heatmap.colour_scale(m, ["final", "pass_at_n"], ["human", "a", "b"])
    assert (norm.vmin, norm.vmax, fitted) == (0.0, 19.0, True)  # no half-empty scale; human and pass@N saturate
    assert np.allclose(cmap(norm(0.0))[:3], (0.97, 0.97, 0.97), atol=0.03)  # zero gain is white
    norm, cmap, fitted = heatmap.colour_scale(np.array([[-4.0, 12.0]]), ["pos_ratio"], ["a", "b"])
    assert (norm.vmin, norm.vmax, fitted) == (-4.0, 12.0, False)
    assert np.allclose(cmap(norm(0.0))[:3], (0.97, 0.97, 0.97), atol=0.03)
    # one point of gain is the same step of colour on both sides: -4 is as red as +4 is blue
    red, blue = np.array(cmap(norm(-4.0))[:3]), np.array(cmap(norm(4.0))[:3])
    white = np.array(cmap(norm(0.0))[:3])
    assert np.linalg.norm(red - white) == pytest.approx(np.linalg.norm(blue - white), rel=0.25)
