"""Robustness of the live LLM judge under faults, against the local test server.

    python benchmarks/bench_judge.py                 # 500 trajectories, without and with re-ask
    python benchmarks/bench_judge.py --n 2000 --concurrency 32

Every request to the server (retries and re-asks included) draws its fate: 20% 429 (with a
Retry-After), 10% 500, 5% a hang past the client's timeout, 5% a garbage judge reply, else a
correct verdict. The draw is a hash of the request body and how many times that body was seen,
so a run is reproducible whatever the arrival order. The judge runs with its normal retries
(small backoff), once without and once with `reask`. The run must finish; every trajectory
must come back either judged, with exactly the labels the server meant for it (so no mix-ups),
or failed with a reason and no labels; 500 in, 500 out. Exit code 0 when all of that holds.
Everything is on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import FakeLLMServer, hang, rate_limited, server_error, text, verdict  # noqa: E402

from bon.judges.llm import LLMJudge  # noqa: E402
from bon.llm import LLMClient, ResponseCache  # noqa: E402
from bon.types import Judgement, Trajectory  # noqa: E402

FAULTS = (("rate_limit", 0.20), ("server_error", 0.10), ("timeout", 0.05), ("garbage", 0.05))
GARBAGE = (
    "The agent did fine overall; I would accept its answer.",  # no JSON at all
    '```json\n{"steps": {"2": 1}, "FINAL_RESULT": 1\n```',  # truncated JSON
    '```json\n{"steps": {}, "FINAL_RESULT": 1}\n```',  # every step missing
    '```json\n{"steps": {}, "FINAL_RESULT": "maybe"}\n```',  # not a label
)


def unit(*parts: object) -> float:
    """A reproducible number in [0, 1) from the parts."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def expected(task: str, steps: list[int]) -> tuple[dict[int, int], int]:
    """The labels the server gives a trajectory: a function of its task id only."""
    labels = {i: (-1, 0, 1)[int(unit(task, i) * 3)] for i in steps}
    return labels, 1 if unit(task, "final") < 0.5 else -1


def make_trajectory(i: int) -> Trajectory:
    task = f"task-{i:05d}"
    messages = [{"role": "system", "content": "Answer with the help of the calculator."},
                {"role": "user", "content": f"[{task}] What is {i} * 7?"}]
    for s in range(1 + i % 5):
        messages.append({"role": "assistant", "content": f"Step {s}: computing.",
                         "tool_calls": [{"id": f"c{s}", "type": "function",
                                         "function": {"name": "calc", "arguments": json.dumps({"expr": f"{i}*7"})}}]})
        messages.append({"role": "tool", "name": "calc", "tool_call_id": f"c{s}", "content": str(i * 7)})
    messages.append({"role": "assistant", "content": f"The answer is {i * 7}."})
    return Trajectory(task, 0, tuple(messages), answer=str(i * 7))


class FaultyJudgeServer:
    """The responder: faults drawn per request, else the verdict meant for the trajectory."""

    def __init__(self, timeout_hang: float) -> None:
        self.lock = threading.Lock()
        self.seen: collections.Counter[str] = collections.Counter()
        self.drawn: collections.Counter[str] = collections.Counter()
        self.timeout_hang = timeout_hang

    def __call__(self, body: dict):
        raw = json.dumps(body.get("messages"), sort_keys=True)
        digest = hashlib.sha256(raw.encode()).hexdigest()
        with self.lock:
            self.seen[digest] += 1
            n = self.seen[digest]
        u, fate = unit(digest, n), "verdict"
        for kind, p in FAULTS:
            if u < p:
                fate = kind
                break
            u -= p
        with self.lock:
            self.drawn[fate] += 1
        if fate == "rate_limit":
            return rate_limited(retry_after=0.1)
        if fate == "server_error":
            return server_error(500)
        if fate == "timeout":
            return hang(self.timeout_hang)
        if fate == "garbage":
            return text(GARBAGE[int(unit(digest, n, "g") * len(GARBAGE))])
        prompt = body["messages"][0]["content"]
        task = re.search(r"\[(task-\d+)\]", prompt).group(1)
        steps = [int(s) for s in re.search(r"Grade exactly these steps: ([\d, ]*)\.", prompt).group(1).split(", ")]
        labels, final = expected(task, steps)
        return verdict(labels, final, prose="Checked each step against the tool results.")


