import json
import shutil
import subprocess
import time

import pytest

from tasks import redis_cli
from tasks.sidekiq_jobs import (
    MOVE_ONE,
    MOVED_JIDS,
    Aside,
    parse_aside,
    parse_state,
    parse_zset,
    pipe_replies,
    plan_move,
    resp,
)


def job(jid, cls="PushUpdateWorker", **extra):
    return json.dumps({"jid": jid, "class": cls, "args": [1], "queue": "push", **extra})


def test_state_counts_waiting_and_busy_jobs():
    state = parse_state("queue default 0\nqueue push 3\nprocess old:1:ab 2 true\nprocess old:9:cd 0 false\n")
    assert state.waiting == 3 and state.running == 2 and not state.idle
    assert state.quiet == {"old:1:ab": True, "old:9:cd": False}
    assert "push 3" in state.summary()
    assert parse_state("queue default 0\n").idle


ASIDE = "mastodon-migration:moving:20261201T120000"


def test_the_move_sends_each_job_new_has_not_recorded_once_in_order():
    aside = [
        Aside(f"{ASIDE}:schedule", "schedule", [(job("a"), "1700000000"), (job("b"), "1700000100")]),
        Aside(f"{ASIDE}:queue:default", "queue:default", [(job("newest"), ""), (job("oldest"), "")]),
    ]
    plan = plan_move(aside, moved={"a"})
    assert plan.added == {"schedule": 1, "queue:default": 2} and plan.already["schedule"] == 1
    keys = ("schedule", MOVED_JIDS, "queues")
    assert plan.commands[0] == resp("EVAL", MOVE_ONE, "3", *keys, "b", job("b"), "1700000100", "")
    assert [c.split("\r\n")[-6] for c in plan.commands[1:]] == [job("newest"), job("oldest")]
    again = plan_move(aside, moved={"a", "b", "newest", "oldest"})
    assert again.commands == [] and sum(again.added.values()) == 0


def test_aside_keys_are_read_back_with_their_names_and_jobs():
    text = (f"@@ zset {ASIDE}:retry\n{job('r1')}\n1764600000.5\n@@ list {ASIDE}:queue:push\n"
            f"{job('q2')}\n{job('q1')}\n@@ zset {ASIDE}:dead\n")
    found = parse_aside(text)
    assert [(a.target, a.queue, a.jobs) for a in found] == [
        ("retry", "", [(job("r1"), "1764600000.5")]),
        ("queue:push", "push", [(job("q2"), ""), (job("q1"), "")]),
        ("dead", "", []),
    ]


def test_pipe_replies_are_read_from_redis_cli_summary():
    out = "All data transferred. Waiting for the last reply...\nLast reply received from server.\n"
    assert pipe_replies(out + "errors: 0, replies: 12\n") == (0, 12)
    assert pipe_replies(out) == (-1, -1)


def test_resp_counts_bytes_not_characters():
    assert resp("SET", "k", "é") == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n"


def test_redis_password_stays_off_the_command_line():
    target = redis_cli.base({"REDIS_HOST": "127.0.0.1", "REDIS_PASSWORD": "p@ss-very-secret"})
    cmd = redis_cli.cli(target, "PING")
    assert "p@ss" not in cmd.line()
    assert "p@ss-very-secret" in cmd.input()
    assert "p@ss" not in cmd.shown()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_a_move_interrupted_and_run_again_delivers_each_job_once(tmp_path):
    """A real Redis: the move is sent, new's Sidekiq runs one of the jobs, the move is sent again (a re-run
    after a kill): nothing comes back twice, and a score that is no number fails alone, leaving no trace."""
    server = subprocess.Popen(["redis-server", "--port", "16399", "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        values = redis_cli.base({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "16399"})

        def run(args, stdin=None):
            cmd = redis_cli.script(values, args, stdin=stdin) if stdin else redis_cli.cli(values, args)
            return subprocess.run(["sh", "-s"], input=cmd.input(), text=True, capture_output=True)

        for _ in range(50):
            if run("PING").stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        aside = [Aside(f"{ASIDE}:retry", "retry", [(job("x", error_message="line1\nline2"), "1700000000")]),
                 Aside(f"{ASIDE}:queue:push", "queue:push", [(job("q2"), ""), (job("q1"), "")])]
        plan = plan_move(aside, moved=set())
        sent = run("r --pipe", stdin=plan.pipe)
        assert sent.returncode == 0 and pipe_replies(sent.stdout) == (0, 3)
        assert run("RPOP queue:push").stdout.strip() == job("q1")  # new's Sidekiq took and ran it
        again = run("r --pipe", stdin=plan.pipe)  # the same move, sent again
        assert again.returncode == 0 and pipe_replies(again.stdout) == (0, 3)
        assert run("LRANGE queue:push 0 -1").stdout.splitlines() == [job("q2")]
        assert run("ZCARD retry").stdout.strip() == "1"
        assert run("SMEMBERS queues").stdout.split() == ["push"]
        assert sorted(run(f"SMEMBERS {MOVED_JIDS}").stdout.split()) == ["q1", "q2", "x"]
        bad = plan_move([Aside(f"{ASIDE}:schedule", "schedule", [(job("y"), "soon")])], moved=set())
        failed = run("r --pipe", stdin=bad.pipe)
        assert failed.returncode != 0 and pipe_replies(failed.stdout)[0] == 1
        assert run(f"SISMEMBER {MOVED_JIDS} y").stdout.strip() == "0"  # not recorded: a re-run sends it
    finally:
        server.terminate()


def test_a_job_whose_arguments_hold_line_separators_arrives_whole():
    """U+2028, U+2029 and U+0085 stay inside a job's JSON (Ruby's JSON does not escape them)."""
    payload = json.dumps({"jid": "a1", "args": ["first\u2028second\u2029third\u0085end"]}, ensure_ascii=False)
    assert parse_zset(f"{payload}\n1764600000.5\n") == [(payload, "1764600000.5")]
    found = parse_aside(
        f"@@ zset {ASIDE}:retry\n{payload}\n1764600000.5\n@@ list {ASIDE}:queue:x\n{payload}\n"
    )
    assert [a.jobs for a in found] == [[(payload, "1764600000.5")], [(payload, "")]]
    plan = plan_move(found, moved=set())
    assert plan.added == {"retry": 1, "queue:x": 1}
    assert payload in plan.commands[0]


def test_idle_needs_two_answers_a_heartbeat_apart_unless_sidekiq_is_quiet_already():
    from tasks.sidekiq import IdleFor

    now = [0.0]
    idle = IdleFor(10, clock=lambda: now[0])
    assert not idle(parse_state("queue default 0\nprocess old:1 0 false\n"))
    now[0] = 10.0
    assert idle(parse_state("queue default 0\nprocess old:1 0 false\n"))
    # a quiet Sidekiq (an earlier run's TSTP) never empties its queues: it counts as drained at once
    quiet = IdleFor(10, clock=lambda: 0.0)
    assert quiet(parse_state("queue default 3\nprocess old:1 0 true\n"))
    assert not quiet(parse_state("queue default 3\nprocess old:1 1 true\n"))  # still running one
    assert not quiet(parse_state("queue default 3\n"))  # no live process says anything
