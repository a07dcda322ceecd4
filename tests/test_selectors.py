"""Behaviour of the built-in selectors, config-built selectors and answer normalisers.

Candidates are built from judge labels written as strings, one character per assistant
step: '+' = +1, '-' = -1, '0' = 0, '?' = no label (a missing label). Every pick is made
both per task (`selector(rows)`) and vectorised (`bon.selectors.select`), and the two
must agree.
"""
from __future__ import annotations

import polars as pl
import pytest

from bon import candidates, selectors
from bon.errors import BonError
from bon.selectors import from_config, normalize
from bon.types import Judgement

CODE = {"+": 1, "-": -1, "0": 0, "?": None}


def cand(sample: int, labels: str = "", *, final: int | None = None, answer: str | None = None,
         success: bool = False, judge_ok: bool = True, task: str = "t0") -> dict:
    """One candidate-table row; step k is assistant message 2k+1."""
    steps = [2 * k + 1 for k in range(len(labels))]
    judgement = Judgement("j", {i: CODE[c] for i, c in zip(steps, labels) if c != "?"}, final,
                          status="ok" if judge_ok else "failed")
    return {"task_id": task, "subset": "s", "sample": sample, "judge": "j",
            **candidates.step_features(steps, judgement), "answer": answer, "success": success}


def run(selector, rows) -> tuple[int, float]:
    """(picked sample, expected accuracy), checked to be the same on both paths."""
    pos = selector(rows)
    top = selector.top_set(rows)
    assert pos in top
    expected = sum(bool(rows[i]["success"]) for i in top) / len(top)
    out = selectors.select(selector, candidates.table(rows)).row(0, named=True)
    assert out["picked_sample"] == rows[pos]["sample"], "per-task and vectorised picks differ"
    assert out["correct"] == bool(rows[pos]["success"])
    assert out["expected"] == pytest.approx(expected)
    assert out["n_tied"] == len(top)
    return rows[pos]["sample"], expected


def picked(selector, rows) -> int:
    return run(selector, rows)[0]


# --- features ---------------------------------------------------------------------------------------------


def test_missing_labels_are_counted_and_are_not_plus_one():
    row = cand(0, "++??")
    assert (row["n_steps"], row["n_pos"], row["n_neg"], row["n_missing"]) == (4, 2, 0, 2)
    assert row["pos_ratio"] == 0.5
    # an unlabelled step ends the clean prefix: the judge did not vouch for it
    assert row["clean_prefix"] == 0.5 and row["first_error"] is None
    # a label given explicitly as None is missing too
    explicit = candidates.step_features([1, 3], Judgement("j", {1: 1, 3: None}))
    assert explicit["n_missing"] == 1 and explicit["pos_ratio"] == 0.5


def test_a_failed_judgement_never_looks_error_free():
    failed = candidates.step_features([2, 4], Judgement("j", status="failed", reason="timeout"))
    assert failed["n_neg"] is None and failed["clean_prefix"] is None and not failed["judge_ok"]
    rows = [{**failed, "sample": 0, "success": False, "answer": None}, {**cand(1, "+-"), "success": True}]
    assert selectors.clean_prefix(rows) == 1
    assert selectors.Selector("fewest", rank=(selectors.Key("n_neg", descending=False),))(rows) == 1
    only_failed_and_clean = [rows[0], {**cand(1, "++"), "success": True}]
    assert selectors.Selector("clean", (selectors.FILTERS["no_error"],))(only_failed_and_clean) == 1


def test_first_error_and_clean_prefix():
    row = cand(0, "++-+")
    assert row["first_error"] == 5  # absolute message index of the first -1
    assert row["clean_prefix"] == 0.5
    assert cand(0, "")["pos_ratio"] == 0.0


# --- built-in selectors -----------------------------------------------------------------------------------


def test_final_picks_first_judged_success_in_sample_order():
    rows = [cand(3, final=1, success=False), cand(1, final=-1, success=True), cand(2, final=1, success=True),
            cand(0, final=None, success=True)]
    assert picked(selectors.final, rows) == 2  # samples 2 and 3 are +1; 2 comes first
    # expected accuracy is over every ORM success (samples 2 and 3)
    assert run(selectors.final, rows)[1] == 0.5


