"""The label cache and the columnar scoring of recorded judges give exactly what parsing and Judgements give."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bon_error import bon_error

from bon import prm_eval
from bon.datasets import agentprocessbench as apb
from bon.datasets import apb_cache
from bon.metrics import PrmScore, StepTable

COUNTS = ("n_steps", "n_step_correct", "n_trajectories", "n_first_error_correct", "n_failed",
          "n_first_error_strict_correct")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty label cache of this test's own, and no label file or record remembered in the process."""
    monkeypatch.setenv("BON_CACHE_DIR", str(tmp_path / "user-cache"))
    _forget()
    yield apb_cache.cache_dir()
    _forget()


def _forget() -> None:
    for memo in (apb.load_records, apb.load_judge, apb.trajectories, apb.human_columns):
        memo.cache_clear()


def _object_path(root: Path, judge: str, subset: str) -> PrmScore:
    """Today's reference path: a Judgement per record (parsed, never from the cache), scored one by one."""
    records = apb.load_records(root, subset)
    return StepTable.build([(r.steps, r.human) for r in records]).score(apb.judgements_for(root, judge, records))


def _columnar(root: Path, judge: str, subset: str) -> dict[str, dict[str, PrmScore]]:
    return prm_eval.score({"name": "agentprocessbench", "subset": subset, "root": str(root)},
                          {"kind": "replay", "name": judge})


def _assert_same(got: PrmScore, want: PrmScore, what: str) -> None:
    assert {c: getattr(got, c) for c in COUNTS} == {c: getattr(want, c) for c in COUNTS}, what
    assert np.array_equal(got.confusion, want.confusion), what
    assert (got.first_err_acc, got.first_err_acc_strict) == (want.first_err_acc, want.first_err_acc_strict), what


def _no_parsing(monkeypatch) -> None:
    """From here on, reading a label file fails the test: every label must come from the cache."""
    def refuse(path):
        raise AssertionError(f"parsed {path} although its labels are cached")
    monkeypatch.setattr(apb, "_read", refuse)


def test_every_recorded_judge_scores_the_same_cold_and_warm_as_judgement_by_judgement(apb_root, cache, monkeypatch):
    cold = _columnar(apb_root, "all", "all")
    entries = sorted(cache.iterdir())
    assert len(entries) == len(apb.judge_dirs(apb_root)) * len(apb.SUBSETS) + len(apb.SUBSETS)  # + human labels
    assert not [e for e in entries if e.suffix != ".bin"], "a temporary file was left behind"
    _forget()
    with monkeypatch.context() as m:
        _no_parsing(m)
        warm = _columnar(apb_root, "all", "all")
    assert list(cold) == list(warm) == list(apb.judge_dirs(apb_root))
    for judge in apb.judge_dirs(apb_root):
        for subset in apb.SUBSETS:
            want = _object_path(apb_root, judge, subset)
            _assert_same(cold[judge][subset], want, f"{judge} {subset} (cache empty)")
            _assert_same(warm[judge][subset], want, f"{judge} {subset} (from the cache)")
        _assert_same(warm[judge]["avg"], sum((cold[judge][s] for s in apb.SUBSETS), PrmScore()), judge)


def test_human_labels_score_perfectly_from_the_cache(apb_root, cache, monkeypatch):
    human = {"kind": "human"}
    dataset = {"name": "agentprocessbench", "subset": "all", "root": str(apb_root)}
    cold = prm_eval.score(dataset, human)["human"]["avg"]
    _forget()
    with monkeypatch.context() as m:
        _no_parsing(m)
        warm = prm_eval.score(dataset, human)["human"]["avg"]
    for pooled in (cold, warm):
        assert pooled.n_step_correct == pooled.n_steps == 8509 and pooled.n_first_error_correct == 1000
        assert pooled.n_failed == 0 and pooled.confusion[:, 3].sum() == 0


# --- a small synthetic release (cached too: MIN_BYTES is lowered) with every case the columns must carry ----

def _write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


