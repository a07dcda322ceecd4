"""ReHAC's logged human-agent episodes: parse the one-string trajectories into typed steps.

A ReHAC record is `{"idx"?, "trajectory", "em", "f1"}`. The trajectory is plain text: optional
instructions (InterCode), a `Question: ...` line, then steps, each opened by `<solver> agent` or
`<solver> human` and followed by ReAct lines `Thought i:` (absent in InterCode), `Action i:` and
`Observation i:`; InterCode ends with a bare `reward = x` line. A line that opens no field continues
the previous one (a multi-line observation).

What the released files really contain, and how it is handled (nothing here is silent: every repair is
listed in `Episode.anomalies`):
- a step with two `Thought` lines (the model wrote a truncated observation as a thought): joined;
- a `Thought` numbered differently from its step: kept;
- stray label fragments on a line of their own (`Observation`, `Observ`): dropped;
- an `em` that disagrees with the reward the environment logged: kept (em is the task reward).
Anything else that breaks the structure is a BonError naming the file, the line and what was expected.

A step tree (`strategyqa/test_data/localgpt_*.jsonl`: one JSON object, not JSONL) is read by `load_tree`;
`load_episodes` recognises it. Its keys are `"(idx, 'path')"` (path: one `0` agent / `1` human character
per step so far), a node holds that step's text and a leaf the string of a tuple `(last step, em, f1)`; each
leaf becomes one episode (its `node` is the key). The tree has no question text: `question` is
`idx <n>` until `with_question_texts` names it.

Questions: the collaboration data carries `idx`, and the question text of one idx can differ between
episodes (a typo, "WouldL"), so episodes are grouped by idx. The ReHAC results files have no idx; their
questions are all distinct, so they are grouped by question text (each episode is its own question).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bon import jsonl
from bon.errors import BonError, unknown_choice

AGENT = "agent"
HUMAN = "human"
ACTORS = (AGENT, HUMAN)
REWARDS = ("em", "f1")

_SOLVER = re.compile(r"<solver>\s*(\S*)\s*$")
_FIELD = re.compile(r"(Thought|Action|Observation) (\d+):[ \t]?(.*)$")
_QUESTION = re.compile(r"Question:\s*(.*)$")
_REWARD_LINE = re.compile(r"reward = (\S+)\s*$")
_LOGGED_REWARD = re.compile(r"(?:^|\W)reward = ([-+0-9.eE]+)\s*$")
_FINISH = re.compile(r"Finish\[(.*)\]\s*$", re.DOTALL)
_LABELS = ("Thought", "Action", "Observation")


@dataclass(frozen=True)
class Step:
    """One step: who took it (agent or human) and its ReAct fields (`thought` is None in InterCode)."""

    actor: str
    action: str
    thought: str | None = None
    observation: str | None = None


@dataclass(frozen=True)
class Episode:
    """One logged collaboration episode; `line` is its 1-based line in `source`."""

    source: str
    line: int
    question: str
    steps: tuple[Step, ...]
    em: float
    f1: float
    idx: int | None = None
    preamble: str | None = None
    logged_reward: float | None = None
    anomalies: tuple[str, ...] = ()
    node: str | None = None  # the leaf's key in a step tree ("(idx, 'path')"), None for a JSONL record

    @property
    def key(self) -> str:
        """Stable name of the episode: file name and line (or tree key)."""
        return f"{Path(self.source).name}:{self.node or self.line}"

    @property
    def question_id(self) -> str:
        """What groups episodes into questions: the idx when the record has one, else the question text."""
        return f"idx:{self.idx}" if self.idx is not None else f"q:{self.question}"

    @property
    def actors(self) -> tuple[str, ...]:
        return tuple(s.actor for s in self.steps)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def n_human(self) -> int:
        """The cost C of the episode: its number of human steps."""
        return sum(s.actor == HUMAN for s in self.steps)

    @property
    def answer(self) -> str | None:
        """The argument of a well-formed final `Finish[...]`; None when the episode never finished.

        A `Finish[false` without its bracket was rejected by the environment ("Invalid action"), so it is
        not an answer.
        """
        if not self.steps:
            return None
        match = _FINISH.match(self.steps[-1].action.strip())
        return match.group(1).strip() if match else None

    def task_reward(self, reward: str) -> float:
        """T: the episode's `em` or `f1`."""
        if reward == "em":
            return self.em
        if reward == "f1":
            return self.f1
        raise unknown_choice("reward", reward, REWARDS)


