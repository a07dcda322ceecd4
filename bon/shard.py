"""One configuration split across nodes: which tasks shard i of K runs (`dataset.shard`, `dataset.num_shards`).

A task belongs to shard `sha256(task_id) mod K`. The rule depends on the task id alone, so every generator,
judge and selector splits a dataset the same way, a rerun gets the same tasks, and the K shards are disjoint
and together hold every task. (Python's `hash()` is salted per process, so it is never used here.)
`python -m bon.merge` puts the shards' candidate tables back together and evaluates them once.
"""
from __future__ import annotations

import hashlib
from typing import Any, Protocol

from bon.errors import BonError


def check(shard: Any, num_shards: Any) -> tuple[int, int]:
    """(shard, num_shards) as integers, or a one-line BonError naming the option."""
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise BonError(f"dataset.num_shards must be an integer >= 1, got {num_shards!r}")
    if not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < num_shards:
        raise BonError(f"dataset.shard must be an integer in [0, {num_shards - 1}] "
                       f"(dataset.num_shards={num_shards}), got {shard!r}")
    return shard, num_shards


class Sharded(Protocol):
    """A dataset's options (bon.config: every dataset but rehac has these two)."""

    shard: int
    num_shards: int


def of(dataset: Sharded) -> tuple[int, int]:
    """The (shard, num_shards) a dataset's options ask for; (0, 1) is the whole dataset."""
    return check(dataset.shard, dataset.num_shards)


def index(task_id: str, num_shards: int) -> int:
    """The shard a task id belongs to: a stable hash of its UTF-8 bytes, mod num_shards."""
    digest = hashlib.sha256(str(task_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def in_shard(task_id: str, shard: int, num_shards: int) -> bool:
    """Whether shard `shard` of `num_shards` runs the task `task_id` (every task when num_shards is 1)."""
    return num_shards == 1 or index(task_id, num_shards) == shard


def keeps(dataset: Sharded, task_id: str) -> bool:
    """Whether the run of `dataset` (its options) runs the task `task_id`."""
    return in_shard(task_id, *of(dataset))


def describe(dataset: Sharded) -> dict[str, int] | None:
    """summary.json's `shard` block ({index, of}) of a sharded run; None for a run of the whole dataset."""
    shard, num_shards = of(dataset)
    return None if num_shards == 1 else {"index": shard, "of": num_shards}


def empty(dataset: Sharded, n_tasks: int) -> BonError:
    """The error for a shard that holds none of the dataset's `n_tasks` tasks (too many shards for it)."""
    part, num_shards = of(dataset)
    return BonError(f"dataset.shard={part} of dataset.num_shards={num_shards} holds none of the dataset's {n_tasks} "
                    f"tasks; use fewer shards")
