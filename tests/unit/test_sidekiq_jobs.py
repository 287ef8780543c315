import json
import shutil
import subprocess
import time

import pytest

from tasks import redis_cli, sidekiq_jobs
from tasks.sidekiq_jobs import merge, parse_list, parse_state, parse_zset, resp


def job(jid, cls="PushUpdateWorker", **extra):
    return json.dumps({"jid": jid, "class": cls, "args": [1], "queue": "push", **extra})


def test_state_counts_waiting_and_busy_jobs():
    state = parse_state("queue default 0\nqueue push 3\nprocess old:1:ab 2 true\nprocess old:9:cd 0 false\n")
    assert state.waiting == 3 and state.running == 2 and not state.idle
    assert state.quiet == {"old:1:ab": True, "old:9:cd": False}
    assert "push 3" in state.summary()
    assert parse_state("queue default 0\n").idle


def test_merge_adds_only_what_new_lacks_and_keeps_order():
    old_sets = {"schedule": [(job("a"), "1700000000"), (job("b"), "1700000100")], "retry": [(job("c"), "17")],
                "dead": []}
    old_queues = {"default": [job("newest"), job("oldest")]}
    new_jids = {"schedule": {"a"}, "retry": set(), "queue:default": set()}
    plan = merge(old_sets, old_queues, new_jids)
    assert plan.added == {"schedule": 1, "retry": 1, "dead": 0, "queue:default": 2}
    assert plan.already["schedule"] == 1
    assert plan.commands[0] == resp("ZADD", "schedule", "NX", "1700000100", job("b"))
    assert plan.commands[-2:] == [resp("RPUSH", "queue:default", job("newest")),
                                  resp("RPUSH", "queue:default", job("oldest"))]
    again = merge(old_sets, old_queues,
                  {"schedule": {"a", "b"}, "retry": {"c"}, "queue:default": {"newest", "oldest"}})
    assert again.commands == [] and sum(again.added.values()) == 0


def test_resp_counts_bytes_not_characters():
    assert resp("SET", "k", "é") == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n"


def test_redis_password_stays_off_the_command_line():
    cmd = redis_cli.cli({"REDIS_HOST": "127.0.0.1", "REDIS_PASSWORD": "p@ss-very-secret"}, "PING")
    assert "p@ss" not in cmd.line()
    assert "p@ss-very-secret" in cmd.input()
    assert "p@ss" not in cmd.shown()
    assert redis_cli.target({"REDIS_URL": "redis://:pw%40x@10.0.0.5:6380/2"}) == ("10.0.0.5", "6380", "2",
                                                                                   "pw@x")


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_merge_through_a_real_redis(tmp_path):
    server = subprocess.Popen(["redis-server", "--port", "16399", "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        values = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "16399"}
        for _ in range(50):
            if subprocess.run(["sh", "-s"], input=redis_cli.cli(values, "PING").input(), text=True,
                              capture_output=True).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        plan = merge({"retry": [(job("x", error_message="line1\nline2"), "1700000000")]},
                     {"push": [job("q2"), job("q1")]}, {})
        cmd = redis_cli.script(values, "r --pipe", stdin=plan.pipe)
        assert subprocess.run(["sh", "-s"], input=cmd.input(), text=True, capture_output=True).returncode == 0

        def out(args):
            return subprocess.run(["sh", "-s"], input=redis_cli.cli(values, args).input(), text=True,
                                  capture_output=True).stdout
        assert sidekiq_jobs.jid(out("ZRANGE retry 0 -1").splitlines()[0]) == "x"
        assert out("RPOP queue:push").strip() == job("q1")
        assert out("SMEMBERS queues").split() == ["push"]
    finally:
        server.terminate()


def test_a_job_whose_arguments_hold_line_separators_arrives_whole():
    """U+2028, U+2029 and U+0085 stay inside a job's JSON (Ruby's JSON does not escape them)."""
    payload = json.dumps({"jid": "a1", "args": ["first\u2028second\u2029third\u0085end"]}, ensure_ascii=False)
    assert parse_zset(f"{payload}\n1764600000.5\n") == [(payload, "1764600000.5")]
    assert parse_list(f"{payload}\n{payload}\n") == [payload, payload]
    plan = merge({"retry": [(payload, "1764600000.5")]}, {}, {})
    assert plan.added == {"retry": 1}
    assert resp("ZADD", "retry", "NX", "1764600000.5", payload) in plan.commands