def test_final_falls_back_to_first_candidate():
    rows = [cand(4, final=-1, success=True), cand(2, final=None), cand(7, final=-1)]
    assert picked(selectors.final, rows) == 2
    assert run(selectors.final, rows)[1] == pytest.approx(1 / 3)


def test_pos_count_most_plus_one_steps():
    rows = [cand(0, "++-"), cand(1, "+++--"), cand(2, "++")]
    assert picked(selectors.pos_count, rows) == 1


def test_pos_ratio_highest_share():
    rows = [cand(0, "+++--"), cand(1, "++-"), cand(2, "+--")]  # 0.6, 0.67, 0.33
    assert picked(selectors.pos_ratio, rows) == 1


def test_pos_ratio_missing_label_is_not_plus_one():
    # sample 0 has no -1 at all but half its labels are missing: 2/4 < 2/3
    rows = [cand(0, "++??", success=False), cand(1, "++-", success=True)]
    assert picked(selectors.pos_ratio, rows) == 1
    # pos_count sees the same number of +1 steps: a tie, lowest sample
    assert run(selectors.pos_count, rows) == (0, 0.5)


def test_two_stage_prefers_orm_successes_then_pos_ratio():
    rows = [cand(0, "++++", final=-1), cand(1, "+--", final=1), cand(2, "++-", final=1, success=True)]
    assert picked(selectors.two_stage, rows) == 2  # sample 0 has the best ratio but the ORM rejected it


def test_two_stage_falls_back_to_all_candidates():
    rows = [cand(0, "+--", final=-1), cand(1, "+++-", final=None, success=True), cand(2, "++", final=-1)]
    assert picked(selectors.two_stage, rows) == 2


def test_clean_prefix_latest_first_error_then_pos_ratio():
    rows = [cand(0, "+-++", final=1),       # first -1 at 1/4
            cand(1, "++-+", final=1),       # first -1 at 2/4
            cand(2, "+++-", final=1),       # first -1 at 3/4
            cand(3, "0000", final=-1)]      # no error, but the ORM rejected it
    assert picked(selectors.clean_prefix, rows) == 2
    rows.append(cand(4, "00", final=1))     # no -1 beats any -1
    assert picked(selectors.clean_prefix, rows) == 4
    rows.append(cand(5, "+0", final=1))     # same clean prefix (1.0), higher pos_ratio
    assert picked(selectors.clean_prefix, rows) == 5


def test_clean_prefix_falls_back_to_all_candidates():
    rows = [cand(0, "-+", final=-1), cand(1, "+-", final=None), cand(2, "++-", final=-1)]
    assert picked(selectors.clean_prefix, rows) == 2


def test_majority_most_frequent_normalised_answer():
    rows = [cand(0, answer="London"), cand(1, answer="Paris", success=True), cand(2, answer="london"),
            cand(3, answer="the Paris!", success=True), cand(4, answer="  PARIS. ", success=True)]
    assert run(selectors.majority, rows) == (1, 1.0)


def test_majority_candidates_without_answer_get_no_vote():
    rows = [cand(0), cand(1, answer=""), cand(2, answer="   "), cand(3, answer="The"),
            cand(4, answer="Rome", success=True)]
    assert run(selectors.majority, rows) == (4, 1.0)


def test_majority_with_no_answers_at_all_is_a_full_tie():
    rows = [cand(2, success=True), cand(0), cand(1, answer=" ")]
    assert run(selectors.majority, rows) == (0, pytest.approx(1 / 3))


def test_weighted_majority_weights_votes_by_pos_ratio():
    rows = [cand(0, "+---", answer="Paris"), cand(1, "+---", answer="paris"),  # 0.25 + 0.25
            cand(2, "++++", answer="Rome", success=True)]                      # 1.0
    assert picked(selectors.weighted_majority, rows) == 2
    assert picked(selectors.majority, rows) == 0


