"""List-wise and pairwise judges over real HTTP: litellm -> 127.0.0.1 test server (no network, no mocks).

The scripted server reads each prompt the way a judge would see it: it finds the attempts, the tag that
identifies each candidate (`cand-<sample>` in its final answer) and answers with the label of the candidate
it prefers in that shown order. So a correct verdict proves the label -> sample mapping under every order.
"""
from __future__ import annotations

import asyncio
import json
import re

import pytest
from llm_server import FAKE_KEY_ENV, Reply, bad_request, llm_env_fixture, llm_server_fixture, text  # noqa: F401 - pytest fixtures

from bon.errors import BonError
from bon.judges.listwise import ListwiseJudge, PairwiseJudge
from bon.judges.transcript import compact
from bon.llm import LLMClient, ResponseCache
from bon.types import Trajectory

pytestmark = pytest.mark.usefixtures("llm_env")
MODEL = "openai/test-model"
QUESTION = "Which city is the capital of France?"
ATTEMPT = re.compile(r"^=== Attempt (\w+) ===\n(.*?)(?=^=== )", re.DOTALL | re.MULTILINE)
TAG = re.compile(r"cand-(\d+)")


def candidate(sample: int, task: str = "t0", good: bool = False, tool_error: bool = False) -> Trajectory:
    """A short trajectory whose final answer carries `cand-<sample>`; `good` ones also say GOOD in a step."""
    messages = (
        {"role": "system", "content": "You answer questions."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Let me search." + (" GOOD evidence." if good else ""),
         "tool_calls": [{"id": f"c{sample}", "type": "function",
                         "function": {"name": "search", "arguments": '{"q": "capital of France"}'}}]},
        {"role": "tool", "name": "search", "tool_call_id": f"c{sample}",
         "content": "error: the search service timed out" if tool_error else "Paris is the capital."},
        {"role": "assistant", "content": f"The answer is cand-{sample}."},
    )
    return Trajectory(task, sample, messages, answer=f"Paris cand-{sample}")


def shown(body: dict) -> list[tuple[str, int | None, str]]:
    """(label, sample, transcript) of each attempt, in the order the prompt shows them (sample None: no tag)."""
    content = body["messages"][0]["content"]
    out = []
    for label, transcript in ATTEMPT.findall(content):
        tag = TAG.search(transcript)
        out.append((label, int(tag.group(1)) if tag else None, transcript))
    return out


def answer(label: str, reason: str = "its answer is supported by the search") -> Reply:
    return text(f"Comparing the attempts.\n```json\n{json.dumps({'best': label, 'reason': reason})}\n```")


def names_good(body: dict) -> Reply:
    """A judge without position bias: the attempt with the GOOD marker, else the lowest sample shown."""
    attempts = shown(body)
    good = [label for label, _, t in attempts if "GOOD" in t]
    return answer(good[0] if good else min((s, label) for label, s, _ in attempts if s is not None)[1])


def make(server, cls=ListwiseJudge, cache: ResponseCache | None = None, **kw):
    client = LLMClient(MODEL, api_base=server.base_url, api_key_env=FAKE_KEY_ENV, backoff_base_s=0.01,
                       timeout=5.0, max_attempts=1, cache=cache)
    return cls(client, "cmp", **kw)


def run(judge, *groups: list[Trajectory]):
    async def go():
        async with judge.client:
            return await judge.pick_all([(QUESTION, g) for g in groups])
    return asyncio.run(go())


def orders_seen(server) -> list[tuple[int, ...]]:
    return [tuple(s for _, s, _ in shown(r.body)) for r in server.requests]


# ---------------------------------------------------------------- list-wise


def test_the_pick_is_mapped_back_to_the_right_sample_under_every_order(llm_server):
    llm_server.responder = names_good
    group = [candidate(s, good=(s == 13)) for s in (14, 12, 10, 13, 11)]  # given out of order
    [v] = run(make(llm_server, permutations=3), group)
    assert v.status == "ok" and v.pick == 13 and v.task_id == "t0"
    assert v.votes == {13: 3} and not v.tie and v.calls == 3 and v.failed_votes == 0
    assert v.explanation == "its answer is supported by the search" and len(v.raw) == 3
    seen = orders_seen(llm_server)
    assert len(set(seen)) == 3  # three different orders were shown ...
    assert (10, 11, 12, 13, 14) in seen and (14, 13, 12, 11, 10) in seen  # ... sample order and its reverse
    labels = {next(lab for lab, s, _ in shown(r.body) if s == 13) for r in llm_server.requests}
    assert len(labels) >= 2  # the good one had different labels, yet every vote went to it


