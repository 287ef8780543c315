"""Phase 3 killed at every one of its steps, under live load: each run is SIGKILLed right after the first
command of the next step (the previous run's kill left the hosts at the step before), so every step is
entered once with the hosts as a kill left them; the last run converges.

Runs on a fresh pair (it brings one up and runs phases 1 and 2), after test_phase3 and before test_phase4,
which then works on the pair this test promoted.
"""
import json
import subprocess

import pytest

from .conftest import REPO
from .faults import run, run_killed_at, started_twice
from .test_phase1 import sql
from .tokens import active_accounts
from .traffic import Traffic, missing_ids

pytestmark = pytest.mark.docker

PHASE3_STEPS = (  # in their order; a renamed or removed step fails the test (it would never be killed)
    "drain old's Sidekiq",
    "move Sidekiq's jobs to new",
    "media sync",
    "fence old",
    "prove new has everything",
    "promote new",
    "point Mastodon at new's database",
    "restart Mastodon on new",
    "verify",
    "Mastodon's sidekiq, streaming on new run with the current settings",
    "keep old down",
)
LINE_SEPARATORS = "first\u2028second\u2029third\u0085end"


@pytest.fixture(scope="module")
def fresh_tokens(pair):
    subprocess.run([str(REPO / ".venv/bin/python"), "docker/pair.py", "down"], cwd=REPO, capture_output=True)
    subprocess.run([str(REPO / ".venv/bin/python"), "docker/pair.py", "up"], cwd=REPO, capture_output=True,
                   check=True)
    assert run("phase1-replicate", timeout=600).returncode == 0
    assert run("phase2-proxy", timeout=900).returncode == 0
    return [account.token for account in active_accounts(pair)]


def seed_jobs(pair) -> dict[str, str]:
    """Jobs on old that only the move can take to new: scheduled for tomorrow, one with line separators
    in its arguments (as ActivityPub bodies carry them)."""
    jobs = {}
    for n in range(5):
        jid = f"faultjob{n:016d}"
        args = [LINE_SEPARATORS if n == 0 else f"note {n}"]
        jobs[jid] = json.dumps({"retry": True, "queue": "default", "class": "ActivityPub::ProcessingWorker",
                                "args": args, "jid": jid, "created_at": 1.0}, ensure_ascii=False)
        pair.exec("old", "redis-cli", "ZADD", "schedule", "4102444800", jobs[jid], check=True)
    return jobs


def on_new(pair, key: str) -> list[str]:
    return pair.exec("new", "redis-cli", "--raw", "ZRANGE", key, "0", "-1", check=True).stdout.split("\n")


def test_phase3_killed_at_every_step_converges(pair, fresh_tokens):
    jobs = seed_jobs(pair)
    traffic = Traffic(pair, fresh_tokens, writes_per_second=10, reads_per_second=2).start()
    runs = []
    try:
        for step in PHASE3_STEPS:
            killed = run_killed_at(step, "phase3-failover")
            runs.append(killed)
            assert killed.killed, f"the run ended before step {step!r} began:\n{killed.output[-3000:]}"
        final = run("phase3-failover")
        runs.append(final)
    finally:
        traffic.stop()
    assert final.returncode == 0, final.output[-5000:]
    assert not any(r.traceback for r in runs), [r.output for r in runs if r.traceback][0][-3000:]
    # the promoted state, recorded by the tool; old down and unstartable
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "f"
    assert pair.exec("new", "test", "-s", "/var/lib/mastodon-migration/promotion.json").returncode == 0
    assert pair.exec("old", "systemctl", "start", "postgresql@15-main").returncode != 0
    assert pair.exec("old", "systemctl", "is-active", "postgresql@15-main").stdout.strip() != "active"
    # every acknowledged write is on new
    assert len(traffic.acknowledged) > 20, traffic.summary()
    assert missing_ids(pair, "new", traffic.acknowledged) == []
    # old's jobs on new exactly once, whole (line separators included), and none ran twice
    schedule = on_new(pair, "schedule")
    for jid, job in jobs.items():
        assert schedule.count(job) == 1, jid
    journal = pair.exec("new", "journalctl", "-u", "mastodon-sidekiq", "--no-pager", "-o", "cat").stdout
    assert started_twice(journal) == []
    # new's Mastodon writes on its own database, every unit running
    status, _, body = pair.request("POST", "/api/v1/statuses", token=fresh_tokens[0],
                                   body={"status": "after every kill"})
    assert status == 200, body
    states = [pair.exec("new", "systemctl", "is-active", f"mastodon-{unit}").stdout.strip()
              for unit in ("web", "sidekiq", "streaming")]
    assert states == ["active"] * 3
