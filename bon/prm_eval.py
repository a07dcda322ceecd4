"""`python -m bon.prm_eval`: how well does each judge label steps? StepAcc and FirstErrAcc vs human labels.

Writes prm_eval.csv (accuracies in percent; subset `avg` pools the counts of all subsets,
as the AgentProcessBench paper's average does) and confusion.csv into the run directory.
`first_err_acc` is the paper's definition; `first_err_acc_strict` is the stricter reading
documented in bon.metrics, kept as an extra column.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import polars as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bon import config, datasets
from bon.config import AgentProcessBenchDataset, CacheOptions, LLMJudge, NamedJudge, RunStarted, conf_dir, hydra_command
from bon.datasets import agentprocessbench as apb
from bon.errors import BonError, exit_on_user_error, unknown_choice
from bon.metrics import LABEL_ORDER, PrmScore, StepTable

AVG = "avg"


def _live_judgements(root: Path, records: list, judge: LLMJudge,
                     cache: CacheOptions | Mapping[str, Any]) -> tuple[str, dict, list]:
    """Judge the released trajectories (hotpotqa only) live; the other subsets have no transcripts."""
    from bon import build  # imports litellm only on this path

    transcripts = apb.trajectories(root)
    kept = [r for r in records if r.record_id in transcripts]
    if not kept:
        raise BonError("a live judge needs trajectories, and AgentProcessBench releases them for hotpotqa only: "
                       "use dataset.subset=hotpotqa")
    skipped = sorted({r.subset for r in records} - {r.subset for r in kept})
    if skipped:
        print(f"note: no released trajectories for {', '.join(skipped)}; scoring hotpotqa only")
    judgements, _ = build.judge_trajectories(judge, cache, [transcripts[r.record_id] for r in kept])
    name = judgements[0].judge if judgements else str(judge.name)
    return name, {r.record_id: j for r, j in zip(kept, judgements)}, kept


def score(dataset: AgentProcessBenchDataset | Mapping[str, Any], judge: LLMJudge | NamedJudge | Mapping[str, Any],
          cache: CacheOptions | Mapping[str, Any] | None = None) -> dict[str, dict[str, PrmScore]]:
    """PrmScore per judge and subset, plus the pooled `avg` entry per judge: the recorded judges' (`judge=replay`),
    the human labels' (`judge=human`), or a live judge's (an LLMJudge: it labels the released trajectories)."""
    options: Any = judge
    if isinstance(options, Mapping):
        kind = options.get("kind", "replay")
        if kind not in ("replay", "human", "llm"):
            raise unknown_choice("judge kind for bon.prm_eval", kind, ("replay", "human", "llm"))
        options = config.typed(LLMJudge if kind == "llm" else NamedJudge, options, "judge.")
    if isinstance(options, LLMJudge):
        root = datasets.locate_root(datasets.records_options(dataset).root)
        records = datasets.records(dataset, root)
        name, by_record, records = _live_judgements(root, records, options, cache or {})
        judges, lookup = [name], lambda _, part: [by_record[r.record_id] for r in part]
    else:
        root, judges = datasets.judge_names(dataset, options)
        records = datasets.records(dataset, root)
        lookup = lambda name, part: apb.judgements_for(root, name, part)  # noqa: E731
    scores: dict[str, dict[str, PrmScore]] = {}
    by_subset: dict[str, list] = {}
    for record in records:
        by_subset.setdefault(record.subset, []).append(record)
    tables = {subset: StepTable.build([(r.steps, r.human) for r in part]) for subset, part in by_subset.items()}
    for name in judges:
        per_subset = {subset: tables[subset].score(lookup(name, part)) for subset, part in by_subset.items()}
        per_subset[AVG] = sum(per_subset.values(), PrmScore())
        scores[name] = per_subset
    return scores


def to_frame(scores: dict[str, dict[str, PrmScore]]) -> pl.DataFrame:
    return pl.DataFrame([
        {"judge": judge, "subset": subset, "step_acc": round(100 * s.step_acc, 2),
         "first_err_acc": round(100 * s.first_err_acc, 2),
         "first_err_acc_strict": round(100 * s.first_err_acc_strict, 2), "n_steps": s.n_steps,
         "n_trajectories": s.n_trajectories, "n_failed": s.n_failed}
        for judge, per_subset in scores.items() for subset, s in per_subset.items()
    ])


def confusion_frame(scores: dict[str, dict[str, PrmScore]]) -> pl.DataFrame:
    """Row-normalised confusion (human label x judge label, pooled over subsets), long format."""
    rows = []
    for judge, per_subset in scores.items():
        pooled = per_subset[AVG]
        norm = pooled.row_normalized()
        for h, human in enumerate(LABEL_ORDER):
            for p, pred in enumerate((*LABEL_ORDER, "missing")):
                rows.append({"judge": judge, "human": human, "judge_label": str(pred),
                             "count": int(pooled.confusion[h, p]), "share": float(norm[h, p])})
    return pl.DataFrame(rows)


def format_table(frame: pl.DataFrame) -> str:
    """StepAcc / FirstErrAcc per subset as in the paper's Table 3; `strict` is the avg under the stricter reading."""
    subsets = list(dict.fromkeys(frame["subset"]))
    width = max(len("judge"), *(len(j) for j in frame["judge"]))
    head = f"{'judge':<{width}}  " + "  ".join(f"{s:>13}" for s in subsets) + "  failed  strict"
    lines = ["StepAcc / FirstErrAcc (%)", head, "-" * len(head)]
    for judge, part in frame.group_by("judge", maintain_order=True):
        by = {r["subset"]: r for r in part.iter_rows(named=True)}
        cells = "  ".join(f"{by[s]['step_acc']:>6.1f}/{by[s]['first_err_acc']:<6.1f}" for s in subsets)
        lines.append(f"{judge[0]:<{width}}  {cells}  {by[AVG]['n_failed']:>6}  {by[AVG]['first_err_acc_strict']:>6.1f}")
    lines.append("strict: FirstErrAcc (avg) with failed calls and unresolved first errors counted as mismatches")
    return "\n".join(lines)


