"""Records on disk: one serializer per record kind (bon.records) and the resumable judgement store."""
from __future__ import annotations

import json
import logging

import pytest

from bon import records
from bon.errors import BonError
from bon.generators.store import load as load_trajectories
from bon.judges.llm import LLMJudge
from bon.judges.store import JudgementStore, load, reusable, write
from bon.llm import LLMClient
from bon.types import Judgement, Trajectory

MESSAGES = ({"role": "user", "content": "Wie viel ist 6×7?"},
            {"role": "assistant", "content": "42"},
            {"role": "assistant", "content": "FINAL ANSWER: 42"})


def traj(task_id: str = "t1", sample: int = 0) -> Trajectory:
    return Trajectory(task_id, sample, MESSAGES, answer="42", success=True, metadata={"stop_reason": "answer"})


def judged(final: int = 1, **kw) -> Judgement:
    return Judgement("local", {1: 1, 2: None}, final, raw='```json\n{"final": 1}\n```', **kw)


FAILED = Judgement("local", status="failed", reason="api: bad_request")


def through_json(record: dict) -> dict:
    return json.loads(records.dumps(record))


def test_trajectories_and_judgements_round_trip_through_json_with_their_schema():
    t = traj()
    r = through_json(records.trajectory_to_record(t))
    assert r["schema"] == "bon.trajectory/1" and records.trajectory_from_record(r, "x") == t
    for j in (judged(), judged(-1), FAILED):
        r = through_json(records.judgement_to_record(j, task_id="t1", sample=3))
        assert r["schema"] == "bon.judgement/1" and (r["task_id"], r["sample"]) == ("t1", 3)
        assert records.judgement_from_record(r, "x") == j  # step indices come back as ints


def test_records_written_before_versioning_are_still_read():
    old_judgement = {"task_id": "t1", "sample": 0, "judge": "local", "step_labels": {"1": 1, "3": -1},
                     "final_label": -1, "status": "ok", "reason": "", "raw": "..."}  # today's judgements.jsonl
    assert records.judgement_from_record(old_judgement, "x") == Judgement("local", {1: 1, 3: -1}, -1, raw="...")
    old_trajectory = {"task_id": "t1", "sample": 0, "answer": "42", "success": True, "metadata": {},
                      "messages": list(MESSAGES)}
    assert records.trajectory_from_record(old_trajectory, "x").messages == MESSAGES


def test_a_newer_schema_or_the_wrong_kind_of_file_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "trajectories.jsonl"
    good = records.dumps(records.trajectory_to_record(traj()))
    path.write_bytes(good + records.dumps({**records.trajectory_to_record(traj("t2")), "schema": "bon.trajectory/2"}))
    with pytest.raises(BonError, match=rf"{path}:2: unsupported record schema 'bon.trajectory/2'; this bon reads "):
        load_trajectories(path)
    path.write_bytes(good + records.dumps(records.judgement_to_record(judged(), task_id="t1", sample=1)))
    with pytest.raises(BonError, match=rf"{path}:2: a bon.judgement/1 record where a bon.trajectory/1 record"):
        load_trajectories(path)


@pytest.mark.parametrize("patch,message", [
    ({"final_label": 2}, "final_label must be -1, 0, 1 or null"),
    ({"final_label": True}, "final_label must be"),
    ({"step_labels": {"one": 1}}, "step_labels key 'one' is not a message index"),
    ({"step_labels": {"1": "+1"}}, r"step_labels\[1\] must be"),
    ({"step_labels": [1, 1]}, "step_labels must be an object"),
    ({"status": "maybe"}, "status must be one of ok, failed"),
    ({"judge": ""}, "judge must be a non-empty string"),
    ({"reason": 3}, "reason must be a string"),
])
def test_a_bad_judgement_field_is_named(patch, message):
    r = {**records.judgement_to_record(judged(), task_id="t1", sample=0), **patch}
    with pytest.raises(BonError, match=f"f.jsonl:7: {message}"):
        records.judgement_from_record(r, "f.jsonl:7")


def test_context_cannot_overwrite_the_judgements_own_fields():
    with pytest.raises(ValueError, match="status"):
        records.judgement_to_record(judged(), status="x")


# --------------------------------------------------------------------------- the judgement store