def test_weighted_majority_equal_totals_tie_despite_float_rounding():
    # Paris: 1/10 + 2/10, Rome: 3/10 -- equal totals, so all three tie and the lowest sample wins
    rows = [cand(0, "+++-------", answer="Rome"), cand(1, "+---------", answer="Paris", success=True),
            cand(2, "++--------", answer="Paris", success=True)]
    sel = selectors.weighted_majority
    out = selectors.select(sel, candidates.table(rows)).row(0, named=True)
    assert (out["picked_sample"], out["n_tied"], out["expected"]) == (0, 3, pytest.approx(2 / 3))
    assert sel.top_set(rows) == [0, 1, 2]
    assert sel(rows) == 0


def test_pass_at_n_is_an_oracle():
    rows = [cand(0), cand(3, success=True), cand(1, success=True)]
    assert run(selectors.pass_at_n, rows) == (1, 1.0)
    assert run(selectors.pass_at_n, [cand(1), cand(0)]) == (0, 0.0)
    assert selectors.pass_at_n.oracle
    assert not any(s.oracle for name, s in selectors.SELECTORS.items() if name != "pass_at_n")


def test_random_is_a_full_tie_with_mean_success():
    rows = [cand(2, "+", final=1, success=True), cand(1, "-", final=-1), cand(0, "", answer="x"),
            cand(3, "++", success=True)]
    assert selectors.get("random").top_set(rows) == [0, 1, 2, 3]
    assert run(selectors.get("random"), rows) == (0, 0.5)


# --- ties ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(selectors.SELECTORS))
def test_tie_goes_to_lowest_sample_whatever_the_row_order(name):
    # identical features, success too, so every selector (pass_at_n included) sees a full tie
    rows = [cand(s, "+-?", final=1, answer="Paris", success=True) for s in (5, 2, 9, 3)]
    sel = selectors.get(name)
    assert sel.top_set(rows) == [0, 1, 2, 3]
    assert sel(rows) == 1  # position of sample 2
    assert picked(sel, rows) == 2


@pytest.mark.parametrize("name", sorted(set(selectors.SELECTORS) - {"pass_at_n"}))
def test_expected_is_mean_success_over_tied_candidates(name):
    rows = [cand(1, "+-", final=1, answer="Paris", success=False),
            cand(0, "+-", final=1, answer="Paris", success=True)]
    assert run(selectors.get(name), rows) == (0, 0.5)
    rows.reverse()
    assert run(selectors.get(name), rows) == (0, 0.5)


def test_expected_only_counts_the_tied_top_set():
    rows = [cand(0, "++", success=False), cand(1, "++", success=True), cand(2, "+-", success=True)]
    assert run(selectors.pos_ratio, rows) == (0, 0.5)


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(selectors.SELECTORS))
def test_empty_candidate_list_raises(name):
    sel = selectors.get(name)
    with pytest.raises(BonError):
        sel([])
    with pytest.raises(BonError):
        sel.top_set([])
    with pytest.raises(BonError):
        selectors.select(sel, candidates.table([]))


def test_duplicate_sample_in_a_table_raises():
    with pytest.raises(BonError, match="duplicate"):
        selectors.select(selectors.final, candidates.table([cand(0), cand(0)]))


def test_unknown_selector_name_lists_valid_names():
    with pytest.raises(BonError) as err:
        selectors.get("best")
    message = str(err.value)
    assert "'best'" in message
    for name in selectors.SELECTORS:
        assert name in message


# --- from_config ---------------------------------------------------------------------------------------------


def test_config_name_alone_is_the_builtin():
    assert from_config({"name": "two_stage"}) is selectors.two_stage


def test_config_orm_majority():
    sel = from_config({"name": "orm_majority", "filters": ["judged_success"], "rank": ["votes"]})
    assert sel.name == "orm_majority" and sel.filters == (selectors.FILTERS["judged_success"],)
    rows = [cand(0, final=-1, answer="Rome"), cand(1, final=-1, answer="Rome"),
            cand(2, final=1, answer="Paris", success=True), cand(3, final=1, answer="paris!", success=True),
            cand(4, final=1, answer="Berlin")]
    assert run(sel, rows) == (2, 1.0)
    assert picked(selectors.majority, rows) == 0  # without the filter Rome wins


