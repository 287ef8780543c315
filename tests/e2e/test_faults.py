"""The fault matrix (`make faults`; `make test` leaves it out and runs test_phase3_faults instead): on a pair
of its own, each case kills `fab` once in phase 3 (SIGKILL at a step's first command, or a dropped tunnel or
connection), some also once in phase 1 or 2 (during the base backup, at the standby's start, during the
precompile or the feed build, at the proxy switch). After each fault the phase runs again and must converge:
judged on the hosts, with live traffic through phase 3, every acknowledged write on new, old's jobs on new
exactly once, every home feed complete, and never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from .faults import (
    PHASE3_STEPS,
    Run,
    assert_promoted_with_nothing_lost,
    feeds,
    fresh_pair,
    run,
    run_killed_at,
    seed_jobs,
)
from .test_phase1 import sql, wait_until
from .traffic import Traffic

pytestmark = [pytest.mark.docker, pytest.mark.faults]
UNFINISHED = "/var/lib/mastodon-migration/unfinished"


@dataclass(frozen=True)
class Kill:
    name: str
    step: str
    command: str = ""  # after the step's first command containing this (default: its first command)
    delay: float = 0.0  # seconds later
    cuts_short: str = ""  # the marker of the work that the kill must have cut short
    flags: tuple[str, ...] = ()  # of the killed run

    def __str__(self) -> str:
        return self.name


PHASE1_KILLS = [
    # throttled, so that the kill lands in the middle of the copy
    Kill("during the base backup", "base backup", f"{UNFINISHED}/base-backup", 2.0, "base-backup",
         ("--max-rate", "4M")),
    Kill("at the standby's start", "base backup", command="systemctl start postgresql@15-main"),
]
PHASE2_KILLS = [
    Kill("during the precompile", "precompile assets", UNFINISHED, 0.7, "precompile"),
    Kill("during the feed build", "build home feeds", UNFINISHED, 0.15, "feeds-build"),
    Kill("at the proxy switch", "proxy old to new"),
]
TUNNEL_DROP = "the tunnel dropped during the catch-up"
CONNECTION_DROP = "the connection to new dropped during the promotion"
PHASE3_FAULTS = [*PHASE3_STEPS, TUNNEL_DROP, CONNECTION_DROP]
# each phase-3 case also carries one of the phase 1-2 kills, so every pair serves twice
CASES = [
    (PHASE1_KILLS[i] if i < 2 else None, PHASE2_KILLS[i - 2] if 2 <= i < 5 else None, fault)
    for i, fault in enumerate(PHASE3_FAULTS)
]


def phase_killed_then_rerun(pair, task: str, kill: Kill | None) -> list[Run]:
    runs = []
    if kill:
        killed = run_killed_at(kill.step, task, *kill.flags, command=kill.command, delay=kill.delay)
        runs.append(killed)
        assert killed.killed, f"{task} ended before {kill}:\n{killed.output[-3000:]}"
        if kill.cuts_short:
            assert pair.exec("new", "test", "-e", f"{UNFINISHED}/{kill.cuts_short}").returncode == 0, \
                f"the kill at {kill} did not cut {kill.cuts_short} short"
    again = run(task, timeout=900)
    runs.append(again)
    assert again.returncode == 0, again.output[-5000:]
    assert not any(r.traceback for r in runs)
    return runs


def drop_tunnel(pair):
    def action(_proc):  # the tunnel's ssh session on old dies; new's unit starts it again by itself
        pair.exec("old", "pkill", "-KILL", "-u", "postgres", "-x", "sshd")
    return action


def drop_connection_to_new(pair):
    def action(_proc):  # every ssh session of the operator's user on new ends; fab lives on
        pair.exec("new", "pkill", "-KILL", "-u", "admin", "-x", "sshd")
    return action


def fail_over_with_fault(pair, fault: str) -> list[Run]:
    if fault == TUNNEL_DROP:
        first = run_killed_at("fence old", "phase3-failover", "--catchup-timeout", "10",
                              action=drop_tunnel(pair))
        assert first.returncode == 0 or "fence was lifted" in first.output, first.output[-3000:]
        if first.returncode:  # as the message says: once new streams again
            wait_until(lambda: run("replication-status").returncode == 0, 60, "replication to resume")
    elif fault == CONNECTION_DROP:
        first = run_killed_at("promote new", "phase3-failover", action=drop_connection_to_new(pair))
        assert first.returncode == 0 or "phase3-failover again" in first.output, first.output[-3000:]
    else:
        first = run_killed_at(fault, "phase3-failover")
    assert first.killed, f"phase 3 ended before {fault}:\n{first.output[-3000:]}"
    return [first, run("phase3-failover")]


@pytest.mark.parametrize("phase1_kill,phase2_kill,fault", CASES,
                         ids=[f"phase 3: {c[2]}" + (f"; {c[0] or c[1]}" if c[0] or c[1] else "")
                              for c in CASES])
def test_a_fault_then_a_rerun_converges(pair, phase1_kill, phase2_kill, fault):
    tokens = fresh_pair(pair)
    phase_killed_then_rerun(pair, "phase1-replicate", phase1_kill)
    assert sql(pair, "new", "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert sql(pair, "old", "SELECT count(*) FROM pg_replication_slots") == "1"
    phase_killed_then_rerun(pair, "phase2-proxy", phase2_kill)
    status, _, body = pair.request("GET", "/")  # through old's proxy: new's front page, assets and all
    assert status == 200, body[:300]
    active = len(feeds(pair, "old"))
    assert len(feeds(pair, "new")) >= active, "a home feed is missing on new"
    jobs = seed_jobs(pair)
    traffic = Traffic(pair, tokens, writes_per_second=10, reads_per_second=2).start()
    try:
        runs = fail_over_with_fault(pair, fault)
    finally:
        traffic.stop()
    assert runs[-1].returncode == 0, runs[-1].output[-5000:]
    assert_promoted_with_nothing_lost(pair, tokens[0], runs, traffic.acknowledged, jobs)
