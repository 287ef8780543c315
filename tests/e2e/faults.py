"""Killing `fab` at a chosen step, the moment the run log shows that step's first command.

The run log (logs/<settings file name>.log) gets `{"step": TITLE}` when a step opens and a line with
`command` once each command has run: SIGKILL then leaves the hosts exactly as that command left them, with
nothing cleaned up.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import FAB, REPO


@dataclass
class Run:
    killed: bool  # killed at the step (False: it ended first)
    returncode: int
    output: str  # stdout and stderr

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.output


def _lines_from(path: Path, offset: int):
    if not path.exists():
        return offset, []
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    return offset + len(complete), [json.loads(line) for line in complete.decode().splitlines() if line]


def kill(proc: subprocess.Popen) -> None:
    proc.kill()


def run_killed_at(step: str, *task: str, command: str = "", delay: float = 0.0, action=kill,
                  timeout: float = 600, settings: str = "env/demo.env") -> Run:
    """Run `fab -H old,new TASK...` and SIGKILL it right after the first command of `step` (or as it ends,
    when it runs none; with `command`, after the step's first command containing that text), `delay` seconds
    later. `action`
    replaces the kill (it gets the fab process). `settings`: the settings file (its run log is watched)."""
    run_log = REPO / "logs" / f"{Path(settings).stem}.log"
    offset = run_log.stat().st_size if run_log.exists() else 0
    out_dir = REPO / "build" / "fault-runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{len(list(out_dir.iterdir())):03d}-{step.replace(' ', '-').replace('/', '')}.out"
    env = {**os.environ, "MIGRATION_ENV": settings}
    with out_path.open("w") as out:
        proc = subprocess.Popen([str(FAB), "-S", "docker/ssh_config", "-H", "old,new", *task], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        in_step, hit, deadline = False, False, time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not hit:
            offset, records = _lines_from(run_log, offset)
            for record in records:
                if record.get("step") == step:
                    in_step = True
                elif in_step and "command" in record and command in record["command"]:
                    hit = True
                    break
                elif in_step and not command and record.get("step_end") == step:
                    hit = True  # it ran no command (its work was done): killed as it ends
                    break
            time.sleep(0.005)
        if hit:
            time.sleep(delay)
            action(proc)
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return Run(hit, proc.returncode, out_path.read_text())


def run(*task: str, timeout: float = 900) -> Run:
    result = subprocess.run([str(FAB), "-S", "docker/ssh_config", "-H", "old,new", *task], cwd=REPO,
                            env={**os.environ, "MIGRATION_ENV": "env/demo.env"}, capture_output=True,
                            text=True, timeout=timeout)
    return Run(False, result.returncode, result.stdout + result.stderr)


def started_twice(journal: str) -> list[str]:
    """Job ids that Sidekiq started more often than once plus the times they failed (a retry is fine)."""
    starts: dict[str, int] = {}
    fails: dict[str, int] = {}
    for line in journal.splitlines():
        jid = next((w[4:] for w in line.split() if w.startswith("jid=")), None)
        if not jid:
            continue
        if line.endswith(": start"):
            starts[jid] = starts.get(jid, 0) + 1
        elif line.endswith(": fail"):
            fails[jid] = fails.get(jid, 0) + 1
    return [jid for jid, n in starts.items() if n > 1 + fails.get(jid, 0)]


def feeds(pair, host: str) -> dict[str, set[str]]:
    """Every home feed in a host's Redis: key -> status ids."""
    out = pair.sh(host, "for k in $(redis-cli --scan --pattern 'feed:home:*'); do "
                        "case $k in *:*:*:*) continue;; esac; "
                        "redis-cli ZRANGE \"$k\" 0 -1 | sed \"s|^|$k |\"; done").stdout
    found: dict[str, set[str]] = {}
    for line in out.splitlines():
        key, _, member = line.partition(" ")
        found.setdefault(key, set()).add(member)
    return found


def missing_from_feeds(old: dict[str, set[str]], new: dict[str, set[str]]) -> dict[str, int]:
    """Per feed of old's: how many of its statuses new's feed lacks (only feeds that lack some). A feed
    keeps its newest 400: what new has trimmed since (older than its oldest entry) does not count."""
    gaps = {}
    for key, ids in old.items():
        kept = new.get(key, set())
        oldest = min((int(x) for x in kept), default=0)
        gaps[key] = len({x for x in ids if int(x) >= oldest} - kept)
    return {key: n for key, n in gaps.items() if n}


LINE_SEPARATORS = "first\u2028second\u2029third\u0085end"
PHASE3_STEPS = (  # in their order; a renamed or removed step fails the tests (it would never be killed)
    "drain old's Sidekiq",
    "move Sidekiq's jobs to new",
    "media sync",
    "pause PgBouncer",
    "fence old",
    "prove new has everything",
    "promote new",
    "PgBouncer on new points at new's PostgreSQL",
    "resume PgBouncer",
    "record the promotion",
    "verify",
    "Mastodon's sidekiq, streaming on new run with the current settings",
    "build home feeds",
    "keep old down",
)


def fresh_pair(pair) -> list[str]:
    """The pair provisioned anew; the tokens of its active accounts."""
    from .tokens import active_accounts

    subprocess.run([str(REPO / ".venv/bin/python"), "docker/pair.py", "down"], cwd=REPO, capture_output=True)
    subprocess.run([str(REPO / ".venv/bin/python"), "docker/pair.py", "up"], cwd=REPO, capture_output=True,
                   check=True)
    return [account.token for account in active_accounts(pair)]


def seed_jobs(pair) -> dict[str, str]:
    """Jobs on old that only the move can take to new: scheduled for 2100, one with line separators in its
    arguments (as ActivityPub bodies carry them)."""
    jobs = {}
    for n in range(5):
        jid = f"faultjob{n:016d}"
        args = [LINE_SEPARATORS if n == 0 else f"note {n}"]
        jobs[jid] = json.dumps({"retry": True, "queue": "default", "class": "ActivityPub::ProcessingWorker",
                                "args": args, "jid": jid, "created_at": 1.0}, ensure_ascii=False)
        pair.exec("old", "redis-cli", "ZADD", "schedule", "4102444800", jobs[jid], check=True)
    return jobs


def assert_promoted_with_nothing_lost(pair, token: str, runs: list[Run], acknowledged: list[str],
                                      jobs: dict[str, str]) -> None:
    """What every interrupted phase 3 must end in, judged on the hosts."""
    from .test_phase1 import sql
    from .traffic import missing_ids

    assert not any(r.traceback for r in runs), [r.output for r in runs if r.traceback][0][-3000:]
    # the promoted state, recorded by the tool; old down and unstartable
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "f"
    assert pair.exec("new", "test", "-s", "/var/lib/mastodon-migration/promotion.json").returncode == 0
    assert pair.exec("old", "systemctl", "start", "postgresql@15-main").returncode != 0
    assert pair.exec("old", "systemctl", "is-active", "postgresql@15-main").stdout.strip() != "active"
    # every acknowledged write is on new
    assert missing_ids(pair, "new", acknowledged) == []
    # old's jobs on new exactly once, whole (line separators included), and none ran twice
    schedule = pair.exec("new", "redis-cli", "--raw", "ZRANGE", "schedule", "0", "-1").stdout.split("\n")
    assert {jid: schedule.count(job) for jid, job in jobs.items()} == {jid: 1 for jid in jobs}
    journal = pair.exec("new", "journalctl", "-u", "mastodon-sidekiq", "--no-pager", "-o", "cat").stdout
    assert started_twice(journal) == []
    # every status in a home feed on old when its Sidekiq stopped is in that feed on new
    assert missing_from_feeds(feeds(pair, "old"), feeds(pair, "new")) == {}
    # new's Mastodon writes on its own database, every unit running
    status, _, body = pair.request("POST", "/api/v1/statuses", token=token, body={"status": "after a fault"})
    assert status == 200, body
    states = [pair.exec("new", "systemctl", "is-active", f"mastodon-{unit}").stdout.strip()
              for unit in ("web", "sidekiq", "streaming")]
    assert states == ["active"] * 3
    # sidekiq and streaming started after the last change of .env.production (they run with the current
    # settings; web reloads), and every unit before the promotion: PgBouncer held the queries across it, so
    # phase 3 restarted nothing
    changed, promoted = (float(pair.exec("new", "stat", "-c", "%.6Y", path, check=True).stdout)
                         for path in ("/home/mastodon/live/.env.production",
                                      "/var/lib/mastodon-migration/promotion.json"))
    for unit, started in units_started(pair).items():
        assert started < promoted, f"{unit} restarted in phase 3"
        assert unit == "mastodon-web" or started > changed, f"{unit} runs with older settings"


def units_started(pair, host: str = "new") -> dict[str, float]:
    """When each of Mastodon's units on a host last started, in epoch seconds (boot + its monotonic start)."""
    found = {}
    for unit in ("mastodon-web", "mastodon-sidekiq", "mastodon-streaming"):
        script = (f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}; "
                  "cut -d' ' -f1 /proc/uptime; date +%s.%N")
        started, uptime, now = pair.sh(host, script).stdout.split()
        found[unit] = float(now) - float(uptime) + int(started) / 1e6
    return found


def fan_out_on_old_only(pair) -> None:
    """A scheduled status falls due on old: old's Sidekiq publishes it and fans it out into old's Redis
    alone, so new's feeds (built in phase 2) lack it, as happens between the feed build and the drain."""
    from .test_phase1 import sql, wait_until

    ss_id = sql(pair, "old", "SELECT id FROM scheduled_statuses ORDER BY id LIMIT 1", "mastodon_production")
    job = json.dumps({"retry": True, "queue": "default", "class": "PublishScheduledStatusWorker",
                      "args": [int(ss_id)], "jid": "fanoutonoldonly000000000", "created_at": time.time()})
    pair.exec("old", "redis-cli", "ZADD", "schedule", str(time.time() - 1), job, check=True)
    wait_until(lambda: missing_from_feeds(feeds(pair, "old"), feeds(pair, "new")), 60,
               "old's Sidekiq to fan out a status that new's feeds lack")
