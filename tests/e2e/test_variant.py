"""The whole migration on the `variant` pair (docker/README.md): Debian 13 with PostgreSQL 17 on both hosts,
old's cluster 17/social in /srv/pgdata, old's Mastodon through PgBouncer (transaction pooling, a SCRAM
password, PREPARED_STATEMENTS=false), Redis with a password in REDIS_URL, Sidekiq on its own database
(SIDEKIQ_REDIS_URL) and REDIS_NAMESPACE. Every phase and cleanup run under a live client, judged on the hosts,
once with each DATABASE_ENDPOINT: `direct` (the database itself, repointed at the failover) and `pgbouncer`
(new's PgBouncer, paused across the promotion: then not one request fails).

Runs after the default pair's tests and before the demo, which brings the default pair back.
"""
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks import settings
from tasks.runbook import drift, runbook_steps
from tests.fakes.bind import Bind

from .conftest import PAIR_JSON, REPO, Pair, fab
from .faults import LINE_SEPARATORS, missing_from_feeds, started_twice
from .streaming import Stream, followed_by_follower
from .test_phase1 import sql
from .test_phase4 import NEW, ZONE, record_of, resolver, run_across, settings_file
from .tokens import active_accounts, follower_pair
from .traffic import Traffic, missing_ids

pytestmark = pytest.mark.docker
NAMESPACE = "social:"  # REDIS_NAMESPACE=social: every key of Mastodon's is under it
FEEDS_DB, JOBS_DB = "0", "1"  # REDIS_URL's database, SIDEKIQ_REDIS_URL's
OLD_UNIT = "postgresql@17-social"


@dataclass
class Variant:
    pair: Pair
    endpoint: str  # DATABASE_ENDPOINT
    settings: Path

    @property
    def env(self) -> dict[str, str]:
        return {"MIGRATION_ENV": str(self.settings)}

    def fab(self, *args: str, timeout: float = 900):
        return fab("-H", "old,new", *args, env=self.env, timeout=timeout)


