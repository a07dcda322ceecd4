"""Parsing ReHAC's logged episodes: the real release files, and malformed lines named by file and line."""
from __future__ import annotations

import json

import pytest

from bon.errors import BonError
from bon.rehac.episodes import (
    AGENT,
    HUMAN,
    group_questions,
    is_complete_tree,
    load_episodes,
    match_to_tree,
    parse_trajectory,
    with_question_texts,
)

COLLAB = "dataset/gpt4/strategyqa.jsonl"


@pytest.fixture(scope="module")
def collab(rehac_root):
    return load_episodes(rehac_root / COLLAB)


def test_collaboration_episode_fields(collab):
    first = collab[0]
    assert (first.idx, first.line, first.em, first.f1) == (296, 1, 1.0, 1.0)
    assert first.question == "Would it be safe to have a jackfruit thrown at your head?"
    assert first.actors == (AGENT, AGENT) and first.n_human == 0
    assert [s.action for s in first.steps] == ["Search[Jackfruit]", "Finish[false]"]
    assert first.steps[0].thought.startswith("I need to determine if it would be safe")
    assert first.steps[0].observation.startswith("The jackfruit is the fruit of jack tree")
    assert first.answer == "false" and first.logged_reward == 1.0 and first.preamble is None
    assert collab[1].actors == (AGENT, HUMAN) and collab[1].n_human == 1


def test_collaboration_file_shape_and_oddities(collab):
    assert len(collab) == 2420
    questions = group_questions(collab)
    assert len(questions) == 250
    # idx 296 has a typo ("WouldL") in one episode's question: grouping by idx keeps it one question
    assert [q.id for q in questions if q.question_variants > 1] == ["idx:296"]
    # both actors were run at every step: every question is a complete agent/human tree
    assert all(is_complete_tree(q.episodes) for q in questions)
    by_line = {ep.line: ep for ep in collab}
    assert any("stray fragment 'Observation' dropped" in a for a in by_line[1609].anomalies)
    assert any("stray fragment 'Observ' dropped" in a for a in by_line[2179].anomalies)
    assert "step 3: 2 thought lines, joined" in by_line[759].anomalies
    assert by_line[759].steps[2].thought.endswith("Therefore, Dorothea Wendling is from the same place Porsche originated.")
    assert sum(bool(ep.anomalies) for ep in collab) == 7
    # a Finish without its closing bracket was rejected by the environment: no answer
    assert by_line[53].steps[-1].action == "Finish[" and by_line[53].answer is None and by_line[53].em == 0


def test_results_files_without_idx(rehac_root):
    hotpot = load_episodes(rehac_root / "hotpotqa/results/hotpotqa_lambda0.08.jsonl")
    strategy = load_episodes(rehac_root / "strategyqa/results/strategyqa_lambda0.08.jsonl")
    intercode = load_episodes(rehac_root / "intercode/results/intercode_lambda0.08.jsonl")
    for eps in (hotpot, strategy, intercode):
        assert len(eps) == 100 and all(ep.idx is None for ep in eps)
        questions = group_questions(eps)
        assert len(questions) == 100 and all(q.id.startswith("q:") for q in questions)

    h = hotpot[0]  # em is a boolean here
    assert (h.em, h.f1) == (0.0, 0.0)
    assert h.actors == (AGENT, HUMAN, HUMAN)
    assert h.answer == "Cannot answer the question due to lack of information."
    assert h.question.startswith("What movie did actress Irene Jacob complete")

    s = strategy[0]
    assert (s.em, s.actors, s.answer) == (0.0, (AGENT, AGENT, HUMAN), "false")

    i = intercode[0]  # SQL actions, no thoughts, instructions before the question, a bare reward line
    assert i.preamble.startswith("In a SQL-based game, your aim is to construct SQL commands")
    assert i.question.startswith("Find the name and membership level of the visitors")
    assert i.actors == (AGENT,) * 4 and all(step.thought is None for step in i.steps)
    assert i.steps[1].action == "SHOW TABLES"
    assert i.steps[1].observation == "[('museum',), ('visit',), ('visitor',)]"
    assert i.steps[-1].action.startswith("SELECT Name, Level_of_membership FROM visitor")
    assert (i.em, i.logged_reward, i.answer) == (1.0, 1.0, None)
    assert not any(ep.anomalies for ep in hotpot + strategy + intercode)