@dataclass(frozen=True)
class Question:
    """All episodes of one question, in file order."""

    id: str
    question: str
    episodes: tuple[Episode, ...]
    question_variants: int = 1  # distinct question texts among the episodes (a typo makes 2)


# --------------------------------------------------------------------------- parsing


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BonError(f"{where}: {name} must be a number or a boolean, got {value!r}")
    if not 0 <= value <= 1:
        raise BonError(f"{where}: {name} must lie in [0, 1], got {value!r}")
    return float(value)


def _is_fragment(text: str) -> bool:
    """A stray, truncated field label on a line of its own ('Observation', 'Observ')."""
    return len(text) >= 3 and any(label.startswith(text) for label in _LABELS)


class _StepBuilder:
    def __init__(self, actor: str, number: int, line: int) -> None:
        self.actor, self.number, self.line = actor, number, line
        self.thoughts: list[str] = []
        self.action: str | None = None
        self.observation: str | None = None
        self.last: str | None = None  # the field a continuation line extends

    def build(self, where: str) -> Step:
        if self.action is None:
            raise BonError(f"{where}: trajectory line {self.line}: step {self.number} ({self.actor}) has no "
                           f"'Action {self.number}:' line before the next '<solver>' or the end")
        thought = "\n".join(self.thoughts) if self.thoughts else None
        return Step(self.actor, self.action, thought, self.observation)


