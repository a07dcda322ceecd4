"""The response cache on a real Redis server, moving entries between caches, and the network-filesystem warning.

Each test talks to a `redis-server` this module starts on 127.0.0.1 (no persistence files outside tmp).
Without redis-server the tests fail, saying how to install it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from commands import run_in_process
from llm_server import FAKE_KEY_ENV, FakeLLMServer, llm_env_fixture, llm_server_fixture, text  # noqa: F401 - fixtures
from test_live import live_command, responder

from bon.errors import BonError
from bon.llm import LLMClient, ResponseCache, cache_key
from bon.llm.cache import Entry, network_filesystem, open_cache, warn_if_network_filesystem
from bon.llm.cache_redis import PASSWORD_ENV, RedisCache, scrub_url

pytestmark = pytest.mark.usefixtures("llm_env")
MODEL = "openai/test-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process on a free loopback port, in-memory only (its working dir is a tmp dir)."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed; these tests need a real one: apt-get install -y redis-server "
                        "(.ci/run does this when it is missing)", pytrace=False)
        self.port = free_port()
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(workdir), *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not listen on 127.0.0.1:{self.port}", pytrace=False)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server) -> str:
    """Database 0 of the module's server, emptied for each test."""
    import redis

    with redis.Redis.from_url(redis_server.url()) as client:
        client.flushdb()
    return redis_server.url()


def ask(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def answer(body: dict) -> str:
    return "answer to " + body["messages"][-1]["content"]


def run_calls(server, cache, calls: list[dict], **kw):
    """Run `complete(**call)` for each call on a fresh client; return (results, stats)."""
    client = LLMClient(MODEL, api_base=server.base_url, api_key_env=FAKE_KEY_ENV, cache=cache, backoff_base_s=0.01,
                       **kw)

    async def go():
        async with client:
            return await asyncio.gather(*(client.complete(**call) for call in calls))
    try:
        return asyncio.run(go()), client.stats
    finally:
        if cache is not None:
            cache.close()


def check_entries(cache) -> dict[str, str]:
    """Every entry is whole and answers the question its key stands for; key -> answer."""
    expected = {cache_key(MODEL, ask(i), None, {}, 0): f"answer to question {i}" for i in range(1000)}
    found = {}
    for e in cache.entries():
        value = json.loads(e.value)
        assert e.model == MODEL and value["message"]["content"] == expected[e.key]
        found[e.key] = value["message"]["content"]
    return found


# ---------------------------------------------------------------- a live run


def redis_run(tmp_path: Path, server: FakeLLMServer, url: str, *extra: str, out: str = "out"):
    command, env = live_command(tmp_path, server, f"cache.url={url}", *extra, out=out)
    command = [a for a in command if not a.startswith("cache.dir=")]
    env["BON_CACHE_DIR"] = str(tmp_path / "user-cache")  # the default SQLite cache, which must stay unused
    return run_in_process("bon.run", *command[3:], cwd=tmp_path, env=env)  # `python -m bon.run` in this process


def test_a_live_run_on_redis_makes_zero_calls_on_the_rerun(tmp_path, redis_url):
    with FakeLLMServer(responder) as server:
        first = redis_run(tmp_path, server, redis_url)
        assert first.returncode == 0, first.stderr
        made = server.count
        # 2 tasks x 4 samples, each a calculator call then a final answer, then one judge call per trajectory
        assert made == 2 * 4 * 2 + 2 * 4
        with RedisCache("read", redis_url) as cache:
            assert 0 < len(cache) <= made  # stored in Redis (both tasks ask the same question: keys are shared)
        again = redis_run(tmp_path, server, redis_url, "selector=final", out="out2")
        assert again.returncode == 0, again.stderr
        assert server.count == made  # the rerun reached the server zero times
        usage = json.loads((tmp_path / "out2" / "summary.json").read_text())["usage"]
        assert usage["generation"]["cache_hits"] == 16 and usage["judging"]["cache_hits"] == 8
    assert not (tmp_path / "user-cache").exists() and not (tmp_path / "cache").exists()


def test_an_unreachable_redis_is_one_line_naming_cache_url_before_any_call(tmp_path):
    with FakeLLMServer(responder) as server:
        proc = redis_run(tmp_path, server, f"redis://127.0.0.1:{free_port()}/0")
        assert server.count == 0
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cache.url" in errors[0] and "Traceback" not in proc.stderr


def test_a_password_in_a_runs_cache_url_is_refused_without_echoing_it(tmp_path):
    secret = "hunter2-do-not-print"
    with FakeLLMServer(responder) as server:
        proc = redis_run(tmp_path, server, f"redis://:{secret}@127.0.0.1:{free_port()}/0")
        assert server.count == 0
    assert proc.returncode == 2 and PASSWORD_ENV in proc.stderr
    assert secret not in proc.stderr and secret not in proc.stdout
    # refused before Hydra writes the run's .hydra/overrides.yaml, so the password is in no file either
    written = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_text(errors="ignore")]
    assert written == []