def test_the_prompt_shows_the_question_once_and_asks_for_the_best_in_json(llm_server):
    llm_server.responder = names_good
    run(make(llm_server), [candidate(0, good=True), candidate(1, tool_error=True)])
    [request] = llm_server.requests
    content = request.body["messages"][0]["content"]
    assert content.count(QUESTION) == 1 and '"best": "<one of A, B>"' in content
    assert "Final answer: Paris cand-0" in content and "[TOOL ERROR" in content


def test_majority_over_permutations_outvotes_a_position_biased_order(llm_server):
    def biased_in_sample_order(body):  # in the sample order only, the judge names the first attempt
        order = shown(body)
        if [s for _, s, _ in order] == [0, 1, 2]:
            return answer(order[0][0])
        return names_good(body)

    llm_server.responder = biased_in_sample_order
    [v] = run(make(llm_server, permutations=3), [candidate(s, good=(s == 2)) for s in range(3)])
    assert v.pick == 2 and v.votes == {0: 1, 2: 2} and not v.tie and v.reason == ""


def test_a_tie_is_recorded_and_goes_to_the_lowest_sample_index(llm_server):
    llm_server.responder = lambda body: answer("A")  # pure position bias: always the first shown
    [v] = run(make(llm_server, permutations=2), [candidate(7), candidate(3)])
    assert v.status == "ok" and v.tie and v.pick == 3 and v.votes == {3: 1, 7: 1}
    assert "tie between samples 3, 7" in v.reason
    assert sorted(orders_seen(llm_server)) == [(3, 7), (7, 3)]


def test_failed_calls_and_garbage_replies_are_counted_as_failed_votes(llm_server):
    def flaky(body):
        order = [s for _, s, _ in shown(body)]
        if order == [0, 1, 2]:
            return bad_request("Invalid value for 'temperature'.")
        if order == [2, 1, 0]:
            return text("They all look fine to me.")
        return names_good(body)

    llm_server.responder = flaky
    [v] = run(make(llm_server, permutations=3), [candidate(s, good=(s == 1)) for s in range(3)])
    assert v.status == "ok" and v.pick == 1 and v.votes == {1: 1} and v.failed_votes == 2 and v.calls == 3
    assert "2 of 3 votes failed" in v.reason and "api: " in v.reason and "no JSON verdict" in v.reason
    assert sorted(r is None for r in v.raw) == [False, False, True]  # the failed call has no reply


def test_the_verdict_fails_when_no_permutation_gives_a_usable_vote(llm_server):
    replies = iter([bad_request(), text('```json\n{"best": "Z"}\n```')])
    llm_server.responder = lambda body: next(replies)
    judge = make(llm_server, permutations=2)
    [v] = run(judge, [candidate(0), candidate(1)])
    assert v.failed and v.pick is None and not v.votes and v.failed_votes == 2
    assert "no usable vote in 2 call(s)" in v.reason and "not one of A, B" in v.reason and "api: " in v.reason
    assert judge.client.stats.failed == 1 and judge.client.stats.ok == 1  # the client counts its calls too


def test_a_rerun_with_the_same_settings_makes_no_request(llm_server, tmp_path):
    llm_server.responder = names_good
    groups = [[candidate(s, task=t, good=(s == g)) for s in range(4)] for t, g in (("t0", 1), ("t1", 3))]
    first = run(make(llm_server, cache=ResponseCache("readwrite", tmp_path), permutations=2), *groups)
    assert llm_server.count == 4 and [v.pick for v in first] == [1, 3]
    judge = make(llm_server, cache=ResponseCache("readwrite", tmp_path), permutations=2)
    assert asyncio.run(judge.cached(QUESTION, groups[0])) == 2
    again = run(judge, *groups)
    assert llm_server.count == 4 and judge.client.stats.cache_hits == 4 and judge.client.stats.requests == 0
    assert [(v.pick, v.votes, v.cache_hits) for v in again] == [(1, {1: 2}, 2), (3, {3: 2}, 2)]
    # more permutations reuse the orders already judged: only the new one is requested, per task
    run(make(llm_server, cache=ResponseCache("readwrite", tmp_path), permutations=3), *groups)
    assert llm_server.count == 6
    # the fingerprint is stable, and another seed is another judge (its shuffled orders differ)
    assert make(llm_server, seed=1).fingerprint(QUESTION, groups[0]) != \
        make(llm_server).fingerprint(QUESTION, groups[0])
    assert make(llm_server).fingerprint(QUESTION, groups[0]) == make(llm_server).fingerprint(QUESTION, groups[0])