def parse_trajectory(text: str, where: str) -> tuple[str, str | None, tuple[Step, ...], list[str], float | None]:
    """(question, preamble, steps, anomalies, logged reward) of one trajectory string.

    `where` ("file:line") prefixes every error, which also names the line inside the trajectory.
    """
    lines = text.split("\n")
    question: str | None = None
    preamble: list[str] = []
    steps: list[Step] = []
    anomalies: list[str] = []
    current: _StepBuilder | None = None
    logged: float | None = None
    ended_at: int | None = None
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        if ended_at is not None:
            raise BonError(f"{where}: trajectory line {n}: text after the final 'reward = ...' line "
                           f"(line {ended_at}): {line[:60]!r}")
        if question is None:
            match = _QUESTION.match(line)
            if match:
                question = match.group(1).strip()
                if not question:
                    raise BonError(f"{where}: trajectory line {n}: empty 'Question:' line")
            elif _SOLVER.match(line) or _FIELD.match(line):
                raise BonError(f"{where}: trajectory line {n}: expected a 'Question: ...' line before the first step, "
                               f"got {line[:60]!r}")
            else:
                preamble.append(line)  # task instructions before the question (InterCode)
            continue
        solver = _SOLVER.match(line)
        if solver:
            actor = solver.group(1)
            if actor not in ACTORS:
                raise BonError(f"{where}: trajectory line {n}: unknown solver {actor!r}; "
                               f"expected '<solver> agent' or '<solver> human'")
            if current is not None:
                steps.append(current.build(where))
            current = _StepBuilder(actor, len(steps) + 1, n)
            continue
        reward_line = _REWARD_LINE.match(line)
        if reward_line and current is not None and current.action is not None:
            try:
                logged = float(reward_line.group(1))
            except ValueError:
                raise BonError(f"{where}: trajectory line {n}: 'reward = ' must be followed by a number, "
                               f"got {reward_line.group(1)!r}") from None
            ended_at = n
            continue
        field = _FIELD.match(line)
        if field:
            if current is None:
                raise BonError(f"{where}: trajectory line {n}: expected '<solver> agent' or '<solver> human' "
                               f"before {field.group(1)} {field.group(2)}")
            kind, number, body = field.group(1), int(field.group(2)), field.group(3).strip()
            if kind == "Thought":
                if current.action is not None:
                    raise BonError(f"{where}: trajectory line {n}: 'Thought {number}:' after the action of step "
                                   f"{current.number}; expected '<solver> agent' or '<solver> human' first")
                if number != current.number:
                    anomalies.append(f"step {current.number}: thought numbered {number}")
                if current.thoughts:
                    anomalies.append(f"step {current.number}: {len(current.thoughts) + 1} thought lines, joined")
                current.thoughts.append(body)
            else:
                if number != current.number:
                    raise BonError(f"{where}: trajectory line {n}: expected '{kind} {current.number}:' "
                                   f"(step {current.number}), got '{kind} {number}:'")
                if kind == "Action":
                    if current.action is not None:
                        raise BonError(f"{where}: trajectory line {n}: a second 'Action {number}:' in step {number}")
                    current.action = body
                else:
                    if current.action is None:
                        raise BonError(f"{where}: trajectory line {n}: 'Observation {number}:' before "
                                       f"'Action {number}:'")
                    if current.observation is not None:
                        raise BonError(f"{where}: trajectory line {n}: a second 'Observation {number}:' "
                                       f"in step {number}")
                    current.observation = body
            current.last = kind
            continue
        if _is_fragment(line.strip()):
            anomalies.append(f"trajectory line {n}: stray fragment {line.strip()!r} dropped")
            continue
        if current is None:
            raise BonError(f"{where}: trajectory line {n}: expected '<solver> agent' or '<solver> human' "
                           f"after the question, got {line[:60]!r}")
        if current.last is None:
            raise BonError(f"{where}: trajectory line {n}: expected 'Thought {current.number}:' or "
                           f"'Action {current.number}:' after '<solver> {current.actor}', got {line[:60]!r}")
        if current.last == "Thought":
            current.thoughts[-1] += "\n" + line
        elif current.last == "Action":
            current.action = f"{current.action}\n{line}"
        else:
            current.observation = f"{current.observation}\n{line}"
    if question is None:
        raise BonError(f"{where}: no 'Question: ...' line in the trajectory")
    if current is None:
        raise BonError(f"{where}: the trajectory has no steps (expected '<solver> agent' or '<solver> human')")
    steps.append(current.build(where))
    if logged is None and steps[-1].observation:
        match = _LOGGED_REWARD.search(steps[-1].observation)
        logged = float(match.group(1)) if match else None
    return question, ("\n".join(preamble) or None), tuple(steps), anomalies, logged


def parse_record(record: dict[str, Any], source: str, line: int) -> Episode:
    """One JSONL record -> Episode; errors name `source:line`."""
    where = f"{source}:{line}"
    missing = [k for k in ("trajectory", "em", "f1") if k not in record]
    if missing:
        raise BonError(f"{where}: missing field(s) {', '.join(missing)} "
                       f"(a ReHAC record has trajectory, em, f1 and optionally idx)")
    if not isinstance(record["trajectory"], str):
        raise BonError(f"{where}: trajectory must be a string, got {type(record['trajectory']).__name__}")
    idx = record.get("idx")
    if idx is not None and (isinstance(idx, bool) or not isinstance(idx, int)):
        raise BonError(f"{where}: idx must be an integer, got {idx!r}")
    em = _number(record["em"], "em", where)
    f1 = _number(record["f1"], "f1", where)
    question, preamble, steps, anomalies, logged = parse_trajectory(record["trajectory"], where)
    if logged is not None and logged != em:
        anomalies.append(f"em {em:g} differs from the logged reward {logged:g}")
    return Episode(source, line, question, steps, em, f1, idx, preamble, logged, tuple(anomalies))


