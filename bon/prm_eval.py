"""`python -m bon.prm_eval`: how well does each judge label steps? StepAcc and FirstErrAcc vs human labels.

Writes prm_eval.csv (accuracies in percent; subset `avg` pools the counts of all subsets,
as the AgentProcessBench paper's average does) and confusion.csv into the run directory.
`first_err_acc` is the paper's definition; `first_err_acc_strict` is the stricter reading
documented in bon.metrics, kept as an extra column.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bon import config, datasets
from bon.config import AgentProcessBenchDataset, CacheOptions, LLMJudge, NamedJudge, RunStarted, conf_dir, hydra_command
from bon.datasets import agentprocessbench as apb
from bon.errors import BonError, exit_on_user_error, finished, unknown_choice
from bon.metrics import LABEL_ORDER, PrmScore, StepTable

if TYPE_CHECKING:
    import polars as pl

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
    if not isinstance(options, LLMJudge):
        return _score_recorded(dataset, options)
    root = datasets.locate_root(datasets.records_options(dataset).root)
    records = datasets.records(dataset, root)
    name, by_record, records = _live_judgements(root, records, options, cache or {})
    by_subset: dict[str, list] = {}
    for record in records:
        by_subset.setdefault(record.subset, []).append(record)
    per_subset = {subset: StepTable.build([(r.steps, r.human) for r in part])
                  .score([by_record[r.record_id] for r in part]) for subset, part in by_subset.items()}
    return {name: _pooled(per_subset)}


def _score_recorded(dataset: AgentProcessBenchDataset | Mapping[str, Any],
                    judge: NamedJudge) -> dict[str, dict[str, PrmScore]]:
    """The recorded judges' (or the human labels') scores, counted from the label files' arrays
    (bon.datasets.apb_cache: cached between runs, no Judgement per record)."""
    root, judges = datasets.judge_names(dataset, judge)
    human = {subset: apb.human_columns(root, subset)
             for subset in apb.subsets(str(datasets.records_options(dataset).subset))}
    tables = {subset: StepTable.from_labels(len(labels.record_ids), *labels.for_records(labels.record_ids)[1:])
              for subset, labels in human.items()}
    directories = apb.judge_dirs(root) if judges != [apb.HUMAN] else {}
    scores = {}
    for name in judges:
        per_subset = {}
        for subset, table in tables.items():
            judged = apb.judge_columns(root, name, subset, directories.get(name))
            per_subset[subset] = table.score_labels(*judged.for_records(human[subset].record_ids))
        scores[name] = _pooled(per_subset)
    return scores


def _pooled(per_subset: dict[str, PrmScore]) -> dict[str, PrmScore]:
    """The scores per subset and, under `avg`, their pooled counts."""
    return {**per_subset, AVG: sum(per_subset.values(), PrmScore())}


def table_rows(scores: dict[str, dict[str, PrmScore]]) -> list[dict[str, Any]]:
    """The rows of prm_eval.csv: accuracies in percent per judge and subset."""
    return [{"judge": judge, "subset": subset, "step_acc": round(100 * s.step_acc, 2),
             "first_err_acc": round(100 * s.first_err_acc, 2),
             "first_err_acc_strict": round(100 * s.first_err_acc_strict, 2), "n_steps": s.n_steps,
             "n_trajectories": s.n_trajectories, "n_failed": s.n_failed}
            for judge, per_subset in scores.items() for subset, s in per_subset.items()]


def confusion_rows(scores: dict[str, dict[str, PrmScore]]) -> list[dict[str, Any]]:
    """The rows of confusion.csv: row-normalised confusion (human label x judge label, pooled over subsets)."""
    rows = []
    for judge, per_subset in scores.items():
        pooled = per_subset[AVG]
        norm = pooled.row_normalized()
        for h, human in enumerate(LABEL_ORDER):
            for p, pred in enumerate((*LABEL_ORDER, "missing")):
                rows.append({"judge": judge, "human": human, "judge_label": str(pred),
                             "count": int(pooled.confusion[h, p]), "share": float(norm[h, p])})
    return rows


def to_frame(scores: dict[str, dict[str, PrmScore]]) -> pl.DataFrame:
    """`table_rows` as a polars frame (polars is imported here only: the command itself does without it)."""
    import polars as pl

    return pl.DataFrame(table_rows(scores))


def confusion_frame(scores: dict[str, dict[str, PrmScore]]) -> pl.DataFrame:
    """`confusion_rows` as a polars frame, long format."""
    import polars as pl

    return pl.DataFrame(confusion_rows(scores))


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Rows (at least one, all with the same keys) as CSV, byte for byte as polars' DataFrame.write_csv writes
    them: no polars import (a fifth of the command's time) for two small files."""
    lines: list[Iterable[object]] = [rows[0].keys(), *(row.values() for row in rows)]
    path.write_bytes("".join(",".join(map(_csv_cell, line)) + "\n" for line in lines).encode("utf-8"))


def _csv_cell(value: object) -> str:
    """One CSV field as polars writes it: shortest round-trip floats (positional from 1e-5 up, NaN), text quoted
    when empty or holding a comma, quote or line break."""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        mantissa, _, exponent = repr(value).partition("e")
        if not exponent.startswith("-"):
            return repr(value)
        power = int(exponent[1:])
        if power == 5:
            return f"{'-' if value < 0 else ''}0.0000{mantissa.lstrip('-').replace('.', '')}"
        return f"{mantissa}e-{power}"
    text = str(value)
    if not text or any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_table(table: Sequence[Mapping[str, Any]] | pl.DataFrame) -> str:
    """StepAcc / FirstErrAcc per subset as in the paper's Table 3; `strict` is the avg under the stricter reading.

    `table`: `table_rows` (or `to_frame`) of the scores."""
    rows: Sequence[Mapping[str, Any]] = table.to_dicts() if hasattr(table, "to_dicts") else table
    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    by_judge: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by_judge.setdefault(r["judge"], {})[r["subset"]] = r
    width = max(len("judge"), *(len(j) for j in by_judge))
    head = f"{'judge':<{width}}  " + "  ".join(f"{s:>13}" for s in subsets) + "  failed  strict"
    lines = ["StepAcc / FirstErrAcc (%)", head, "-" * len(head)]
    for judge, by in by_judge.items():
        cells = "  ".join(f"{by[s]['step_acc']:>6.1f}/{by[s]['first_err_acc']:<6.1f}" for s in subsets)
        lines.append(f"{judge:<{width}}  {cells}  {by[AVG]['n_failed']:>6}  {by[AVG]['first_err_acc_strict']:>6.1f}")
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
def run(cfg: DictConfig, out_dir: Path) -> list[dict[str, Any]]:
    """Score, write prm_eval.csv and confusion.csv, print both tables; the rows of prm_eval.csv."""
    if cfg.dataset.get("name") != "agentprocessbench":  # refused before its options are read (rehac's read `seed`)
        datasets.records_options({"name": cfg.dataset.get("name")})
    scores = score(_group(cfg, "dataset"), _group(cfg, "judge"), _group(cfg, "cache"))
    rows = table_rows(scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / "prm_eval.csv")
    write_csv(confusion_rows(scores), out_dir / "confusion.csv")
    print(format_table(rows))
    print()
    print(format_confusion(scores))
    print(f"wrote {out_dir / 'prm_eval.csv'} and {out_dir / 'confusion.csv'}")
    return rows


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
    finished()  # done: no interpreter teardown (bon.errors.finished)
