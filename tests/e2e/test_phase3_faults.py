"""Phase 3 killed at every one of its steps, under live load (part of `make test`; `make faults` kills each
step on a pair of its own). Each run is SIGKILLed right after the first command of the next step, the
previous run's kill having left the hosts at the step before: every step is entered once with the hosts as
a kill left them, and the last run converges.

Runs on a fresh pair (it brings one up and runs phases 1 and 2), after test_phase3 and before test_phase4,
which then works on the pair this test promoted.
"""
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
from .traffic import Traffic

pytestmark = pytest.mark.docker


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
        for step in PHASE3_STEPS:
            killed = run_killed_at(step, "phase3-failover")
            runs.append(killed)
            assert killed.killed, f"the run ended before step {step!r} began:\n{killed.output[-3000:]}"
        final = run("phase3-failover")
        runs.append(final)
    finally:
        traffic.stop()
    assert final.returncode == 0, final.output[-5000:]
    assert len(traffic.acknowledged) > 20, traffic.summary()
    assert_promoted_with_nothing_lost(pair, fresh_tokens[0], runs, traffic.acknowledged, jobs)