def reason_kind(reason: str) -> str:
    """A reason with its specifics (step lists, counts) blanked, for counting."""
    return re.sub(r"\[[\d, ]*\]", "[...]", reason)


def check(t: Trajectory, j: Judgement) -> str | None:
    """What is wrong with this judgement, or None."""
    if j.failed:
        if not j.reason:
            return "failed without a reason"
        if j.step_labels or j.final_label is not None:
            return "failed but carries labels"
        return None
    labels, final = expected(t.task_id, t.step_indices)
    if dict(j.step_labels) != labels or j.final_label != final:
        return "labels differ from the server's verdict"
    return None


def run(n: int, concurrency: int, reask: bool, timeout: float) -> bool:
    trajectories = [make_trajectory(i) for i in range(n)]
    responder = FaultyJudgeServer(timeout_hang=timeout * 3)
    with FakeLLMServer(responder, record_bodies=False) as server, tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache("readwrite", tmp)
        client = LLMClient("openai/test-model", api_base=server.base_url, concurrency=concurrency, timeout=timeout,
                           max_attempts=5, backoff_base_s=0.02, max_delay_s=1.0, cache=cache, jitter_seed=0)
        judge = LLMJudge(client, "bench", reask=reask)

        async def go():
            async with client:
                return await judge.judge_all(trajectories, progress=sys.stderr.isatty())

        t0 = time.perf_counter()
        judgements = asyncio.run(go())
        wall = time.perf_counter() - t0
        cache.close()
        requests = server.count

    problems = collections.Counter(p for t, j in zip(trajectories, judgements) if (p := check(t, j)))
    ok = sum(not j.failed for j in judgements)
    reasons = collections.Counter(reason_kind(j.reason) for j in judgements if j.failed)
    st = client.stats
    print(f"\nreask={'on' if reask else 'off'}: {n} trajectories in, {len(judgements)} judgements out, "
          f"wall {wall:.1f} s")
    print(f"  server: {requests} requests; fates drawn: "
          + ", ".join(f"{k} {v}" for k, v in sorted(responder.drawn.items())))
    print(f"  client: {st.calls} calls ({st.ok} ok, {st.failed} failed after retries), {st.requests} HTTP attempts, "
          f"{st.retries} retries; failed calls by kind: {dict(sorted(st.failures.items())) or '-'}")
    print(f"  judged ok: {ok}   failed: {n - ok}")
    for reason, count in reasons.most_common():
        print(f"    {count:4d}  {reason}")
    lost = n - len(judgements)
    # An attempt can fail before the server counts it (a pooled connection the server closed after
    # a hang): the server never sees more requests than the client made, and may see a few fewer.
    good = lost == 0 and not problems and requests <= st.requests
    print(f"  lost: {lost}; wrong labels / failed without reason / failed with labels: "
          f"{dict(problems) or 'none'}; attempts that never reached the server: {st.requests - requests}")
    return good


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="trajectories (default 500)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--timeout", type=float, default=0.5, help="client timeout per attempt, seconds")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    results = [run(args.n, args.concurrency, reask, args.timeout) for reask in (False, True)]
    total = time.perf_counter() - t0
    verdict_ok = all(results) and total < 60
    print(f"\n{'PASS' if verdict_ok else 'FAIL'}: every trajectory judged or failed with a reason, none lost, "
          f"no label mix-ups; total {total:.1f} s (target < 60 s)")
    return 0 if verdict_ok else 1


if __name__ == "__main__":
    sys.exit(main())