def test_the_password_comes_from_the_environment_and_is_never_shown(tmp_path, monkeypatch, caplog):
    secret = "s3cret-pass-word"
    server = RedisServer(tmp_path, "--requirepass", secret)
    try:
        url = server.url()
        monkeypatch.delenv(PASSWORD_ENV, raising=False)
        with pytest.raises(BonError, match="cache.url") as refused:  # no password: the server says no
            RedisCache("readwrite", url)
        monkeypatch.setenv(PASSWORD_ENV, "wrong-" + secret)
        with pytest.raises(BonError) as wrong:
            RedisCache("readwrite", url)
        assert secret not in str(wrong.value) and "wrong-" not in str(wrong.value)
        monkeypatch.setenv(PASSWORD_ENV, secret)
        with RedisCache("readwrite", url) as cache:
            cache.put("k", MODEL, {"message": {"content": "hi"}})
            assert cache.get("k") == {"message": {"content": "hi"}}
        # a password in the url (allowed where nothing saves the url, as in bon.cache) is scrubbed everywhere
        with_password = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        monkeypatch.delenv(PASSWORD_ENV)
        cache = open_cache("read", with_password, password_in_url=True)
        assert secret not in repr(cache) and secret not in str(cache.path) and cache.get("k") is not None
        server.stop()
        cache.get("k")  # the server is gone: said once, without the password
        cache.close()
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert secret not in str(refused.value)
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    assert scrub_url(f"redis://user:{secret}@h:1/0") == "redis://user:***@h:1/0"
    assert scrub_url(f"redis://h:1/0?password={secret}&x=1") == "redis://h:1/0?password=***&x=1"
    assert scrub_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# ---------------------------------------------------------------- modes and several processes


def test_modes(llm_server, redis_url):
    llm_server.responder = answer
    call = [{"messages": ask(1)}]
    run_calls(llm_server, RedisCache("off", redis_url), call)
    assert llm_server.count == 1 and len(RedisCache("read", redis_url)) == 0
    run_calls(llm_server, RedisCache("read", redis_url), call)  # a miss is fetched, not stored
    assert llm_server.count == 2 and len(RedisCache("read", redis_url)) == 0
    run_calls(llm_server, RedisCache("readwrite", redis_url), call)
    [hit], _ = run_calls(llm_server, RedisCache("read", redis_url), call)
    assert llm_server.count == 3 and hit.cached and hit.content == "answer to question 1"
    llm_server.script(text("fresh"))
    [w], _ = run_calls(llm_server, RedisCache("write", redis_url), call)  # always calls, replaces the entry
    assert llm_server.count == 4 and not w.cached
    [hit], _ = run_calls(llm_server, RedisCache("readwrite", redis_url), call)
    assert hit.cached and hit.content == "fresh" and llm_server.count == 4
    assert len(RedisCache("read", redis_url)) == 1


def child(base_url: str, url: str, first: int, last: int) -> None:
    async def main():
        client = LLMClient(MODEL, api_base=base_url, api_key_env=FAKE_KEY_ENV, cache=RedisCache("readwrite", url),
                           concurrency=8, backoff_base_s=0.01)
        async with client:
            results = await asyncio.gather(*(client.complete(ask(i)) for i in range(first, last)))
        return all(r.ok for r in results)
    sys.exit(0 if asyncio.run(main()) else 1)


def test_processes_share_one_redis_cache_and_a_rerun_makes_zero_calls(llm_server, redis_url):
    llm_server.responder = answer
    llm_server.latency = 0.002
    fork = multiprocessing.get_context("fork")
    ranges = [(0, 80), (40, 120), (60, 140)]  # overlapping: questions 40..119 are raced for
    procs = [fork.Process(target=child, args=(llm_server.base_url, redis_url, a, b), daemon=True) for a, b in ranges]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with RedisCache("read", redis_url) as cache:
        assert len(check_entries(cache)) == 140
    before = llm_server.count
    assert 140 <= before <= 80 + 80 + 80
    _, stats = run_calls(llm_server, RedisCache("readwrite", redis_url), [{"messages": ask(i)} for i in range(140)])
    assert llm_server.count == before and stats.cache_hits == 140