def test_continuation_lines_extend_the_field():
    text = "Question: q?\n<solver> human\nThought 1: t\nAction 1: Search[x]\nObservation 1: first\nsecond line\n"
    _, _, steps, anomalies, _ = parse_trajectory(text, "f:1")
    assert steps[0].observation == "first\nsecond line" and anomalies == []


GOOD = "Question: q?\n<solver> agent\nThought 1: t\nAction 1: Finish[yes]\nObservation 1: Episode finished, reward = 1\n"


@pytest.mark.parametrize("record, expected", [
    ("{not json", "malformed JSON"),
    ('["a list"]', "expected a JSON object"),
    (json.dumps({"trajectory": GOOD, "f1": 1}), "missing field(s) em"),
    (json.dumps({"trajectory": GOOD, "em": "yes", "f1": 1}), "em must be a number or a boolean"),
    (json.dumps({"trajectory": GOOD, "em": 1, "f1": 1.5}), "f1 must lie in [0, 1]"),
    (json.dumps({"trajectory": GOOD, "em": 1, "f1": 1, "idx": "7"}), "idx must be an integer"),
    (json.dumps({"trajectory": "<solver> agent\nAction 1: Finish[x]\n", "em": 0, "f1": 0}),
     "trajectory line 1: expected a 'Question: ...' line before the first step"),
    (json.dumps({"trajectory": "Question: q\n<solver> robot\nAction 1: Finish[x]\n", "em": 0, "f1": 0}),
     "trajectory line 2: unknown solver 'robot'; expected '<solver> agent' or '<solver> human'"),
    (json.dumps({"trajectory": "Question: q\nThought 1: t\n", "em": 0, "f1": 0}),
     "trajectory line 2: expected '<solver> agent' or '<solver> human' before Thought 1"),
    (json.dumps({"trajectory": "Question: q\n<solver> agent\nThought 1: t\n<solver> human\nAction 2: Finish[x]\n",
                 "em": 0, "f1": 0}), "step 1 (agent) has no 'Action 1:' line"),
    (json.dumps({"trajectory": "Question: q\n<solver> agent\nAction 2: Finish[x]\n", "em": 0, "f1": 0}),
     "trajectory line 3: expected 'Action 1:' (step 1), got 'Action 2:'"),
    (json.dumps({"trajectory": "Question: q\n<solver> agent\nThought 1: t\nObservation 1: o\n", "em": 0, "f1": 0}),
     "trajectory line 4: 'Observation 1:' before 'Action 1:'"),
    (json.dumps({"trajectory": "Question: q\n", "em": 0, "f1": 0}), "the trajectory has no steps"),
    (json.dumps({"trajectory": "no question here", "em": 0, "f1": 0}), "no 'Question: ...' line"),
])
def test_malformed_lines_are_named_by_file_and_line(tmp_path, record, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"idx": 1, "trajectory": GOOD, "em": 1, "f1": 1}) + "\n" + record + "\n")
    with pytest.raises(BonError) as err:
        load_episodes(path)
    assert f"{path}:2:" in str(err.value)
    assert expected in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(BonError, match="ReHAC episode file not found"):
        load_episodes(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BonError, match="no episodes"):
        load_episodes(tmp_path / "empty.jsonl")


TEST_TREE = "strategyqa/test_data/localgpt_test100.jsonl"
TRAIN_TREE = "strategyqa/test_data/localgpt_train250.jsonl"