HUMAN = {  # record -> step labels; 3 and 4 hold an error, 5 has none
    "t:0:0": {"2": 1, "4": 1, "6": 1}, "t:0:1": {"2": 1, "4": -1, "6": -1}, "t:1:0": {"2": 0, "4": -1},
    "t:1:1": {"2": 1, "4": 1}, "t:2:0": {"2": -1, "4": 1, "6": 0, "8": -1}, "t:2:1": {"2": 1, "4": 0},
}
JUDGED = [  # step_labels, final_label, comment
    ("t:0:0", {"2": 1, "4": 1, "6": 1}, 1, ""),  # all right
    ("t:0:1", {"2": 1, "4": None, "6": -1}, -1, "a null label: its first -1 is at 6"),
    ("t:1:0", {"2": -1, "4": -1}, -1, "llm_annotate_failed: timeout after 3 tries"),  # failed: labels never scored
    # t:1:1 never judged
    ("t:2:0", {"1": -1, "2": 1, "4": 1}, 0, None),  # a -1 on a step no human labelled; step 6 and 8 unlabelled
    ("t:2:1", {"02": 0, "2": 1, "4": 0}, None, ""),  # "02" and "2" are one message index: the later label counts
    ("other:9:9", {"2": 1}, 1, "a record of no human-labelled trajectory"),
]


@pytest.fixture(params=["checked at once", "checked record by record"])
def release(request, tmp_path, cache, monkeypatch) -> Path:
    """The release; in its second form a final_label of 0.0 (accepted, as 0) sends the judge file through the
    record-by-record reading."""
    monkeypatch.setattr(apb_cache, "MIN_BYTES", 0)
    odd_final = 0 if request.param == "checked at once" else 0.0
    root = tmp_path / "release"
    _write(root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl",
           [{"record_id": rid, "query_index": i // 2, "sample_index": i % 2, "step_labels": labels,
             "final_label": -1 if -1 in labels.values() else 1} for i, (rid, labels) in enumerate(HUMAN.items())])
    _write(root / "eval" / "results" / "J " / "hotpotqa__blind_j.jsonl",
           [{"record_id": rid, "step_labels": labels, "final_label": final, "comment": comment, "explanations": "..."}
            for rid, labels, final, comment in JUDGED[:3]] + [{"record_id": JUDGED[3][0], "step_labels": JUDGED[3][1],
                                                              "final_label": odd_final}] +
           [{"record_id": rid, "step_labels": labels, "final_label": final, "comment": comment}
            for rid, labels, final, comment in JUDGED[4:]])
    return root


def test_failed_unjudged_null_unlabelled_and_repeated_labels_score_as_judgements_do(release, cache, monkeypatch):
    want = _object_path(release, "J", "hotpotqa")
    # worked out by hand: 2 failed (a failed call, a record never judged); steps right 3 + 2 + 0 + 0 + 1 + 2;
    # first errors right on t:0:0, t:1:1 and t:2:1; under the strict reading not on t:1:1 (never judged)
    assert (want.n_failed, want.n_steps, want.n_step_correct) == (2, 16, 8)
    assert (want.n_first_error_correct, want.n_first_error_strict_correct) == (3, 2)
    cold = _columnar(release, "J", "hotpotqa")["J"]["hotpotqa"]
    assert len(list(cache.iterdir())) == 2  # the judge file and the human labels
    _forget()
    with monkeypatch.context() as m:
        _no_parsing(m)
        warm = _columnar(release, "J", "hotpotqa")["J"]["hotpotqa"]
    _assert_same(cold, want, "cache empty")
    _assert_same(warm, want, "from the cache")


def test_cached_columns_hold_what_the_file_says(release, cache):
    path = release / "eval" / "results" / "J " / "hotpotqa__blind_j.jsonl"
    cold = apb.judge_columns(release, "J", "hotpotqa")
    warm = apb.judge_columns(release, "J", "hotpotqa")
    for columns in (cold, warm):
        assert columns.record_ids == [rid for rid, *_ in JUDGED]
        assert columns.failed.tolist() == [False, False, True, False, False, False]
        assert columns.reasons == ["timeout after 3 tries"]
        assert columns.finals.tolist() == [1, -1, -1, 0, 0, 1]
        judged = apb.load_judge(release, "J", "hotpotqa")
        for i, rid in enumerate(columns.record_ids):
            labels = dict(zip(columns.keys[columns.offsets[i]:columns.offsets[i + 1]].tolist(),
                              columns.codes[columns.offsets[i]:columns.offsets[i + 1]].tolist()))
            assert labels == {k: {-1: 0, 0: 1, 1: 2, None: 3}[v] for k, v in judged[rid].step_labels.items()}, rid
    assert apb_cache._entry_path(apb_cache._identity([path])).exists()