def test_config_extends_replaces_only_the_parts_given():
    sel = from_config({"name": "x", "extends": "two_stage", "rank": [{"column": "n_pos"}]})
    assert sel.name == "x"
    assert sel.filters == selectors.two_stage.filters
    assert sel.rank == (selectors.Key("n_pos"),)
    rows = [cand(0, "+++++----", final=-1), cand(1, "+++---", final=1), cand(2, "++", final=1)]
    assert picked(sel, rows) == 1                   # most +1 among ORM successes
    assert picked(selectors.two_stage, rows) == 2  # highest share among ORM successes


def test_config_fewest_errors_and_inline_parts():
    sel = from_config({"name": "fewest_errors", "extends": "two_stage",
                       "rank": [{"column": "n_neg", "descending": False}, "pos_ratio"]})
    rows = [cand(0, "+--", final=1), cand(1, "0-", final=1), cand(2, "++-", final=1), cand(3, "", final=-1)]
    assert picked(sel, rows) == 2
    sel = from_config({"name": "f", "filters": [{"column": "pos_ratio", "op": ">=", "value": 0.5}],
                       "rank": [{"votes": True, "weight": "n_pos", "normalizer": "first_line"}]})
    rows = [cand(0, "+-", answer="Yes. Because"), cand(1, "-", answer="No"), cand(2, "-", answer="No"),
            cand(3, "++", answer="yes\nsecond line")]
    assert picked(sel, rows) == 0  # 'No' fails the filter; both 'yes' forms vote together


@pytest.mark.parametrize("cfg, needles", [
    ({"name": "x", "rank": ["best_key"]}, ["'best_key'", *selectors.KEYS]),
    ({"name": "x", "filters": ["best_filter"]}, ["'best_filter'", *selectors.FILTERS]),
    ({"name": "x", "rank": [{"column": "n_poss"}]}, ["'n_poss'", "n_pos", "pos_ratio", "clean_prefix", "final_pred"]),
    ({"name": "x", "filters": [{"column": "answer"}]}, ["'answer'", "n_pos", "final_pred"]),
    ({"name": "x", "rank": [{"column": "n_pos", "colour": "red"}]}, ["colour", "column", "descending", "missing"]),
    ({"name": "x", "filters": [{"column": "n_pos", "operator": ">"}]}, ["operator", "column", "op", "value"]),
    ({"name": "x", "rank": ["votes"], "colour": 1}, ["colour", "extends", "filters", "rank"]),
    ({"name": "x", "filters": [{"column": "n_pos", "op": "~"}]}, ["'~'", "==", ">="]),
    ({"name": "x", "rank": [{"votes": True, "normalizer": "fancy"}]}, ["'fancy'", "squad", "exact", "first_line"]),
    ({"name": "x", "rank": [{"votes": True, "weight": "bogus"}]}, ["'bogus'", "pos_ratio"]),
    ({"name": "x", "extends": "best"}, ["'best'", "two_stage", "majority"]),
    ({"name": "best"}, ["'best'", "two_stage", "majority"]),
])
def test_bad_config_lists_the_valid_choices(cfg, needles):
    with pytest.raises(BonError) as err:
        from_config(cfg)
    for needle in needles:
        assert needle in str(err.value), f"{needle!r} not in {str(err.value)!r}"


def test_one_name_or_one_mapping_is_a_list_of_one():
    """`rank: pos_ratio` was iterated by character ('p', 'o', ...)."""
    assert from_config({"name": "x", "rank": "pos_ratio"}).rank == selectors.pos_ratio.rank
    assert from_config({"name": "x", "filters": "judged_success"}).filters == selectors.final.filters
    assert from_config({"name": "x", "rank": {"column": "n_pos"}}).rank == selectors.pos_count.rank


def test_extends_itself_says_so():
    with pytest.raises(BonError, match="names the selector itself") as err:
        from_config({"name": "mine", "extends": "mine"})
    assert "two_stage" in str(err.value)