def test_step_trees_are_read_as_episodes(rehac_root, collab):
    test = load_episodes(rehac_root / TEST_TREE)
    assert len(test) == 956 and len({ep.idx for ep in test}) == 100
    questions = group_questions(test)
    assert len(questions) == 100 and all(is_complete_tree(q.episodes) for q in questions)
    first = test[0]  # "(294, '000')": three agent steps, the texts of (294, '0'), (294, '00') and the leaf
    assert (first.idx, first.node, first.actors, first.em) == (294, "(294, '000')", (AGENT,) * 3, 0.0)
    assert first.steps[0].action == "Search[Bing search engine]" and first.answer == "false"
    assert first.key == "localgpt_test100.jsonl:(294, '000')" and first.line == 4
    # the training tree is the collaboration data: same questions, same actor paths, same em
    train = load_episodes(rehac_root / TRAIN_TREE)
    assert sorted((ep.idx, ep.actors, ep.em) for ep in train) == sorted((ep.idx, ep.actors, ep.em) for ep in collab)


def test_trained_episodes_match_their_test_question(rehac_root):
    test = load_episodes(rehac_root / TEST_TREE)
    trained = load_episodes(rehac_root / "strategyqa/results/strategyqa_lambda0.08.jsonl")
    leaves = match_to_tree(trained, test)
    assert len({leaf.idx for leaf in leaves}) == 100  # one episode per test question
    assert all(leaf.actors == ep.actors and leaf.em == ep.em for ep, leaf in zip(trained, leaves))
    assert leaves[0].idx == 294 and trained[0].question.startswith("Do Bing (search engine) searches earn")
    named = with_question_texts(test, {leaf.question_id: ep.question for ep, leaf in zip(trained, leaves)})
    assert named[0].question == trained[0].question


def _tree(nodes: dict[str, str]) -> str:
    return "{\n" + ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in nodes.items()) + "\n}\n"


STEP = "Thought 1: t\nAction 1: Search[x]\nObservation 1: o"
LEAF = str(("Thought 2: t\nAction 2: Finish[yes]\nObservation 2: Episode finished, reward = 1\n", 1, 1))


@pytest.mark.parametrize("nodes, expected", [
    ({"(1, '0')": STEP, "(1, 'x1')": LEAF}, ":3: key \"(1, 'x1')\" is not \"(idx, 'path')\""),
    ({"(1, '0')": STEP, "(1, '00')": 5}, ":3: key \"(1, '00')\": expected a string, got int"),
    ({"(1, '0')": STEP, "(1, '01')": LEAF, "(1, '101')": LEAF},
     ":4: key \"(1, '101')\": its earlier step \"(1, '1')\" is missing"),
    ({"(1, '0')": STEP, "(1, '00')": "('half a tuple', 1)"},
     ":3: key \"(1, '00')\": a leaf must be the string of a tuple"),
    ({"(1, '0')": STEP, "(1, '00')": str(("Thought 2: t\nAction 2: Finish[yes]\n", 2, 1))}, "em must lie in [0, 1]"),
    ({"(1, '0')": "Action 2: Search[x]", "(1, '00')": LEAF}, "expected 'Action 1:' (step 1), got 'Action 2:'"),
])
def test_malformed_trees_are_named_by_file_and_key(tmp_path, nodes, expected):
    path = tmp_path / "tree.jsonl"
    path.write_text(_tree(nodes))
    with pytest.raises(BonError) as err:
        load_episodes(path)
    assert str(err.value).startswith(str(path)) and expected in str(err.value), str(err.value)


def test_an_episode_from_other_questions_matches_no_leaf(rehac_root, collab):
    test = load_episodes(rehac_root / TEST_TREE)
    with pytest.raises(BonError, match=r"strategyqa.jsonl:1: the episode follows no path of localgpt_test100.jsonl"):
        match_to_tree(collab[:1], test)