def format_confusion(scores: dict[str, dict[str, PrmScore]]) -> str:
    lines = ["Confusion, rows = human label, columns = judge label (row-normalised %, pooled over subsets)"]
    for judge, per_subset in scores.items():
        norm = per_subset[AVG].row_normalized()
        lines.append(f"{judge}\n  human\\judge      -1      0     +1  missing")
        for h, human in enumerate(("-1", " 0", "+1")):
            cells = "  ".join(f"{100 * x:5.1f}" for x in norm[h, :3])
            lines.append(f"  {human:>11}  {cells}  {100 * norm[h, 3]:7.1f}")
    return "\n".join(lines)


def _group(cfg: DictConfig, name: str) -> dict[str, Any]:
    """One config group as plain values (interpolations resolved)."""
    values = OmegaConf.to_container(cfg[name], resolve=True)
    assert isinstance(values, dict)  # a config group is a mapping
    return {str(k): v for k, v in values.items()}


@exit_on_user_error
def run(cfg: DictConfig, out_dir: Path) -> pl.DataFrame:
    scores = score(_group(cfg, "dataset"), _group(cfg, "judge"), _group(cfg, "cache"))
    frame = to_frame(scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out_dir / "prm_eval.csv")
    confusion_frame(scores).write_csv(out_dir / "confusion.csv")
    print(format_table(frame))
    print()
    print(format_confusion(scores))
    print(f"wrote {out_dir / 'prm_eval.csv'} and {out_dir / 'confusion.csv'}")
    return frame


_started = RunStarted()  # set once Hydra has made the run directory and calls the task (picklable for launchers)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="prm_eval")
def _hydra_main(cfg: DictConfig) -> None:
    _started.set()
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    """`python -m bon.prm_eval`: bad input is one line and exit 2, Ctrl-C one line and exit 130."""
    hydra_command(_hydra_main, _started)


if __name__ == "__main__":
    main()