def test_the_store_keys_judgements_by_trajectory_judge_and_fingerprint_and_the_later_line_wins(tmp_path):
    store = JudgementStore(tmp_path / "run" / "judgements.jsonl")  # the directory is made on first append
    store.append(traj("t1", 0), FAILED, "aaa")
    store.append(traj("t1", 0), judged(), "aaa")  # judged again after the failure
    store.append(traj("t1", 1), judged(-1), "bbb")
    store.append(traj("t1", 2), Judgement("local", status="failed", reason="not judged"), None)
    stored = store.load()
    assert stored == {("t1", 0, "local", "aaa"): judged(), ("t1", 1, "local", "bbb"): judged(-1)}
    assert reusable(stored, ("t1", 0, "local", "aaa")) == judged()
    assert reusable(stored, ("t1", 0, "local", "other settings")) is None
    assert reusable(stored, ("t1", 0, "another judge", "aaa")) is None


def test_a_failed_judgement_is_never_reusable(tmp_path):
    store = JudgementStore(tmp_path / "judgements.jsonl")
    store.append(traj(), FAILED, "aaa")
    assert store.load() == {("t1", 0, "local", "aaa"): FAILED}
    assert reusable(store.load(), ("t1", 0, "local", "aaa")) is None


def test_a_torn_last_judgement_is_skipped_with_a_warning_then_cut(tmp_path, caplog):
    path = tmp_path / "judgements.jsonl"
    store = JudgementStore(path)
    store.append(traj("t1", 0), judged(), "aaa")
    with open(path, "ab") as f:  # killed in the middle of the second write
        f.write(records.dumps(records.judgement_to_record(judged(), task_id="t1", sample=1))[:-30])
    with caplog.at_level(logging.WARNING):
        assert list(load(path)) == [("t1", 0, "local", "aaa")]
    assert f"{path}:2: ignoring a torn last line" in caplog.text and "its judgement is missing" in caplog.text
    JudgementStore(path).append(traj("t1", 1), judged(), "bbb")
    assert list(load(path)) == [("t1", 0, "local", "aaa"), ("t1", 1, "local", "bbb")]
    assert len(path.read_bytes().splitlines()) == 2


def test_a_damaged_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "judgements.jsonl"
    line = records.dumps(records.judgement_to_record(judged(), task_id="t1", sample=0, input_sha256="a"))
    path.write_bytes(line + b'{"judge": \n' + line)
    with pytest.raises(BonError, match=rf"{path}:2: malformed JSON"):
        load(path)
    path.write_bytes(line + records.dumps({**json.loads(line), "sample": "0"}))
    with pytest.raises(BonError, match=rf"{path}:2: sample must be an integer"):
        load(path)


def test_write_replaces_the_log_with_each_trajectory_once_in_order(tmp_path):
    path = tmp_path / "judgements.jsonl"
    store = JudgementStore(path)
    for j in (FAILED, judged()):
        store.append(traj("t1", 1), j, "b")
    store.append(traj("t1", 0), judged(-1), "a")
    write(path, [(traj("t1", 0), judged(-1), "a"), (traj("t1", 1), judged(), "b")])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["task_id"], r["sample"], r["status"]) for r in rows] == [("t1", 0, "ok"), ("t1", 1, "ok")]
    assert "6×7" not in path.read_text(encoding="utf-8")  # judgements, not transcripts
    assert load(path) == {("t1", 0, "local", "a"): judged(-1), ("t1", 1, "local", "b"): judged()}
    assert [p.name for p in tmp_path.iterdir()] == ["judgements.jsonl"]  # no temporary file left behind


# --------------------------------------------------------------------------- what keys a judgement


def judge(tmp_path, **kw) -> LLMJudge:
    client = LLMClient("openai/judge-model", api_base="http://127.0.0.1:9/v1", api_key_env=None,
                       **kw.pop("client", {}))
    return LLMJudge(client, "local", **kw)


def test_the_fingerprint_changes_with_what_the_judge_sees_and_how_it_is_asked(tmp_path):
    base = judge(tmp_path).fingerprint(traj())
    assert judge(tmp_path).fingerprint(traj("t9", 5)) == base  # same transcript, same judge: same verdict
    template = tmp_path / "prompt.txt"
    template.write_text("Judge this.\n{trajectory}\nSteps: {steps}\n")
    changed = [judge(tmp_path).fingerprint(Trajectory("t1", 0, MESSAGES[:2])),
               judge(tmp_path, mode="orm").fingerprint(traj()),
               judge(tmp_path, samples=3, temperature=0.7).fingerprint(traj()),
               judge(tmp_path, temperature=0.5).fingerprint(traj()),
               judge(tmp_path, reask=True).fingerprint(traj()),
               judge(tmp_path, max_chars=5).fingerprint(traj()),
               judge(tmp_path, prompt_path=str(template)).fingerprint(traj()),
               judge(tmp_path, client={"temperature": 0.3}).fingerprint(traj())]
    assert len({base, *changed}) == len(changed) + 1
    assert judge(tmp_path, client={"timeout": 5.0}).fingerprint(traj()) == base  # transport, not the verdict