RAW_WRITER = textwrap.dedent("""
    import sys
    from bon.llm.cache import open_cache
    cache = open_cache("readwrite", sys.argv[1])
    w = sys.argv[2]
    print("ready", flush=True)
    i = 0
    while True:
        cache.put(f"k{i % 300}", f"writer {w}", {"writer": w, "i": i, "pad": w * (i % 3000)})
        i += 1
""")


def test_writers_racing_on_the_same_keys_and_killed_leave_only_whole_entries(redis_url):
    writers = [subprocess.Popen([sys.executable, "-c", RAW_WRITER, redis_url, w], stdout=subprocess.PIPE, text=True)
               for w in "abc"]
    for p in writers:
        assert p.stdout.readline().strip() == "ready"
    time.sleep(0.4)
    for p in writers:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    with RedisCache("read", redis_url) as cache:
        entries = list(cache.entries())
    assert entries
    for e in entries:  # one writer's model, value and padding together: never a mix of two writes
        value = json.loads(e.value)
        assert e.model == f"writer {value['writer']}" and value["pad"] == value["writer"] * (value["i"] % 3000)
        assert e.key == f"k{value['i'] % 300}"


# ---------------------------------------------------------------- moving entries: bon.cache


def entry(i: int, content: str | None = None) -> Entry:
    value = {"message": {"role": "assistant", "content": content or f"answer to question {i}"}}
    return Entry(cache_key(MODEL, ask(i), None, {}, 0), MODEL, 1000.0 + i, json.dumps(value, separators=(",", ":")))