def test_a_changed_file_is_read_again_and_bad_input_still_names_its_line(release, cache):
    before = _columnar(release, "J", "hotpotqa")["J"]["hotpotqa"]
    path = release / "eval" / "results" / "J " / "hotpotqa__blind_j.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:1]) + '{"record_id": "t:0:1", "step_labels": {"2": 7}}\n' + "".join(lines[2:]),
                    encoding="utf-8")
    _forget()
    message = bon_error(lambda: _columnar(release, "J", "hotpotqa"))
    assert f"{path}:2" in message and "labels must be -1, 0 or 1" in message
    path.write_text("".join(lines[:1]), encoding="utf-8")  # now only the first record is judged
    _forget()
    after = _columnar(release, "J", "hotpotqa")["J"]["hotpotqa"]
    _assert_same(after, _object_path(release, "J", "hotpotqa"), "rewritten file")
    assert after.n_failed == 5 != before.n_failed


def test_changed_trajectories_invalidate_the_cached_human_labels(release, cache):
    trajectories = _write(release / "data" / "AgentProcessBench" / "hotpotqa.jsonl",
                          [{"data_source": "t", "query_index": i // 2, "sample_index": i % 2, "messages": []}
                           for i in range(len(HUMAN))])
    _columnar(release, "J", "hotpotqa")
    trajectories.write_bytes(trajectories.read_bytes() + b'{"data_source": "t"}\n')
    _forget()
    message = bon_error(lambda: _columnar(release, "J", "hotpotqa"))
    assert f"{trajectories}:{len(HUMAN) + 1}" in message and "query_index" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "flipped byte", "other format"])
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path, cache, monkeypatch, damage):
    source = _write(tmp_path / "labels.jsonl", [{"x": 1}])
    monkeypatch.setattr(apb_cache, "MIN_BYTES", 0)
    columns = apb_cache.LabelColumns.from_labels(["a", "b\nc", "é"], [{2: 1, 4: None}, {}, {3: -1}], [1, None, -1],
                                                 [None, "timeout", None])
    builds = []

    def build():
        builds.append(1)
        return columns

    apb_cache.cached([source], build)
    entry = apb_cache._entry_path(apb_cache._identity([source]))
    data = entry.read_bytes()
    if damage == "garbage":
        data = b"\x00\xff" * 100
    elif damage == "truncated":
        data = data[:-3]
    elif damage == "empty":
        data = b""
    elif damage == "flipped byte":
        at = data.index(b'"b\\nc"') + 1
        data = data[:at] + b"B" + data[at + 1:]  # a record id changed, the checksum no longer matches
    else:
        monkeypatch.setattr(apb_cache, "FORMAT", apb_cache.FORMAT + 1)
    entry.write_bytes(data)
    got = apb_cache.cached([source], build)
    assert len(builds) == 2
    assert got.record_ids == columns.record_ids and got.reasons == ["timeout"]
    assert got.keys.tolist() == [2, 4, 3] and got.codes.tolist() == [2, 3, 0] and got.failed.tolist() == [0, 1, 0]
    again = apb_cache.cached([source], build)  # the rewritten entry is used
    assert len(builds) == 2 and again.record_ids == columns.record_ids


def test_an_unusable_cache_directory_is_no_error(tmp_path, monkeypatch, release):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("BON_CACHE_DIR", str(blocked))
    _forget()
    got = _columnar(release, "J", "hotpotqa")["J"]["hotpotqa"]
    _assert_same(got, _object_path(release, "J", "hotpotqa"), "no cache")


def test_score_labels_matches_score_on_random_judgements():
    """The array lookup against the Judgement lookup, on judges that label any mix of steps, others and nulls."""
    from bon.types import Judgement

    rng = np.random.default_rng(0)
    trajectories, judged = [], []
    for _ in range(300):
        steps = sorted(rng.choice(40, size=int(rng.integers(0, 8)), replace=False).tolist())
        trajectories.append((steps, Judgement("human", {s: int(rng.choice([-1, 0, 1])) for s in steps}, None)))
        keys = rng.choice(40, size=int(rng.integers(0, 10)), replace=False).tolist()
        labels = {k: [-1, 0, 1, None][int(rng.integers(0, 4))] for k in keys}
        judged.append(Judgement("j", labels, None, status="failed" if rng.random() < 0.1 else "ok"))
    table = StepTable.build(trajectories)
    columns = apb_cache.LabelColumns.from_judgements((str(i), j) for i, j in enumerate(judged))
    ids = [str(i) for i in range(len(judged))]
    ids[7] = "never judged"
    judged[7] = Judgement("j", status="failed")
    _assert_same(table.score_labels(*columns.for_records(ids)), table.score(judged), "random")