def test_a_builtin_name_cannot_be_redefined():
    with pytest.raises(BonError, match="'two_stage' is a built-in selector"):
        from_config({"name": "two_stage", "rank": ["pos_count"]})
    # the same parts under the built-in's name are the built-in, so that stays allowed
    same = from_config({"name": "two_stage", "extends": "two_stage"})
    assert (same.filters, same.rank) == (selectors.two_stage.filters, selectors.two_stage.rank)


@pytest.mark.parametrize("cfg", [
    {"rank": ["votes"]},                                   # no name
    {"name": "x", "rank": [{"column": "n_pos", "weight": "pos_ratio"}]},  # weight on a plain key
    {"name": "x", "rank": [42]},
    {"name": "x", "rank": 42},
])
def test_other_bad_configs_raise_bon_error(cfg):
    with pytest.raises(BonError):
        from_config(cfg)


@pytest.mark.parametrize("cfg", [
    {"name": "x", "rank": [{"descending": False}]},        # a key without a column
    {"name": "x", "filters": [{"op": ">", "value": 0}]},   # a filter without a column
])
def test_part_without_column_raises_bon_error_not_type_error(cfg):
    with pytest.raises(BonError, match="column"):
        from_config(cfg)


# --- normalisers ----------------------------------------------------------------------------------------------

TRICKY = [
    "Paris", "  The Eiffel Tower! ", "an apple a day", "A", "the", "The.", "", " ", "\n\t \r\n",
    "Yes. Because it is.", "Yes.\nBecause", "Yes!  No", "Why? Because", "yes because", "line one\nline two",
    "\nleading newline", "trailing newline\n", "a\r\nb", "3.14 is pi", "U.S.A.", "rock-n-roll", "don't",
    "e.g. this", "the_end", "a_b", "Café au lait", "naïve THE Ωmega", "“quoted”", "Straße", "ΟΔΟΣ", "İstanbul",
    "a\u00a0b", "a\u3000b", "A\u2028B", "tab\there", "ﬁsh", "北京", "the 北京", "\u200b",
    # characters where Python `re`/str and Rust `regex` disagree on \w / \s
    "a\u0301rbol",          # 'árbol' in NFD: a + combining acute accent
    "the\u0301",            # 'thé' in NFD
    "a² + b²",              # superscript digits
    "a½ cup",               # vulgar fraction
    "x\x1fy", "\x1f",       # ASCII unit separator (Python calls it whitespace)
]


def _polars(strings: list, name: str) -> list:
    return pl.DataFrame({"answer": strings}, schema={"answer": pl.String}).select(
        normalize.expr("answer", name)).to_series().to_list()


@pytest.mark.parametrize("name", sorted(normalize.STEPS))
@pytest.mark.parametrize("text", TRICKY, ids=repr)
def test_python_and_polars_normalisers_agree(name, text):
    assert normalize.normalize(text, name) == _polars([text], name)[0]


@pytest.mark.parametrize("name", sorted(normalize.STEPS))
def test_none_normalises_to_none_on_both_paths(name):
    assert normalize.normalize(None, name) is None
    assert _polars([None], name) == [None]


@pytest.mark.parametrize("text, name, want", [
    ("  The Eiffel Tower! ", "squad", "eiffel tower"),
    ("Yes. Because it is.", "squad", "yes because it is"),
    ("Yes. Because it is.", "first_line", "yes"),
    ("Yes.\nBecause", "first_line", "yes"),
    ("line one\nline two", "first_line", "line one"),
    ("3.14 is pi", "first_line", "314 is pi"),
    ("U.S.A.", "squad", "usa"),  # punctuation is deleted, as in SQuAD
    ("  Paris \n", "exact", "Paris"),
    ("", "squad", None), ("   ", "squad", None), ("\n\t", "exact", None), ("The", "squad", None),
    ("a an the", "first_line", None),
])
def test_normaliser_values(text, name, want):
    assert normalize.normalize(text, name) == want
    assert _polars([text], name) == [want]


def test_unknown_normaliser_lists_valid_ones():
    with pytest.raises(BonError) as err:
        normalize.get("fancy")
    assert all(n in str(err.value) for n in normalize.STEPS)
    with pytest.raises(BonError):
        normalize.expr("answer", "fancy")