def cli(*args: str, fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m bon.cache`: in this process (commands.py), or a subprocess when `fresh`."""
    if not fresh:
        return run_in_process("bon.cache", *args, cwd=os.getcwd())
    return subprocess.run([sys.executable, "-m", "bon.cache", *args], capture_output=True, text=True, timeout=120)


def test_merge_sqlite_caches_into_redis_then_export_and_import_back(tmp_path, redis_url):
    a, b = ResponseCache("readwrite", tmp_path / "job0"), ResponseCache("readwrite", tmp_path / "job1")
    assert a.add_many(entry(i) for i in range(10)) == {"copied": 10, "present": 0, "conflicts": 0}
    b.add_many(entry(i) for i in range(5, 15))  # 5..9 also in job0, with the same responses
    a.close(), b.close()
    with RedisCache("readwrite", redis_url) as target:  # the target already holds another answer for 14
        target.add_many([entry(14, "the target's own answer")])
    merged = cli("merge", str(tmp_path / "job0"), f"sqlite://{tmp_path / 'job1'}", "--into", redis_url)
    assert merged.returncode == 0, merged.stderr
    # job0 brings 0..9; job1 brings 10..13, finds 5..9 present and 14 in conflict (the target's kept)
    assert "14 copied, 5 already present, 1 conflicts" in merged.stdout
    with RedisCache("read", redis_url) as target:
        held = {e.key: e for e in target.entries()}
    assert len(held) == 15 and json.loads(held[entry(14).key].value)["message"]["content"] == "the target's own answer"
    assert all(held[entry(i).key].value == entry(i).value for i in range(14))  # the same stored text

    exported = cli("export", redis_url, str(tmp_path / "all.jsonl"))
    assert exported.returncode == 0 and "exported 15 entries" in exported.stdout
    imported = cli("import", str(tmp_path / "all.jsonl"), str(tmp_path / "copy"))
    assert imported.returncode == 0 and "15 copied, 0 already present, 0 conflicts" in imported.stdout
    with ResponseCache("read", tmp_path / "copy") as copy:
        assert {e.key: (e.model, e.value) for e in copy.entries()} == {k: (e.model, e.value) for k, e in held.items()}
    again = cli("import", str(tmp_path / "all.jsonl"), str(tmp_path / "copy"))
    assert "0 copied, 15 already present, 0 conflicts" in again.stdout


def test_per_job_caches_merged_into_redis_answer_a_rerun_with_zero_calls(llm_server, tmp_path, redis_url):
    llm_server.responder = answer
    run_calls(llm_server, ResponseCache("readwrite", tmp_path / "job0"), [{"messages": ask(i)} for i in range(0, 6)])
    run_calls(llm_server, ResponseCache("readwrite", tmp_path / "job1"), [{"messages": ask(i)} for i in range(6, 12)])
    assert llm_server.count == 12
    merged = cli("merge", str(tmp_path / "job0"), str(tmp_path / "job1"), "--into", redis_url)
    assert merged.returncode == 0 and "12 copied" in merged.stdout, merged.stderr
    results, stats = run_calls(llm_server, RedisCache("readwrite", redis_url), [{"messages": ask(i)} for i in range(12)])
    assert llm_server.count == 12 and stats.cache_hits == 12 and all(r.cached for r in results)


def test_bad_input_is_one_line_naming_the_argument(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"key": entry(0).key, "model": MODEL, "value": {}}) + "\n"
                                        + json.dumps({"key": "nothex", "model": MODEL, "value": {}}) + "\n")
    with ResponseCache("readwrite", tmp_path / "src") as src:
        src.add_many([entry(0)])
    cases = {
        ("import", str(tmp_path / "bad.jsonl"), str(tmp_path / "c")): "bad.jsonl:2",
        ("import", str(tmp_path / "missing.jsonl"), str(tmp_path / "c")): "missing.jsonl",
        ("export", str(tmp_path / "nowhere"), str(tmp_path / "x.jsonl")): "nowhere",
        ("merge", str(tmp_path / "nowhere"), "--into", str(tmp_path / "c")): "nowhere",
        ("merge", str(tmp_path / "src"), "--into", "ftp://host/x"): "--into='ftp://host/x'",
        ("export", f"redis://:pw-secret@127.0.0.1:{free_port()}/0", str(tmp_path / "x.jsonl")): "redis://:***@",
    }
    for i, (args, named) in enumerate(cases.items()):
        proc = cli(*args, fresh=i == 0)  # one as a user sees it, in its own process
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and "pw-secret" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "c").exists()  # the bad file was refused whole, before the target was touched


# ---------------------------------------------------------------- the network-filesystem warning

MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
fileserver:/export/home /home nfs4 rw,vers=4.2 0 0
/dev/nvme0n1 /home/alice/local xfs rw 0 0
10.0.0.1@tcp:/scratch /scratch lustre rw 0 0
gpfs0 /gpfs/projects gpfs rw 0 0
//nas/share /mnt/team\\040share cifs rw 0 0
"""


def test_network_filesystems_are_told_from_the_mounts_table():
    assert network_filesystem("/home/alice/.cache/bon/llm", MOUNTS) == "nfs4"
    assert network_filesystem("/home/alice/local/cache", MOUNTS) is None  # a node-local disk mounted below NFS
    assert network_filesystem("/homework/cache", MOUNTS) is None  # a prefix of the name is not a parent
    assert network_filesystem("/scratch/u1/cache", MOUNTS) == "lustre"
    assert network_filesystem("/gpfs/projects/x", MOUNTS) == "gpfs"
    assert network_filesystem("/mnt/team share/cache", MOUNTS) == "cifs"
    assert network_filesystem("/var/tmp/cache", MOUNTS) is None
    assert network_filesystem("/home/alice", "") is None  # cannot be told: nothing said


def test_the_warning_is_one_line_once_and_says_what_to_use(caplog):
    with caplog.at_level(logging.WARNING):
        assert warn_if_network_filesystem(Path("/home/bob/.cache/bon/llm"), MOUNTS)
        assert not warn_if_network_filesystem(Path("/home/bob/.cache/bon/llm"), MOUNTS)
        assert not warn_if_network_filesystem(Path("/var/tmp/bon"), MOUNTS)
    [said] = [r.getMessage() for r in caplog.records]
    assert "\n" not in said and "nfs4" in said and "cache.url=redis://" in said and "node-local cache.dir" in said


def test_the_cache_a_url_names(tmp_path, redis_url):
    with open_cache("readwrite", f"sqlite://{tmp_path / 'a'}") as by_url:
        by_url.put("k", MODEL, {"x": 1})
    with open_cache("read", cache_dir=tmp_path / "a") as by_dir:  # the same file as cache.dir names
        assert isinstance(by_dir, ResponseCache) and by_dir.get("k") == {"x": 1}
    assert isinstance(open_cache("read", redis_url), RedisCache)
    with pytest.raises(BonError, match="cache.url or cache.dir, not both"):
        open_cache("read", redis_url, tmp_path)
    with pytest.raises(BonError, match="valid schemes: sqlite:///DIR, redis://"):
        open_cache("read", "postgres://h/db")
