"""`python -m bon.run dataset=rehac`: value intervention policies and cost-aware Best-of-N on ReHAC's data.

Policies are valued on two question sets: `train` (`dataset.episodes`, the collaboration data) and `test`
(`dataset.test_episodes`, the step tree of the questions ReHAC's trained policy was run on). The trained
policy's episodes (`dataset.trained`) are matched to their test questions by their steps, valued at the
lambda it was trained for, and compared with every fixed policy question by question on those questions.

Writes into the run directory:
- summary.json: options, facts per question set, every policy / trained / reference / selector row (each with
  `questions`: train, test or other), the paired trained-vs-fixed differences (`trained_vs_fixed`), the best
  fixed policy per set and lambda, the advantage summary (train questions);
- policies.csv: one line per (policy, questions, lambda): coverage, matching episodes, ESS, T, C, rate, R with
  intervals (the trained policy: test questions, its own lambda only);
- best_of_n.csv: one line per (selector, questions, lambda), plus the best fixed policy (`best_fixed`);
- advantage.csv: one line per state of the train questions seen with both actors next (bon.rehac.advantage);
- reward_vs_lambda.png: mean R against lambda, one panel per question set (bon.rehac.plot);
- judge_predictions.jsonl: with the `judge` predictor, every episode's judgement (status, reason, labels).
No model is called, and litellm is never imported, unless `dataset.predictors` lists `judge`: then the run's
`judge` config (e.g. judge=deepseek) predicts T through the live pipeline's client and cache.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bon.datasets import ENV_ROOT as ENV_DATA
from bon.datasets import locate_release
from bon.errors import BonError, unknown_choice
from bon.fmt import is_number, pct
from bon.rehac import advantage, best_of_n, episodes, metrics, policies
from bon.rehac.episodes import Episode, Question
from bon.summary import REHAC_KIND

if TYPE_CHECKING:
    from bon.plan import RehacOffline

ENV_REHAC = "BON_REHAC_DIR"
PLOT = "reward_vs_lambda.png"
JUDGE_FILE = "judge_predictions.jsonl"
PREDICTOR_NAMES = (*best_of_n.PREDICTORS, "judge")
NOTE_REFERENCE = ("a trained ReHAC policy's own episodes on another task's questions: not comparable with the "
                  "policies above")
TRAIN, TEST = "train", "test"
TRAINED = "rehac_trained"


@dataclass(frozen=True)
class Options:
    root: Path
    episodes: Path
    test_episodes: Path | None
    trained: Path | None
    trained_lambda: float
    references: tuple[Path, ...]
    reward: str
    lambdas: tuple[float, ...]
    headline_lambda: float
    k_max: int
    rates: tuple[float, ...]
    behaviour: str
    predictors: tuple[str, ...]
    noise_accuracy: float
    noise_seed: int


def locate_root(path: str | None) -> Path:
    """The ReHAC release: `dataset.path`, else $BON_REHAC_DIR, else $BON_DATA_DIR/../rehac if it exists, else
    the pinned release downloaded and verified into the user cache (bon.datasets.fetch).

    A setting that points at no directory is an error naming it, never a silent fall-through.
    """
    from bon.datasets import fetch

    data_dir = os.environ.get(ENV_DATA)
    beside = Path(data_dir).expanduser() / ".." / "rehac" if data_dir else None
    settings = [("dataset.path", path), (ENV_REHAC, os.environ.get(ENV_REHAC)),
                (f"{ENV_DATA}/../rehac", beside if beside is not None and beside.is_dir() else None)]
    return locate_release("ReHAC", settings, holds=Path.is_dir, lacking="is not a directory",
                          download=lambda: fetch.ensure_cached(fetch.REHAC))


def _file(root: Path, value: Any, name: str) -> Path:
    if not isinstance(value, str) or not value:
        raise BonError(f"dataset.{name} must be a file path, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise BonError(f"dataset.{name}: no such file {path}")
    return path


def options(dataset: Mapping[str, Any], seed: int) -> Options:
    """Checked options from the `dataset` config group; every problem names its option."""
    root = locate_root(dataset.get("path"))
    refs = dataset.get("reference") or []
    if not isinstance(refs, list):
        raise BonError(f"dataset.reference must be a list of file paths, got {refs!r}")
    reward = dataset.get("reward", "em")
    if reward not in episodes.REWARDS:
        raise unknown_choice("reward (dataset.reward)", reward, episodes.REWARDS)
    lambdas = dataset.get("lambdas")
    if not isinstance(lambdas, list) or not lambdas or not all(is_number(x) and x >= 0 for x in lambdas):
        raise BonError(f"dataset.lambdas must be a non-empty list of non-negative numbers, got {lambdas!r}")
    headline = dataset.get("headline_lambda", 0.08)
    if not is_number(headline) or headline < 0:
        raise BonError(f"dataset.headline_lambda must be a non-negative number, got {headline!r}")
    trained_lambda = dataset.get("trained_lambda", 0.08)
    if not is_number(trained_lambda) or trained_lambda < 0:
        raise BonError(f"dataset.trained_lambda must be a non-negative number, got {trained_lambda!r}")
    grid = sorted({float(x) for x in lambdas} | {float(headline), float(trained_lambda)})
    k_max = dataset.get("k_max", 5)
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 0:
        raise BonError(f"dataset.k_max must be a non-negative integer, got {k_max!r}")
    rates = dataset.get("rates") or []
    if not isinstance(rates, list) or not all(is_number(p) and 0 <= p <= 1 for p in rates):
        raise BonError(f"dataset.rates must be a list of probabilities in [0, 1], got {rates!r}")
    behaviour = dataset.get("behaviour", "auto")
    if behaviour not in metrics.BEHAVIOURS:
        raise unknown_choice("behaviour (dataset.behaviour)", behaviour, metrics.BEHAVIOURS)
    predictors = dataset.get("predictors") or []
    if not isinstance(predictors, list):
        raise BonError(f"dataset.predictors must be a list, got {predictors!r}")
    for name in predictors:
        if name not in PREDICTOR_NAMES:
            raise unknown_choice("predictor (dataset.predictors)", name, PREDICTOR_NAMES)
    accuracy = dataset.get("noise_accuracy", 0.8)
    if not is_number(accuracy) or not 0 <= accuracy <= 1:
        raise BonError(f"dataset.noise_accuracy must be a number in [0, 1], got {accuracy!r}")
    noise_seed = dataset.get("noise_seed")
    noise_seed = seed if noise_seed is None else noise_seed
    if isinstance(noise_seed, bool) or not isinstance(noise_seed, int):
        raise BonError(f"dataset.noise_seed must be an integer, got {noise_seed!r}")
    test = dataset.get("test_episodes")
    trained = dataset.get("trained")
    if trained and not test:
        raise BonError("dataset.trained needs dataset.test_episodes: the step tree of the questions the trained "
                       "policy was run on, to compare it with fixed policies on the same questions")
    return Options(root, _file(root, dataset.get("episodes"), "episodes"),
                   _file(root, test, "test_episodes") if test else None,
                   _file(root, trained, "trained") if trained else None, float(trained_lambda),
                   tuple(_file(root, r, "reference") for r in refs), reward, tuple(grid), float(headline),
                   k_max, tuple(float(p) for p in dict.fromkeys(rates)), behaviour, tuple(dict.fromkeys(predictors)),
                   float(accuracy), noise_seed)


def _reference_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts if path.is_relative_to(root) else (path.stem,)
    return f"rehac:{parts[0] if len(parts) > 1 else path.stem}"


# --------------------------------------------------------------------------- question sets


@dataclass(frozen=True)
class QuestionSet:
    """Questions the policies are valued on: `train` (the collaboration data) or `test` (the trained policy's)."""

    name: str
    path: Path
    episodes: tuple[Episode, ...]
    questions: tuple[Question, ...]
    behaviour: str
    share: float  # the human's share of logged steps

    def facts(self, root: Path) -> dict[str, Any]:
        return {"questions": self.name, "file": _shown(self.path, root), "n_questions": len(self.questions),
                "n_episodes": len(self.episodes), "n_steps": sum(ep.n_steps for ep in self.episodes),
                "complete_trees": sum(episodes.is_complete_tree(q.episodes) for q in self.questions),
                "behaviour": self.behaviour, "human_step_share": self.share,
                "episodes_with_anomalies": sum(bool(ep.anomalies) for ep in self.episodes),
                "question_text_variants": sum(q.question_variants > 1 for q in self.questions)}


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def question_set(name: str, path: Path, logged: Sequence[Episode], behaviour: str) -> QuestionSet:
    """Group the episodes into questions and settle how they are weighted."""
    questions = episodes.group_questions(logged)
    resolved = metrics.resolve_behaviour(behaviour, questions)
    share = policies.human_step_share(logged)
    if resolved == "rate" and not 0 < share < 1:
        raise BonError(f"{path}: the human took {100 * share:.0f}% of the steps, so no behaviour rate "
                       f"strictly between 0 and 1 exists for importance weighting")
    return QuestionSet(name, path, tuple(logged), tuple(questions), resolved, share)


def trained_on_test(trained: list[Episode], test: list[Episode]) -> tuple[list[Episode], dict[str, list[Episode]]]:
    """The test episodes named with the trained file's question texts, and the trained episodes per test question."""
    leaves = episodes.match_to_tree(trained, test)
    texts = {leaf.question_id: ep.question for ep, leaf in zip(trained, leaves)}
    by_question: dict[str, list[Episode]] = {}
    for ep, leaf in zip(trained, leaves):
        by_question.setdefault(leaf.question_id, []).append(ep)
    return episodes.with_question_texts(test, texts), by_question


def compare_trained(test: QuestionSet, trained: Mapping[str, Sequence[Episode]], fixed: Sequence[policies.Policy],
                    reward: str, lam: float, rate: float | None, boot: Mapping[str, Any]) -> tuple[dict, list]:
    """The trained policy's row on the test questions (at its lambda only) and its paired difference from every
    fixed policy: R(trained) - R(policy) per question, bootstrapped over the questions both cover."""
    ids = [q.id for q in test.questions if q.id in trained]
    t = np.array([np.mean([ep.task_reward(reward) for ep in trained[i]]) for i in ids])
    c = np.array([np.mean([ep.n_human for ep in trained[i]]) for i in ids], dtype=float)
    steps = np.array([np.mean([ep.n_steps for ep in trained[i]]) for i in ids], dtype=float)
    n_episodes = sum(len(v) for v in trained.values())
    row = metrics.summarise(TRAINED, "trained", t, c, steps, [lam], deterministic=None, questions=TEST,
                            n_questions=len(test.questions), coverage=len(ids) / len(test.questions),
                            n_matching=n_episodes, ess=float(n_episodes), mass=None, **boot)
    paired = []
    for policy in fixed:
        values = metrics.per_question(test.questions, policy, reward, test.behaviour, rate)
        both = [i for i, qid in enumerate(ids) if "t" in values[qid]]
        p_t = np.array([values[ids[i]]["t"] for i in both])
        p_c = np.array([values[ids[i]]["c"] for i in both])
        paired.append({"policy": policy.name, **metrics.paired_difference(t[both], c[both], p_t, p_c, lam, **boot)})
    return row, paired


# --------------------------------------------------------------------------- outputs


def best_fixed(rows: Sequence[Mapping[str, Any]], lambdas: Sequence[float]) -> list[dict[str, Any]]:
    """Per lambda, the fixed policy with the highest mean R among those that cover every question."""
    full = [r for r in rows if r["kind"] == "fixed" and r["coverage"] == 1.0]
    out = []
    for lam in lambdas:
        if not full:
            out.append({"lambda": lam, "policy": None, "r": None, "ci_low": None, "ci_high": None})
            continue
        best = max(full, key=lambda r: metrics.r_at(r, lam)["r"])
        entry = metrics.r_at(best, lam)
        out.append({"lambda": lam, "policy": best["policy"], "r": entry["r"], "ci_low": entry["ci_low"],
                    "ci_high": entry["ci_high"]})
    return out


POLICY_COLUMNS = ("policy", "questions", "kind", "lambda", "n_questions", "coverage", "n_matching", "ess", "mass",
                  "t", "t_ci_low", "t_ci_high", "c", "c_ci_low", "c_ci_high", "intervention_rate", "r", "ci_low",
                  "ci_high")
BON_COLUMNS = ("selector", "questions", "policy", "lambda", "n_questions", "t", "c", "r", "ci_low", "ci_high",
               "r_first", "mean_tied", "mean_candidates", "candidate_human_steps", "no_prediction",
               "questions_skipped")


def _cell(x: Any) -> Any:
    return "" if x is None else (f"{x:.6g}" if isinstance(x, float) else x)


def write_policies_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(POLICY_COLUMNS)
        for row in rows:
            for entry in row["by_lambda"]:
                merged = {**row, **entry}
                writer.writerow([_cell(merged.get(k)) for k in POLICY_COLUMNS])
    return path


def write_best_of_n_csv(rows: Sequence[Mapping[str, Any]], envelope: Sequence[Mapping[str, Any]],
                        path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(BON_COLUMNS)
        for row in rows:
            writer.writerow([_cell(row.get(k)) for k in BON_COLUMNS])
        for row in envelope:
            writer.writerow([_cell({**row, "selector": "best_fixed"}.get(k)) for k in BON_COLUMNS])
    return path


def _f(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def format_policies(rows: Sequence[Mapping[str, Any]], lam: float) -> str:
    """The printed table: one line per policy at `lam`; T and R in task-reward units, C in human steps."""
    width = max(len("policy"), *(len(r["policy"]) for r in rows))
    head = (f"{'policy':<{width}}  {'cover%':>6}  {'match':>5}  {'ESS':>6}  {'T':>5}  {'C':>5}  {'human%':>6}"
            f"  {'R':>6}  {'95% CI':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        e = next((e for e in r["by_lambda"] if abs(e["lambda"] - lam) < 1e-12), None)
        if e is None:
            continue  # the trained policy is shown at its own lambda only
        ci = f"[{_f(e['ci_low'])}, {_f(e['ci_high'])}]"
        rate = pct(r["intervention_rate"], "-")
        lines.append(f"{r['policy']:<{width}}  {100 * r['coverage']:>6.1f}  {r['n_matching']:>5}  {r['ess']:>6.1f}"
                     f"  {_f(r['t']):>5}  {_f(r['c'], 2):>5}  {rate:>6}  {_f(e['r']):>6}  {ci:>15}")
    return "\n".join(lines)


def format_paired(paired: Sequence[Mapping[str, Any]]) -> str:
    width = max(len("policy"), *(len(p["policy"]) for p in paired))
    head = f"{'policy':<{width}}  {'R policy':>8}  {'R trained':>9}  {'trained - policy [95% CI]':>26}  {'+/-':>7}"
    lines = [head, "-" * len(head)]
    for p in paired:
        diff = f"{_f(p['diff'], signed=True)} [{_f(p['ci_low'], signed=True)}, {_f(p['ci_high'], signed=True)}]"
        lines.append(f"{p['policy']:<{width}}  {_f(p['r_b']):>8}  {_f(p['r_a']):>9}  {diff:>26}"
                     f"  {p['a_better']:>3}/{p['b_better']:<3}")
    return "\n".join(lines)


def format_selectors(rows: Sequence[Mapping[str, Any]], lam: float) -> str:
    mine = [r for r in rows if abs(r["lambda"] - lam) < 1e-12]
    width = max(len("selector"), *(len(r["selector"]) for r in mine))
    head = f"{'selector':<{width}}  {'T':>5}  {'C':>5}  {'R':>6}  {'95% CI':>15}  {'R first':>7}  {'ties':>5}"
    lines = [head, "-" * len(head)]
    for r in mine:
        ci = f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
        lines.append(f"{r['selector']:<{width}}  {_f(r['t']):>5}  {_f(r['c'], 2):>5}  {_f(r['r']):>6}  {ci:>15}"
                     f"  {_f(r['r_first']):>7}  {r['mean_tied']:>5.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run


def _best_of_n(qset: QuestionSet, opts: Options, predicted: Mapping[str, Sequence[np.ndarray]],
               boot: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [row for name, values in predicted.items()
            for row in best_of_n.evaluate_selector(name, qset.questions, values, opts.reward, opts.lambdas, **boot)]
    rows += best_of_n.evaluate_random_pick(qset.questions, opts.reward, opts.lambdas, **boot)
    return [{**row, "questions": qset.name} for row in rows]


def run_offline(chosen: RehacOffline, out_dir: Path) -> dict[str, Any]:
    """Everything above, for one planned run (bon.plan); returns the summary it writes."""
    seed, confidence, resamples = chosen.seed, chosen.confidence, chosen.resamples
    opts = options(chosen.dataset, seed)
    judge_cfg = chosen.judge
    if "judge" in opts.predictors:  # before any work: a live judge with its key
        from bon.rehac.judge_predictor import check_config

        check_config(judge_cfg)
    lam = opts.headline_lambda
    boot: dict[str, Any] = dict(confidence=confidence, n_resamples=resamples, seed=seed)

    sets = [question_set(TRAIN, opts.episodes, episodes.load_episodes(opts.episodes), opts.behaviour)]
    trained_by_question: dict[str, list[Episode]] = {}
    if opts.test_episodes is not None:
        test = episodes.load_episodes(opts.test_episodes)
        if opts.trained is not None:
            test, trained_by_question = trained_on_test(episodes.load_episodes(opts.trained), test)
        sets.append(question_set(TEST, opts.test_episodes, test, opts.behaviour))

    fixed = policies.fixed_policies(opts.k_max, opts.rates)
    policy_rows, envelopes = [], {}
    for qset in sets:
        rate = qset.share if qset.behaviour == "rate" else None
        rows = [{**metrics.evaluate_policy(qset.questions, p, opts.reward, opts.lambdas, qset.behaviour, rate,
                                           **boot), "questions": qset.name} for p in fixed]
        envelopes[qset.name] = [{**e, "questions": qset.name} for e in best_fixed(rows, opts.lambdas)]
        policy_rows += rows
    trained_row: dict[str, Any] | None = None
    paired: list[dict[str, Any]] = []
    if opts.trained is not None and trained_by_question:  # matched only when dataset.trained is given
        test_set = sets[-1]
        trained_row, paired = compare_trained(test_set, trained_by_question, fixed, opts.reward, opts.trained_lambda,
                                              test_set.share if test_set.behaviour == "rate" else None, boot)
        trained_row.update(source=_shown(opts.trained, opts.root))
    reference_rows = []
    for path in opts.references:
        ref = episodes.load_episodes(path)
        row = metrics.evaluate_logged(_reference_name(path, opts.root), episodes.group_questions(ref),
                                      opts.reward, opts.lambdas, **boot)
        row.update(source=str(path), note=NOTE_REFERENCE, questions="other")
        reference_rows.append(row)

    if "judge" in opts.predictors:  # a judge must see the question, which a step tree does not hold
        for qset in sets:
            blind = [q.id for q in qset.questions if episodes.unnamed(q.episodes[0])]
            if blind:
                raise BonError(f"dataset.predictors lists judge, but {len(blind)} question(s) of {qset.path} have "
                               f"no text (a step tree holds none; e.g. {blind[0]}): give the questions' episodes "
                               f"as JSONL, or for the test tree dataset.trained (its episodes carry the text)")
    out_dir.mkdir(parents=True, exist_ok=True)
    judge_usage = None
    by_key: dict[str, float | None] = {}  # episode key -> the judge's predicted T, when predictors list judge
    if "judge" in opts.predictors:  # one pass over every set's episodes: one file, one usage record
        from bon.rehac import judge_predictor

        by_key, judge_usage = judge_predictor.judge_episodes([q for s in sets for q in s.questions], judge_cfg,
                                                             chosen.cache, out_dir / JUDGE_FILE)
    bon_rows = []
    for qset in sets:
        predicted = {}
        for name in opts.predictors:
            if name == "judge":
                predictor = lambda ep: by_key[ep.key]  # noqa: E731
            else:
                predictor = best_of_n.make_predictor(name, qset.questions, opts.reward,
                                                     {"accuracy": opts.noise_accuracy, "seed": opts.noise_seed})
            predicted[name] = best_of_n.predictions(name, predictor, qset.questions)
        bon_rows += _best_of_n(qset, opts, predicted, boot)

    states, n_states = advantage.advantage_table(sets[0].questions, opts.reward)

    envelope = [e for qset in sets for e in envelopes[qset.name]]
    all_policy_rows = policy_rows + ([trained_row] if trained_row else []) + reference_rows
    files = {"policies": write_policies_csv(all_policy_rows, out_dir / "policies.csv"),
             "best_of_n": write_best_of_n_csv(bon_rows, envelope, out_dir / "best_of_n.csv"),
             "advantage": advantage.write_csv(states, lam, out_dir / "advantage.csv")}
    if judge_usage is not None:
        files["judge_predictions"] = out_dir / JUDGE_FILE
    panels = []
    for qset in reversed(sets):  # test first: that is where the trained policy is
        mine = [r for r in bon_rows if r["questions"] == qset.name]
        panels.append({"name": qset.name, "n_questions": len(qset.questions), "best_of_n": mine,
                       "best_fixed": envelopes[qset.name],
                       "mean_candidates": len(qset.episodes) / len(qset.questions),
                       "candidate_human_steps": mine[0]["candidate_human_steps"] if mine else float("nan")})
    from bon.rehac.plot import plot

    level = f"{100 * confidence:g}%"
    best_at_trained = next((e["policy"] for e in envelopes.get(TEST, ()) if e["lambda"] == opts.trained_lambda), None)
    notes = [f"paired on the same {p['n_questions']} questions, λ = {p['lambda']:g}:" if i == 0 else "" for i, p in
             enumerate(paired[:1])]
    notes += [f"trained − {p['policy']}: {_f(p['diff'], signed=True)} [{_f(p['ci_low'], signed=True)}, "
              f"{_f(p['ci_high'], signed=True)}]" for p in paired if p["policy"] in ("never", best_at_trained)]
    files["plot"] = plot(panels, trained_row, out_dir / PLOT,
                         f"ReHAC StrategyQA: R = T − λ·C with T = {opts.reward}, "
                         f"every curve on its panel's questions",
                         level, {"noisy_oracle": f"Best-of-N, noisy_oracle ({100 * opts.noise_accuracy:g}% correct)",
                                 "judge": f"Best-of-N, LLM judge {judge_cfg.get('name')} (FINAL_RESULT)"}, notes)

    summary: dict[str, Any] = {
        "kind": REHAC_KIND, "dataset": "rehac", "reward": opts.reward, "lambdas": list(opts.lambdas),
        "headline_lambda": lam, "trained_lambda": opts.trained_lambda, "confidence": confidence,
        "question_sets": [s.facts(opts.root) for s in sets],
        "policies": policy_rows, "trained": trained_row, "trained_vs_fixed": paired, "reference": reference_rows,
        "best_fixed": envelope, "best_of_n": bon_rows,
        "noise_accuracy": opts.noise_accuracy, "noise_seed": opts.noise_seed,
        "advantage": {"questions": TRAIN, "lambda": lam, "n_states": n_states, "n_states_both_actors": len(states),
                      "by_step": advantage.summary_by_step(states, lam)},
        "files": {k: p.name for k, p in files.items()},
    }
    if judge_usage is not None:
        summary["usage"] = {"judging": judge_usage}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(summary, sets, opts, all_policy_rows, bon_rows, judge_usage, files, out_dir)
    return summary


def _print(summary: Mapping[str, Any], sets: Sequence[QuestionSet], opts: Options,
           rows: Sequence[Mapping[str, Any]], bon_rows: Sequence[Mapping[str, Any]], judge_usage: Any,
           files: Mapping[str, Path], out_dir: Path) -> None:
    lam = opts.headline_lambda
    print(f"rehac: T = {opts.reward}, C = human steps, R = T - λ*C; headline λ = {lam:g}")
    for facts in summary["question_sets"]:
        estimator = ("exact expectation over complete agent/human trees" if facts["behaviour"] == "tree"
                     else f"self-normalised importance weights, behaviour rate {facts['human_step_share']:.3f}")
        print(f"{facts['questions']} questions: {facts['file']} ({facts['n_questions']} questions, "
              f"{facts['n_episodes']} episodes; {facts['complete_trees']} complete trees); estimator: "
              f"{facts['behaviour']} ({estimator}); human took {100 * facts['human_step_share']:.1f}% of logged steps")
    for qset in sets:
        mine = [r for r in rows if r.get("questions") == qset.name]
        print(f"\npolicies on the {qset.name} questions ({len(qset.questions)}) at λ={lam:g}:")
        print(format_policies(mine, lam))
        best = next(e for e in summary["best_fixed"] if e["questions"] == qset.name and abs(e["lambda"] - lam) < 1e-12)
        if best["policy"] is not None:
            print(f"best fixed policy at λ={lam:g}: {best['policy']} (R {_f(best['r'])})")
    trained = summary["trained"]
    if trained is not None:
        entry = trained["by_lambda"][0]
        print(f"\ntrained ReHAC policy ({trained['source']}, λ={entry['lambda']:g}): {trained['n_matching']} "
              f"episodes, each matched to its test question by its steps; R {_f(entry['r'])} "
              f"[{_f(entry['ci_low'])}, {_f(entry['ci_high'])}] on {trained['n_covered']} of "
              f"{trained['n_questions']} test questions")
        print(f"paired on the same test questions at λ={entry['lambda']:g} (bootstrap over questions; "
              f"+/-: questions where the trained policy is better / worse):")
        print(format_paired(summary["trained_vs_fixed"]))
    others = [r for r in rows if r.get("questions") == "other"]
    if others:
        print(f"\n{NOTE_REFERENCE}:")
        print(format_policies(others, lam))
    for qset in sets:
        mine = [r for r in bon_rows if r["questions"] == qset.name]
        print(f"\nBest-of-N on the {qset.name} questions at λ={lam:g}: pick the episode with the highest predicted "
              f"T - λ·C ({len(qset.episodes) / len(qset.questions):.1f} episodes per question)")
        print(format_selectors(mine, lam))
        for r in mine:
            if abs(r["lambda"] - lam) < 1e-12 and r["no_prediction"]:
                print(f"note: {r['selector']} has no prediction for {r['no_prediction']} episodes (failed "
                      f"judgements, reasons in {JUDGE_FILE}); {r['questions_skipped']} question(s) with none are "
                      f"left out of its row")
        if mine:
            print(f"note: C is the picked episode's cost; running every candidate took "
                  f"{mine[0]['candidate_human_steps']:.1f} human steps per question")
    adv = summary["advantage"]
    by_step = ", ".join(f"step {s['step']}: {_f(s['mean_advantage'], signed=True)} ({s['n_states']})"
                        for s in adv["by_step"])
    print(f"\nadvantage of human over agent on the train questions at λ={lam:g}, mean by step (states): {by_step}; "
          f"{adv['n_states_both_actors']} of {adv['n_states']} states saw both actors next")
    if judge_usage is not None:
        from bon.llm.client import format_usage

        print(format_usage("judging", judge_usage))
    anomalies = sum(f["episodes_with_anomalies"] for f in summary["question_sets"])
    if anomalies:
        print(f"note: {anomalies} episodes had repaired oddities (listed per episode by bon.rehac.episodes)")
    print(f"wrote {out_dir / 'summary.json'}, {', '.join(p.name for p in files.values())}")
