"""Phase 3 killed at every one of its steps, under live load (part of `make test`; `make faults` kills each
step on a pair of its own). Each run is SIGKILLed right after the first command of the next step, the
previous run's kill having left the hosts at the step before: every step is entered once with the hosts as
a kill left them, and the last run converges, with no Mastodon unit on new restarted (PgBouncer held the
queries, even while a kill left it paused).

Runs on a fresh pair (it brings one up and runs phases 1 and 2), after test_phase3 and before test_phase4,
which then works on the pair this test promoted.
"""
import json
import time

import pytest

from .faults import (
    PHASE3_STEPS,
    assert_promoted_with_nothing_lost,
    fan_out_on_old_only,
    fresh_pair,
    run,
    run_killed_at,
    seed_jobs,
)
from .test_phase1 import wait_until
from .test_phase3 import PGBOUNCER
from .traffic import Traffic

pytestmark = pytest.mark.docker
# Once a kill stopped a run right after pg_promote, the next run records the promotion by accepting it
# (its own step), so a chain never enters "record the promotion": test_faults kills it on a pair of its own.
CHAIN = [step for step in PHASE3_STEPS if step != "record the promotion"]


@pytest.fixture(scope="module")
def fresh_tokens(pair):
    tokens = fresh_pair(pair)
    assert run("phase1-replicate", timeout=600).returncode == 0
    assert run("phase2-proxy", timeout=900).returncode == 0
    return tokens


def test_phase3_killed_at_every_step_converges(pair, fresh_tokens):
    jobs = seed_jobs(pair)
    fan_out_on_old_only(pair)
    traffic = Traffic(pair, fresh_tokens, writes_per_second=10, reads_per_second=2).start()
    runs = []
    try:
        for step in CHAIN:
            killed = run_killed_at(step, "phase3-failover")
            runs.append(killed)
            assert killed.killed, f"the run ended before step {step!r} began:\n{killed.output[-3000:]}"
            if step == "fence old":  # killed inside the pause: PgBouncer stays paused, and status says so
                assert "|1|0" in pair.exec("new", *PGBOUNCER, "SHOW DATABASES", check=True).stdout
                report = run("status", timeout=300)
                assert "PgBouncer on new is paused" in report.output, report.output[-3000:]
            if step == "drain old's Sidekiq":  # once more, right after the quiet signal
                quiet = run_killed_at(step, "phase3-failover", command="TSTP")
                runs.append(quiet)
                assert quiet.killed, quiet.output[-3000:]
                queued = queue_on_quiet_old(pair)
        final = run("phase3-failover")
        runs.append(final)
    finally:
        traffic.stop()
    assert final.returncode == 0, final.output[-5000:]
    assert len(traffic.acknowledged) > 20, traffic.summary()
    assert_promoted_with_nothing_lost(pair, fresh_tokens[0], runs, traffic.acknowledged, jobs)
    # the job queued while old's Sidekiq was quiet ran on new, once
    assert started(pair, "new", queued) == 1 and started(pair, "old", queued) == 0


def queue_on_quiet_old(pair) -> str:
    """A job queued on old after its Sidekiq was quieted: it takes nothing from its queues any more, so the
    drain must stop waiting for them to empty, and the move takes the job to new."""
    wait_until(lambda: "Terminating quiet threads" in pair.exec(
        "old", "journalctl", "-u", "mastodon-sidekiq", "--no-pager", "-o", "cat").stdout, 30,
        "old's Sidekiq to be quiet")
    jid = "queuedwhilequiet00000000"
    job = json.dumps({"retry": True, "queue": "default", "class": "Standin::SlowWorker", "args": [0.1],
                      "jid": jid, "created_at": time.time()})
    pair.exec("old", "redis-cli", "LPUSH", "queue:default", job, check=True)
    return jid


def started(pair, host: str, jid: str) -> int:
    journal = pair.exec(host, "journalctl", "-u", "mastodon-sidekiq", "--no-pager", "-o", "cat").stdout
    return sum(1 for line in journal.splitlines() if f"jid={jid}" in line and line.endswith(": start"))
