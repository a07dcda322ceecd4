"""Policy values, importance weights, the advantage table and cost-aware Best-of-N on hand-made episodes.

Every expected number is worked out by hand from this fixture (lambda = 0.1, T = em):

question 1 (a complete agent/human tree)       question 2 (not a tree: only two branches logged)
  e1  A Search[x], A Finish[yes]   T=1 C=0       e4  A Search[y], A Finish[no]    T=0 C=0
  e2  A Search[x], H Finish[no]    T=0 C=1       e5  H Search[y], A Finish[yes]   T=1 C=1
  e3  H Finish[yes]                T=1 C=1
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from bon.errors import BonError
from bon.rehac import advantage, best_of_n, metrics, policies
from bon.rehac.episodes import group_questions, is_complete_tree, load_episodes

LAM = 0.1


def _trajectory(question: str, steps: list[tuple[str, str, str]]) -> str:
    text = f"Question: {question}\n"
    for i, (actor, thought, action) in enumerate(steps, 1):
        text += f"<solver> {actor}\nThought {i}: {thought}\nAction {i}: {action}\nObservation {i}: obs\n"
    return text


FIXTURE = [
    (1, [("agent", "look x up", "Search[x]"), ("agent", "done", "Finish[yes]")], 1),
    (1, [("agent", "search for x", "Search[x]"), ("human", "done", "Finish[no]")], 0),  # other thought, same state
    (1, [("human", "easy", "Finish[yes]")], 1),
    (2, [("agent", "s", "Search[y]"), ("agent", "done", "Finish[no]")], 0),
    (2, [("human", "s", "Search[y]"), ("agent", "done", "Finish[yes]")], 1),
]


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text("".join(json.dumps({"idx": idx, "trajectory": _trajectory(f"q{idx}?", steps), "em": em,
                                        "f1": em}) + "\n" for idx, steps, em in FIXTURE))
    return group_questions(load_episodes(path))


def _row(questions, policy, behaviour, rate=None):
    return metrics.evaluate_policy(questions, policy, "em", [0.0, LAM], behaviour, rate, n_resamples=200)


def test_tree_detection_and_behaviour_choice(questions):
    q1, q2 = questions
    assert is_complete_tree(q1.episodes) and not is_complete_tree(q2.episodes)
    assert metrics.resolve_behaviour("auto", [q1]) == "tree"
    assert metrics.resolve_behaviour("auto", questions) == "rate"
    with pytest.raises(BonError, match="unknown behaviour 'uniform'; valid choices: auto, rate, tree"):
        metrics.resolve_behaviour("uniform", questions)


def test_fixed_policies_match_episodes(questions):
    rate = policies.human_step_share(ep for q in questions for ep in q.episodes)
    assert rate == pytest.approx(3 / 9)  # human steps / all steps
    expected = {  # policy: (coverage, matching, T, C, mean mass)
        "never": (1.0, 2, (1 + 0) / 2, 0.0, 1.0),
        "always": (0.5, 1, 1.0, 1.0, 0.5),          # only e3 (question 2 has no all-human episode)
        "at_step_1": (1.0, 2, (1 + 1) / 2, 1.0, 1.0),  # e3 (ends before step 2) and e5
        "at_step_2": (0.5, 1, 0.0, 1.0, 0.5),       # e2
    }
    for policy in policies.fixed_policies(2, []):
        row = _row(questions, policy, "rate", rate)
        cover, matching, t, c, mass = expected[policy.name]
        assert (row["coverage"], row["n_matching"]) == (cover, matching), policy.name
        assert (row["t"], row["c"], row["mass"]) == pytest.approx((t, c, mass)), policy.name
        assert metrics.r_at(row, LAM)["r"] == pytest.approx(t - LAM * c)
        assert row["ess"] == pytest.approx(row["n_covered"])  # one matching episode per covered question


def test_random_policy_exact_on_a_tree(questions):
    q1 = questions[:1]
    row = _row(q1, policies.random_rate(0.5), "tree")
    # leaf probabilities AA 1/4, AH 1/4, H 1/2 sum to 1: the exact expectation
    assert row["t"] == pytest.approx(0.25 * 1 + 0.25 * 0 + 0.5 * 1)
    assert row["c"] == pytest.approx(0.25 * 1 + 0.5 * 1)
    assert row["intervention_rate"] == pytest.approx(0.75 / (0.25 * 2 + 0.25 * 2 + 0.5 * 1))  # = p, as it must
    assert row["ess"] == pytest.approx(1 / (0.25 ** 2 + 0.25 ** 2 + 0.5 ** 2))
    assert row["mass"] == pytest.approx(1.0)
    assert metrics.r_at(row, LAM)["r"] == pytest.approx(0.75 - LAM * 0.75)


def test_random_policy_importance_weights(questions):
    q = 1 / 3
    w = metrics.weights(questions[0], policies.random_rate(0.5), "rate", q)
    # w = p^h (1-p)^a / q^h (1-q)^a for AA, AH, H
    assert w == pytest.approx([0.25 / (2 / 3) ** 2, 0.25 / ((2 / 3) * (1 / 3)), 0.5 / (1 / 3)])
    row = _row(questions, policies.random_rate(0.5), "rate", q)
    t1, c1 = (3 + 8) / 17, (6 + 8) / 17   # question 1: normalised weights 3/17, 6/17, 8/17
    t2, c2 = 2 / 3, 2 / 3                 # question 2: AA 1/3, HA 2/3
    assert row["t"] == pytest.approx((t1 + t2) / 2)
    assert row["c"] == pytest.approx((c1 + c2) / 2)
    assert row["ess"] == pytest.approx(289 / (9 + 36 + 64) + 1 / ((1 / 3) ** 2 + (2 / 3) ** 2))
    assert row["n_matching"] == 5 and row["coverage"] == 1.0
    assert metrics.r_at(row, LAM)["r"] == pytest.approx((t1 + t2) / 2 - LAM * (c1 + c2) / 2)
    with pytest.raises(BonError, match="strictly between 0 and 1"):
        metrics.weights(questions[0], policies.random_rate(0.5), "rate", 0.0)


def test_intervals_bracket_the_mean(questions):
    row = _row(questions, policies.never(), "rate", 1 / 3)
    entry = metrics.r_at(row, 0.0)
    assert entry["ci_low"] <= entry["r"] <= entry["ci_high"]
    assert (entry["ci_low"], entry["ci_high"]) != (entry["r"], entry["r"])  # T is 1 on one question, 0 on the other


def test_advantage_table(questions, tmp_path):
    rows, n_states = advantage.advantage_table(questions, "em")
    assert n_states == 5  # q1: root, after A; q2: root, after A, after H
    assert [(r.question_id, r.step, r.n_agent, r.n_human) for r in rows] == [
        ("idx:1", 1, 2, 1), ("idx:1", 2, 1, 1), ("idx:2", 1, 1, 1)]
    root1, after_a, root2 = rows
    # root of q1: agent continuations e1, e2 (T 0.5, C 0.5); human e3 (T 1, C 1)
    assert root1.advantage(LAM) == pytest.approx((1 - LAM * 1) - (0.5 - LAM * 0.5))
    assert root1.advantage_cost_so_far(LAM) == pytest.approx((1 - 0.5) - LAM)
    assert after_a.advantage(LAM) == pytest.approx((0 - LAM) - 1)
    assert root2.advantage(LAM) == pytest.approx(1 - LAM)
    by_step = advantage.summary_by_step(rows, LAM)
    assert [(s["step"], s["n_states"]) for s in by_step] == [(1, 2), (2, 1)]
    assert by_step[0]["mean_advantage"] == pytest.approx((0.45 + 0.9) / 2)
    assert by_step[0]["share_human_better"] == 1.0 and by_step[1]["share_agent_better"] == 1.0
    path = advantage.write_csv(rows, LAM, tmp_path / "advantage.csv")
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(advantage.CSV_COLUMNS)
    assert lines[2].split(",")[:6] == ["idx:1", "2", "A", "Search[x]", "1", "1"]


def _bon(questions, name, **options):
    predictor = best_of_n.make_predictor(name, questions, "em", options)
    return best_of_n.evaluate_selector(name, questions, best_of_n.predictions(name, predictor, questions), "em",
                                       [0.0, LAM], n_resamples=200)


def test_best_of_n_oracle_and_ties(questions):
    at0, at_lam = _bon(questions, "oracle")
    # lambda 0.1: q1 scores 1, -0.1, 0.9 -> e1 (R 1); q2 scores 0, 0.9 -> e5 (R 0.9)
    assert at_lam["r"] == pytest.approx((1 + 0.9) / 2) and at_lam["r_first"] == pytest.approx(at_lam["r"])
    # lambda 0: e1 and e3 tie in q1 (the tie-aware C is their mean); q2 picks e5
    assert (at0["r"], at0["c"], at0["mean_tied"]) == pytest.approx((1.0, (0.5 + 1) / 2, 1.5))


def test_best_of_n_majority_and_noisy(questions):
    # majority: q1 answers yes, no, yes -> 2/3, 1/3, 2/3; q2 no, yes -> 1/2, 1/2
    _, at_lam = _bon(questions, "majority")
    assert at_lam["r"] == pytest.approx((1 + 0) / 2)  # q1 picks e1; q2 picks the cheaper e4 (T 0)
    perfect = _bon(questions, "noisy_oracle", accuracy=1.0, seed=3)[1]
    assert perfect["r"] == pytest.approx(_bon(questions, "oracle")[1]["r"])
    flipped = _bon(questions, "noisy_oracle", accuracy=0.0, seed=3)[1]
    assert flipped["r"] == pytest.approx(((0 - LAM) + 0) / 2)  # q1 picks e2 (predicted 1), q2 picks e4
    randoms = best_of_n.evaluate_random_pick(questions, "em", [LAM], n_resamples=200)[0]
    assert randoms["r"] == pytest.approx(((2 / 3 - LAM * 2 / 3) + (1 / 2 - LAM * 1 / 2)) / 2)
    assert randoms["candidate_human_steps"] == pytest.approx((2 + 1) / 2)


def test_majority_gives_unfinished_episodes_zero(tmp_path):
    path = tmp_path / "e.jsonl"
    lines = [_trajectory("q?", [("agent", "t", "Search[a]")]), _trajectory("q?", [("agent", "t", "Finish[Yes.]")]),
             _trajectory("q?", [("human", "t", "Finish[yes]")])]
    path.write_text("".join(json.dumps({"idx": 1, "trajectory": t, "em": 0, "f1": 0}) + "\n" for t in lines))
    qs = group_questions(load_episodes(path))
    predicted = best_of_n.predictions("majority", best_of_n.make_predictor("majority", qs, "em", {}), qs)[0]
    assert predicted.tolist() == pytest.approx([0.0, 2 / 3, 2 / 3])  # "Yes." and "yes" agree


def test_noisy_oracle_is_seeded(questions):
    episodes = [ep for q in questions for ep in q.episodes]
    a = best_of_n.noisy_oracle(questions, "em", accuracy=0.5, seed=7)
    b = best_of_n.noisy_oracle(questions, "em", accuracy=0.5, seed=7)
    assert [a(ep) for ep in episodes] == [b(ep) for ep in episodes]
    with pytest.raises(BonError, match="noise_accuracy must lie in"):
        best_of_n.noisy_oracle(questions, "em", accuracy=1.5)


def test_custom_predictor_plugs_in_and_is_checked(questions):
    judge = lambda ep: 0.9 if ep.answer == "yes" else 0.1  # noqa: E731 - any callable episode -> T in [0, 1]
    values = best_of_n.predictions("judge", judge, questions)
    row = best_of_n.evaluate_selector("judge", questions, values, "em", [LAM], n_resamples=200)[0]
    assert row["r"] == pytest.approx((1 + (1 - LAM)) / 2)  # q1 picks e1, q2 picks e5
    with pytest.raises(BonError, match=r"predictor 'bad' returned 1.5 for episode episodes.jsonl:1"):
        best_of_n.predictions("bad", lambda ep: 1.5, questions)
    with pytest.raises(BonError, match="unknown predictor 'llm'; valid choices: majority, noisy_oracle, oracle"):
        best_of_n.make_predictor("llm", questions, "em", {})


def test_pick_breaks_ties_by_file_order():
    chosen = best_of_n.pick(np.array([0.5, 1.0, 1.0]), np.array([0.0, 1.0, 1.0]), 0.0)
    assert (chosen.first, chosen.tied) == (1, (1, 2))
