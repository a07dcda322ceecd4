"""bon.jsonl.read: every bad line is one error naming file:line, and every loader built on it says the same."""
from __future__ import annotations

import json
from pathlib import Path

from bon_error import bon_error

from bon import jsonl
from bon.datasets import gaia, tasks
from bon.rehac.episodes import load_episodes

LATIN1 = b'{"question": "caf\xe9?"}\n'  # "café" saved as Latin-1: 0xe9 is not UTF-8


def test_records_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \r\n{"b": "\xc3\xa9"}\r\n{"c": 3}')  # LF, CRLF, no final newline
    assert list(jsonl.read(path)) == [(1, {"a": 1}), (4, {"b": "é"}), (5, {"c": 3})]


def test_a_lone_carriage_return_ends_a_line_as_in_text_mode(tmp_path: Path):
    path = tmp_path / "mac.jsonl"
    path.write_bytes(b'{"a": 1}\r{"a": 2}\r')
    assert list(jsonl.read(path)) == [(1, {"a": 1}), (2, {"a": 2})]


def test_a_byte_that_is_not_utf8_names_line_byte_and_column(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n' + LATIN1)
    message = bon_error(lambda: list(jsonl.read(path)))
    assert message.startswith(f"{path}:3: not UTF-8 (byte 0xe9 at column 18)")


def test_a_bad_byte_far_into_a_large_file_is_still_found_at_its_line(tmp_path: Path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"x" * 200) for i in range(5000)) + LATIN1)
    assert bon_error(lambda: list(jsonl.read(path))).startswith(f"{path}:5001: not UTF-8")


def test_malformed_json_and_a_non_object_name_their_line(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    assert bon_error(lambda: list(jsonl.read(path))).startswith(f"{path}:2: malformed JSON")
    path.write_text('{"a": 1}\n[1, 2]\n')
    assert bon_error(lambda: list(jsonl.read(path))) == f"{path}:2: expected a JSON object, got list"


def test_a_missing_file_is_one_line(tmp_path: Path):
    assert bon_error(lambda: list(jsonl.read(tmp_path / "none.jsonl"))).startswith("cannot read")


def test_records_before_a_bad_line_are_yielded_first(tmp_path: Path):
    """A reader streams: callers that stop early never see a later bad line."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n' + LATIN1)
    assert next(jsonl.read(path)) == (1, {"a": 1})


# the loaders that read JSONL through bon.jsonl report the same line

def test_tasks_file(tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(json.dumps({"task_id": "a", "question": "q"}).encode() + b"\n" + LATIN1)
    assert bon_error(lambda: tasks.load(str(path))).startswith(f"{path}:2: not UTF-8 (byte 0xe9")


def test_gaia_metadata(tmp_path: Path):
    split = tmp_path / "2023" / "validation"
    split.mkdir(parents=True)
    good = {"task_id": "v1", "Question": "2+3?", "Level": 1, "Final answer": "5", "file_name": ""}
    (split / "metadata.jsonl").write_bytes(json.dumps(good).encode() + b"\n" + LATIN1)
    assert bon_error(lambda: gaia.load(str(tmp_path))).startswith(f"{split / 'metadata.jsonl'}:2: not UTF-8 (byte 0xe9")
    (split / "metadata.jsonl").write_text(json.dumps(good) + "\n{oops\n")
    assert bon_error(lambda: gaia.load(str(tmp_path))).startswith(f"{split / 'metadata.jsonl'}:2: malformed JSON")


def test_rehac_episodes(tmp_path: Path):
    path = tmp_path / "episodes.jsonl"
    good = "Question: q?\n<solver> agent\nThought 1: t\nAction 1: Finish[yes]\nObservation 1: Episode finished, reward = 1\n"
    path.write_bytes(json.dumps({"trajectory": good, "em": 1, "f1": 1}).encode() + b"\n" + LATIN1)
    assert bon_error(lambda: load_episodes(path)).startswith(f"{path}:2: not UTF-8 (byte 0xe9")