def load_episodes(path: Path | str) -> list[Episode]:
    """Every episode of one ReHAC JSONL file (or step tree, see `load_tree`), in file order."""
    path = Path(path)
    if not path.is_file():
        raise BonError(f"ReHAC episode file not found: {path}")
    if _is_tree(path):
        return load_tree(path)
    episodes = [parse_record(record, str(path), line) for line, record in jsonl.read(path)]
    if not episodes:
        raise BonError(f"{path}: no episodes (the file is empty)")
    return episodes


_UNNAMED = "idx {}"  # a tree leaf's question until with_question_texts names it


def unnamed(ep: Episode) -> bool:
    """True for a step-tree episode whose question text is still unknown (see with_question_texts)."""
    return ep.node is not None and ep.question == _UNNAMED.format(ep.idx)


_TREE_KEY = re.compile(r"\((\d+), '([01]+)'\)$")
ACTOR_CODES = {"0": AGENT, "1": HUMAN}


def _is_tree(path: Path) -> bool:
    """A step tree is one JSON object whose first key is "(idx, 'path')" (a JSONL record starts with a field)."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(256)
    except (OSError, UnicodeDecodeError):
        return False  # the JSONL reader names the problem
    return re.match(r'\s*\{\s*"\(', head) is not None


def _leaf(value: Any, where: str) -> tuple[str, float, float]:
    try:
        parsed = ast.literal_eval(value) if isinstance(value, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if not isinstance(parsed, tuple) or len(parsed) != 3 or not isinstance(parsed[0], str):
        raise BonError(f"{where}: a leaf must be the string of a tuple (trajectory, em, f1), got {str(value)[:60]!r}")
    return parsed[0], _number(parsed[1], "em", where), _number(parsed[2], "f1", where)


def load_tree(path: Path | str) -> list[Episode]:
    """Every root-to-leaf path of a ReHAC step tree as an episode, questions in order of first appearance.

    Errors name the file and the key: a key that is not "(idx, 'path')", a value that is not a string, a
    node whose parent is missing, or a leaf that is not "(trajectory, em, f1)".
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise BonError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BonError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BonError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict) or not data:
        raise BonError(f"{path}: a step tree must be one non-empty JSON object with keys \"(idx, 'path')\"")
    lines: dict[str, int] = {}  # each key's line, for errors (the release is pretty-printed: one key a line)
    for n, line in enumerate(text.split("\n"), 1):
        match = re.match(r'\s*[{,]?\s*("(?:[^"\\]|\\.)*")\s*:', line)
        if match:
            lines.setdefault(json.loads(match.group(1)), n)

    def where(key: str) -> str:
        return f"{path}:{lines.get(key, 1)}: key \"{key}\""

    nodes: dict[tuple[int, str], str] = {}
    for key, value in data.items():
        match = _TREE_KEY.match(key)
        if not match:
            raise BonError(f"{where(key)} is not \"(idx, 'path')\" with path made of 0 (agent) and 1 (human)")
        if not isinstance(value, str):
            raise BonError(f"{where(key)}: expected a string, got {type(value).__name__}")
        nodes[(int(match.group(1)), match.group(2))] = value
    inner = {(idx, p[:k]) for idx, p in nodes for k in range(1, len(p))}
    episodes: list[tuple[int, Episode]] = []  # (idx, episode): a leaf's idx is always known here
    for (idx, p), value in nodes.items():
        if (idx, p) in inner:
            continue
        key = f"({idx}, '{p}')"
        missing = next((p[:k] for k in range(1, len(p)) if (idx, p[:k]) not in nodes), None)
        if missing is not None:
            raise BonError(f"{where(key)}: its earlier step \"({idx}, '{missing}')\" is missing")
        last, em, f1 = _leaf(value, where(key))
        texts = [nodes[(idx, p[:k])] for k in range(1, len(p))] + [last]
        trajectory = f"Question: {_UNNAMED.format(idx)}\n" + "".join(
            f"<solver> {ACTOR_CODES[code]}\n{text.rstrip()}\n" for code, text in zip(p, texts))
        question, _, steps, anomalies, logged = parse_trajectory(trajectory, where(key))
        if logged is not None and logged != em:
            anomalies.append(f"em {em:g} differs from the logged reward {logged:g}")
        episodes.append((idx, Episode(str(path), lines.get(key, 1), question, steps, em, f1, idx, None, logged,
                                      tuple(anomalies), node=key)))
    order = {idx: i for i, idx in enumerate(dict.fromkeys(idx for idx, _ in nodes))}
    return [ep for _, ep in sorted(episodes, key=lambda pair: order[pair[0]])]