def test_one_candidate_needs_no_call_and_a_candidate_without_steps_is_shown(llm_server):
    llm_server.responder = names_good
    empty = Trajectory("t0", 1, ({"role": "user", "content": QUESTION},), metadata={"stop_reason": "error",
                                                                                    "error_kind": "timeout"})
    [alone, pair] = run(make(llm_server), [candidate(5)], [candidate(0, good=True), empty])
    assert alone.pick == 5 and alone.calls == 0 and alone.status == "ok"
    assert pair.pick == 0 and llm_server.count == 1
    content = llm_server.requests[0].body["messages"][0]["content"]
    assert "(no steps: the agent produced no message; it stopped with timeout)" in content
    assert "Final answer: none (the run stopped: error)" in content


def test_bad_groups_fail_before_any_call(llm_server):
    judge = make(llm_server)
    with pytest.raises(BonError, match="must share a task"):
        run(judge, [candidate(0, task="a"), candidate(1, task="b")])
    with pytest.raises(BonError, match="duplicates \\[1\\]"):
        run(judge, [candidate(1), candidate(1)])
    with pytest.raises(BonError, match="permutations must be an integer >= 1"):
        make(llm_server, permutations=0)
    assert llm_server.count == 0


# ---------------------------------------------------------------- compact transcripts


def test_compact_keeps_the_start_and_the_final_answer_when_cut():
    long = candidate(0)
    steps = tuple({"role": "assistant", "content": f"step {i} " + "x" * 400} for i in range(40))
    long = Trajectory("t0", 0, long.messages[:2] + steps + long.messages[2:], answer="Paris cand-0")
    out = compact(long, max_chars=1000)
    assert len(out) <= 1000
    assert out.startswith("Step 1: step 0 ") and out.endswith("Final answer: Paris cand-0")
    assert "characters cut from the middle" in out and "step 20 " not in out
    assert compact(candidate(0), max_chars=1000) == compact(candidate(0), max_chars=5000)  # short: untouched


def test_compact_marks_tool_errors_from_the_record_and_from_the_reply():
    plain = compact(candidate(0), 4000)
    assert "TOOL ERROR" not in plain and "-> calls search(" in plain
    assert "<- search returned [TOOL ERROR: error]: error: the search service timed out" in \
        compact(candidate(0, tool_error=True), 4000)
    recorded = Trajectory("t0", 0, candidate(0).messages, answer="Paris",
                          metadata={"tool_calls": [{"id": "c0", "name": "search", "error_kind": "rate_limited"}]})
    assert "<- search returned [TOOL ERROR: rate_limited]: Paris is the capital." in compact(recorded, 4000)
    assert QUESTION not in plain and "You answer questions." not in plain  # shown once by the prompt instead


# ---------------------------------------------------------------- pairwise


@pytest.mark.parametrize("permutations", [1, 2])
def test_the_tournament_finds_the_scripted_winner_in_n_minus_one_matches(llm_server, permutations):
    llm_server.responder = names_good
    group = [candidate(s, good=(s == 4)) for s in range(5)]  # sample 4 gets byes, then must win the final
    [v] = run(make(llm_server, PairwiseJudge, permutations=permutations), group)
    assert v.status == "ok" and v.pick == 4 and v.votes[4] == 1 and sum(v.votes.values()) == 4
    assert llm_server.count == v.calls == 4 * permutations
    assert all(len(order) == 2 for order in orders_seen(llm_server))
    if permutations == 2:  # each match in both orders
        seen = orders_seen(llm_server)
        assert all(tuple(reversed(o)) in seen for o in seen)


def test_a_failed_match_lets_the_lower_sample_advance_with_a_note(llm_server):
    def refuses_0_v_1(body):
        return text("no idea") if {s for _, s, _ in shown(body)} == {0, 1} else names_good(body)

    llm_server.responder = refuses_0_v_1
    [v] = run(make(llm_server, PairwiseJudge), [candidate(s, good=(s == 2)) for s in range(3)])
    assert v.pick == 2 and v.failed_votes == 1 and v.calls == 2
    assert "match 0 v 1 failed (no JSON verdict in the reply): 0 advances" in v.reason


def test_the_tournament_fails_when_no_match_gives_a_usable_vote(llm_server):
    llm_server.responder = lambda body: text("no idea")
    [v] = run(make(llm_server, PairwiseJudge), [candidate(s) for s in range(3)])
    assert v.failed and v.pick is None and v.calls == v.failed_votes == 2
    assert "no match gave a usable vote: no JSON verdict in the reply (x2)" in v.reason