@pytest.fixture(scope="module", params=["direct", "pgbouncer"])
def variant(pair, request, tmp_path_factory):
    """A freshly provisioned variant pair, migrated with each DATABASE_ENDPOINT in turn."""
    os.environ["PAIR_PROFILE"] = "variant"
    try:
        for action in ("down", "up"):
            done = subprocess.run([sys.executable, "docker/pair.py", action], cwd=REPO, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                pytest.fail(f"PAIR_PROFILE=variant docker/pair.py {action} failed:\n"
                            + (done.stdout + done.stderr)[-3000:])
        found = Pair(json.loads(PAIR_JSON.read_text()))
        assert found.info["profile"] == "variant"
        settings_path = tmp_path_factory.mktemp("variant") / f"variant-{request.param}.env"
        settings_path.write_text((REPO / "env" / "demo.env").read_text()
                                 + f"DATABASE_ENDPOINT={request.param}\n")
        yield Variant(found, request.param, settings_path)
    finally:
        os.environ.pop("PAIR_PROFILE", None)


def redis(pair, host: str, db: str, *args: str) -> str:
    """redis-cli on a host, with the password its redis.conf holds (none before phase 2 on new)."""
    script = ('p=$(sed -n "s/^requirepass //p" /etc/redis/redis.conf | tail -n 1 | tr -d \'"\'); '
              '[ -n "$p" ] && export REDISCLI_AUTH="$p"; exec redis-cli --raw -n "$0" "$@"')
    return pair.exec(host, "bash", "-c", script, db, *args, check=True).stdout


def feeds(pair, host: str) -> dict[str, set[str]]:
    """Every home feed in a host's Redis (under the namespace): key -> status ids."""
    found: dict[str, set[str]] = {}
    for key in redis(pair, host, FEEDS_DB, "--scan", "--pattern", f"{NAMESPACE}feed:home:*").split():
        if key.count(":") == 3:  # social:feed:home:<id>, not its reblog sets
            found[key] = set(redis(pair, host, FEEDS_DB, "ZRANGE", key, "0", "-1").split())
    return found


def seed_jobs(pair) -> dict[str, dict[str, str]]:
    """Jobs that only the move takes to new: scheduled for 2100 (one with line separators in its
    arguments), one retrying in 2100 and one dead, in Sidekiq's namespaced keys on old."""
    jobs: dict[str, dict[str, str]] = {"schedule": {}, "retry": {}, "dead": {}}
    for n, key in enumerate(["schedule"] * 3 + ["retry", "dead"]):
        jid = f"variantjob{n:014d}"
        args = [LINE_SEPARATORS if n == 0 else f"note {n}"]
        job = {"retry": True, "queue": "default", "class": "ActivityPub::ProcessingWorker", "args": args,
               "jid": jid, "created_at": 1.0}
        jobs[key][jid] = json.dumps(job, ensure_ascii=False)
        redis(pair, "old", JOBS_DB, "ZADD", NAMESPACE + key, "4102444800", jobs[key][jid])
    return jobs


def test_preflight_names_the_cluster_pgbouncer_and_redis_as_found(variant):
    result = variant.fab("preflight", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "17/social in /srv/pgdata (postgresql@17-social)" in result.stdout
    assert "17/main in /var/lib/postgresql/17/main" in result.stdout
    assert "PgBouncer at 127.0.0.1:6432" in result.stdout and "pool_mode=transaction" in result.stdout
    assert f"database {JOBS_DB}, keys under {NAMESPACE}" in result.stdout
    assert "phase 2 gives it old's" in result.stdout


def test_phases_1_to_3_move_every_write_and_job_exactly_once(variant):
    pooled, pair = variant.endpoint == "pgbouncer", variant.pair
    tokens = [account.token for account in active_accounts(pair)]
    jobs = seed_jobs(pair)
    stream = Stream(pair, follower_pair(pair)[1].token)
    traffic = Traffic(pair, tokens, writes_per_second=10, reads_per_second=2).start()
    try:
        for phase in ("phase1-replicate", "phase2-proxy"):
            result = variant.fab(phase)
            assert result.returncode == 0, phase + "\n" + result.stdout[-4000:] + result.stderr[-2000:]
        assert traffic.failures == [], traffic.summary()  # until the failover, no request fails
        # new's Mastodon reaches old's PostgreSQL through the tunnel, itself or through new's PgBouncer;
        # new's Redis took old's password
        env = pair.exec("new", "cat", "/home/mastodon/live/.env.production", check=True).stdout
        port = "DB_PORT=6432" if pooled else "DB_PORT=5433"
        assert {"DB_HOST=127.0.0.1", port, "PREPARED_STATEMENTS=false"} <= set(env.splitlines())
        assert "NOAUTH" in pair.exec("new", "redis-cli", "PING").stdout
        stream.start()  # a user's WebSocket through old's proxy to new's streaming, open across phase 3
        assert stream.connected.wait(30), "the WebSocket did not open"
        result = variant.fab("phase3-failover")
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        time.sleep(3)
    finally:
        traffic.stop(stalls=not pooled)
        time.sleep(2)  # the last statuses' fan-out
        stream.stop.set()
        if stream.ident:  # started
            stream.join(timeout=10)
    if pooled:  # the queries waited in PgBouncer across the promotion; streaming stayed up and complete
        assert traffic.failures == [], traffic.summary()
        expected = stream.expected(traffic, followed_by_follower(active_accounts(pair)))
        assert len(expected) > 5 and stream.reconnects == 0
        assert sorted(expected - stream.received) == []
    assert "Traceback" not in result.stdout + result.stderr
    # new is the primary; old's cluster (found by pg_lsclusters, not by its folder's name) will not start
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "f"
    assert pair.exec("old", "systemctl", "start", OLD_UNIT).returncode != 0
    assert pair.exec("old", "systemctl", "is-active", OLD_UNIT).stdout.strip() != "active"
    # every acknowledged write is on new
    assert missing_ids(pair, "new", traffic.acknowledged) == []
    # new's Mastodon on new's own PostgreSQL: directly (old's port was PgBouncer's, which new then does
    # not run), or through new's PgBouncer, at the address it had
    env = pair.exec("new", "cat", "/home/mastodon/live/.env.production", check=True).stdout
    port = "DB_PORT=6432" if pooled else "DB_PORT=5432"
    assert {"DB_HOST=127.0.0.1", port, "PREPARED_STATEMENTS=false"} <= set(env.splitlines())
    # each of old's jobs on new exactly once, in Sidekiq's database under the namespace, byte for byte
    for key, seeded in jobs.items():
        there = redis(pair, "new", JOBS_DB, "ZRANGE", NAMESPACE + key, "0", "-1").split("\n")
        assert {jid: there.count(job) for jid, job in seeded.items()} == {jid: 1 for jid in seeded}, key
    assert redis(pair, "new", FEEDS_DB, "EXISTS", NAMESPACE + "schedule").strip() == "0"
    # moved from old, and kept there aside
    assert redis(pair, "old", JOBS_DB, "EXISTS", NAMESPACE + "schedule").strip() == "0"
    assert redis(pair, "old", JOBS_DB, "--scan", "--pattern", NAMESPACE + "mastodon-migration:moved:*")
    journal = pair.exec("new", "journalctl", "-u", "mastodon-sidekiq", "--no-pager", "-o", "cat").stdout
    assert started_twice(journal) == []
    # every status of old's home feeds is in new's (under the namespace), and a post still works
    assert missing_from_feeds(feeds(pair, "old"), feeds(pair, "new")) == {}
    status, _, body = pair.request("POST", "/api/v1/statuses", token=tokens[0], body={"status": "on 17"})
    assert status == 200, body
    # the runbook shows every command each phase ran on this pair too
    cfg = settings.load(variant.settings)
    records = [json.loads(line) for line in cfg.log_file.read_text().splitlines()]
    for number, task in ((1, "phase1-replicate"), (2, "phase2-proxy"), (3, "phase3-failover")):
        start = max(i for i, r in enumerate(records) if r.get("task") == task and r.get("event") == "start")
        end = next(i for i in range(start + 1, len(records)) if records[i].get("task") == task)
        assert drift(runbook_steps(number, cfg), records[start + 1:end]) == [], task
    report = variant.fab("status", timeout=300)
    assert report.returncode == 0 and "Traceback" not in report.stdout + report.stderr, report.stdout
    # status reads Sidekiq's keys where they are: the three sets moved, set aside under the namespace
    assert re.search(r"^3 failover\s+done", report.stdout, re.M), report.stdout
    assert "no schedule/retry/dead left on old, 3 key(s) set aside" in report.stdout


def test_phase4_and_cleanup(variant, tmp_path):
    pair = variant.pair
    tokens = [account.token for account in active_accounts(pair)]
    bind = Bind(tmp_path / "bind", zone="social.test", zone_text=ZONE)
    (tmp_path / "bind").mkdir()
    bind.start()
    try:
        env = {"MIGRATION_ENV": str(settings_file(
            tmp_path, DNS_PROVIDER="rfc2136", RFC2136_SERVER="127.0.0.1", RFC2136_PORT=bind.port,
            RFC2136_KEY_NAME="migration.key", RFC2136_KEY_FILE=bind.key_file,
            DNS_VERIFY_SERVERS=bind.server, DATABASE_ENDPOINT=variant.endpoint))}
        result, traffic = run_across(pair, tokens, resolver(pair, bind), "phase4-dns", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert traffic.failures == [], traffic.summary()
        assert NEW in record_of(bind)
    finally:
        bind.stop()
    applied = variant.fab("cleanup", "--apply", timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert pair.exec("new", "test", "-e",
                        "/etc/systemd/system/mastodon-migration-tunnel.service").returncode != 0
    hba = pair.exec("old", "cat", "/etc/postgresql/17/social/pg_hba.conf").stdout
    assert "# BEGIN mastodon-migration fence" in hba and "mastodon-migration replication" not in hba
    assert pair.exec("old", "ls", "-A", "/srv/pgdata/pg_replslot").stdout.strip() == ""
    posted, _, body = pair.request("POST", "/api/v1/statuses", host="new", token=tokens[0],
                                      body={"status": "after cleanup on 17"})
    assert posted == 200, body