def with_question_texts(episodes: Sequence[Episode], texts: dict[str, str]) -> list[Episode]:
    """The episodes with their question's text from `texts` (by question_id; a step tree has none of its own)."""
    return [dataclasses.replace(ep, question=texts[ep.question_id]) if ep.question_id in texts else ep
            for ep in episodes]


def match_to_tree(logged: Sequence[Episode], tree: Sequence[Episode]) -> list[Episode]:
    """The tree leaf each logged episode replays: the same actors and the same step texts, hence its question.

    A policy run in ReHAC's replay environment walks the tree, so every episode must match exactly one
    leaf with the same em and f1; anything else is an error naming the episode's file and line.
    """
    leaves: dict[tuple[Step, ...], list[Episode]] = {}
    for leaf in tree:
        leaves.setdefault(leaf.steps, []).append(leaf)
    tree_name = Path(tree[0].source).name if tree else "the tree"
    out = []
    for ep in logged:
        found = leaves.get(ep.steps, [])
        where = f"{ep.source}:{ep.line}"
        if not found:
            raise BonError(f"{where}: the episode follows no path of {tree_name} (no leaf has its actors and step "
                           f"texts); was it run on those questions?")
        if len({leaf.question_id for leaf in found}) > 1:
            raise BonError(f"{where}: the episode matches leaves of several questions of {tree_name} "
                           f"({', '.join(leaf.key for leaf in found)})")
        leaf = found[0]
        if (leaf.em, leaf.f1) != (ep.em, ep.f1):
            raise BonError(f"{where}: the episode replays {leaf.key} but its em/f1 {ep.em:g}/{ep.f1:g} differ "
                           f"from the tree's {leaf.em:g}/{leaf.f1:g}")
        out.append(leaf)
    return out


def group_questions(episodes: Iterable[Episode]) -> list[Question]:
    """Episodes grouped by `question_id`, questions in order of first appearance."""
    groups: dict[str, list[Episode]] = {}
    for ep in episodes:
        groups.setdefault(ep.question_id, []).append(ep)
    out = []
    for qid, eps in groups.items():
        texts = Counter(ep.question for ep in eps)
        out.append(Question(qid, texts.most_common(1)[0][0], tuple(eps), len(texts)))
    return out


def is_complete_tree(episodes: Sequence[Episode]) -> bool:
    """True when the episodes' actor sequences enumerate a full branching tree.

    That is: no sequence repeats, none is a proper prefix of another, and at every step that some
    episode continues past, both the agent and the human continuation were logged. Such data
    (ReHAC's collaboration set is one) lets any actor policy be evaluated exactly, without sampling.
    """
    seqs = [ep.actors for ep in episodes]
    if not seqs or len(set(seqs)) != len(seqs):
        return False
    leaves = set(seqs)
    children: dict[tuple[str, ...], set[str]] = {}
    for seq in seqs:
        for k in range(len(seq)):
            if seq[:k] in leaves:
                return False
            children.setdefault(seq[:k], set()).add(seq[k])
    return all(len(c) == len(ACTORS) for c in children.values())
