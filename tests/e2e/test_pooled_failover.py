"""The failover with PgBouncer as new's database endpoint (DATABASE_ENDPOINT=pgbouncer), on a fresh default
pair whose Mastodon boots like Puma (BOOT_SECONDS=10): a method that restarts Mastodon cannot pass.

- A transaction held open through new's PgBouncer makes the pause time out: phase 3 stops before the fence,
  and nothing of the failover has happened (old still the primary, PgBouncer resumed, writes flow).
- Then phase 3 under a live client, killed right after the pause: PgBouncer stays paused and status says so;
  the next run finishes the failover: no acknowledged write is lost, no Mastodon unit on new restarts, and
  PgBouncer ends pointing at new's own PostgreSQL, resumed. (That no request fails in a run left alone is
  asserted on the variant pair and by the demo.)
- After cleanup (which removes the tunnel's password) new's Mastodon still writes through PgBouncer.
"""
import subprocess
import time

import pytest

from .conftest import REPO, fab
from .faults import fresh_pair, run_killed_at
from .test_phase1 import sql, wait_until
from .traffic import Traffic, missing_ids

pytestmark = pytest.mark.docker
UNITS = ("mastodon-web", "mastodon-sidekiq", "mastodon-streaming")
HELD = "FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()"
ADMIN = ["sudo", "-u", "postgres", "psql", "-XAtq", "-h", "/var/run/postgresql", "-p", "6432", "-U",
         "pgbouncer", "pgbouncer", "-c"]


@pytest.fixture(scope="module")
def pooled(pair, tmp_path_factory):
    tokens = fresh_pair(pair)
    # Puma-like boot: every start or reload of web takes 10 s (new's copy of the settings has it too)
    pair.sh("old", "echo BOOT_SECONDS=10 >> /home/mastodon/live/.env.production", check=True)
    path = tmp_path_factory.mktemp("pooled") / "pooled.env"
    path.write_text((REPO / "env" / "demo.env").read_text() + "DATABASE_ENDPOINT=pgbouncer\n")
    env = {"MIGRATION_ENV": str(path)}
    for phase in ("phase1-replicate", "phase2-proxy"):
        result = fab("-H", "old,new", phase, env=env, timeout=900)
        assert result.returncode == 0, phase + "\n" + result.stdout[-4000:] + result.stderr[-2000:]
    return env, tokens


def started(pair) -> dict[str, str]:
    return {unit: pair.exec("new", "systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value",
                            unit).stdout.strip() for unit in UNITS}


def test_phase2_points_new_mastodon_at_its_pgbouncer(pair, pooled):
    env = pair.exec("new", "cat", "/home/mastodon/live/.env.production", check=True).stdout.splitlines()
    assert {"DB_HOST=/var/run/postgresql", "DB_PORT=6432", "PREPARED_STATEMENTS=false"} <= set(env)
    assert pair.exec("new", "systemctl", "is-active", "pgbouncer").stdout.strip() == "active"
    mode = pair.exec("new", "stat", "-c", "%a %U", "/etc/pgbouncer/userlist.txt", check=True).stdout.split()
    assert mode == ["600", "postgres"]
    row = pair.exec("new", *ADMIN, "SHOW DATABASES", check=True).stdout
    assert "mastodon_production|127.0.0.1|5433|" in row  # old's PostgreSQL, through the tunnel


def test_a_pause_that_cannot_finish_changes_nothing(pair, pooled):
    env, tokens = pooled
    held = subprocess.Popen(["docker", "exec", "-u", "mastodon", pair.container("new"), "psql", "-XAtq", "-h",
                             "/var/run/postgresql", "-p", "6432", "-d", "mastodon_production", "-c",
                             "BEGIN; SELECT pg_sleep(120); COMMIT;"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: sql(pair, "old", f"SELECT count(*) {HELD}") != "0", 20,
                   "the transaction to run on old's PostgreSQL")
        result = fab("-H", "old,new", "phase3-failover", env=env, timeout=900)
        assert result.returncode != 0 and "could not pause within 5 s" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        sql(pair, "old", f"SELECT pg_cancel_backend(pid) {HELD}")
        held.wait(timeout=60)
    assert sql(pair, "old", "SELECT pg_is_in_recovery()") == "f"  # old is still the primary
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "t"
    hba = pair.exec("old", "cat", "/etc/postgresql/15/main/pg_hba.conf").stdout
    assert "mastodon-migration fence" not in hba
    assert "|127.0.0.1|5433|" in pair.exec("new", *ADMIN, "SHOW DATABASES", check=True).stdout
    status, _, body = pair.request("POST", "/api/v1/statuses", token=tokens[0], body={"status": "not paused"})
    assert status == 200, body


def test_a_run_killed_while_paused_is_finished_by_the_next(pair, pooled):
    """SIGKILL right after the pause (as the fence begins): PgBouncer stays paused, status says so, and the
    next run fences, promotes, points PgBouncer at new and resumes it. Nothing acknowledged is lost and no
    Mastodon unit on new restarts."""
    env, tokens = pooled
    before = started(pair)
    traffic = Traffic(pair, tokens, writes_per_second=10, reads_per_second=5).start()
    try:
        time.sleep(3)
        killed = run_killed_at("fence old", "phase3-failover", settings=env["MIGRATION_ENV"])
        assert killed.killed, killed.output[-3000:]
        assert "|1|0" in pair.exec("new", *ADMIN, "SHOW DATABASES", check=True).stdout  # still paused
        report = fab("-H", "old,new", "status", env=env, timeout=300)
        assert "PgBouncer on new is paused" in report.stdout, report.stdout
        result = fab("-H", "old,new", "phase3-failover", env=env, timeout=900)
        time.sleep(3)
    finally:
        traffic.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert not killed.traceback and "Traceback" not in result.stdout + result.stderr
    assert missing_ids(pair, "new", traffic.acknowledged) == []
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "f"
    assert started(pair) == before  # no Mastodon unit on new restarted
    databases = pair.exec("new", *ADMIN, "SHOW DATABASES", check=True).stdout
    assert "mastodon_production|/var/run/postgresql|5432|" in databases  # new's own, over the socket
    assert "|1|0" not in databases  # resumed
    env_file = pair.exec("new", "cat", "/home/mastodon/live/.env.production", check=True).stdout.splitlines()
    assert "DB_PORT=6432" in env_file  # the endpoint never changed
    status, _, body = pair.request("POST", "/api/v1/statuses", token=tokens[0], body={"status": "resumed"})
    assert status == 200, body


def test_after_cleanup_mastodon_still_writes_through_pgbouncer(pair, pooled):
    env, tokens = pooled
    result = fab("-H", "old,new", "cleanup", "--apply", env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    no_password = "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'mastodon'"
    assert sql(pair, "new", no_password) == "t"  # the tunnel's password is gone
    assert "mastodon" not in pair.exec("new", "cat", "/etc/pgbouncer/userlist.txt").stdout
    pair.exec("new", "systemctl", "restart", "mastodon-web", check=True)  # new connections, after cleanup

    def posted():
        try:
            return pair.request("POST", "/api/v1/statuses", host="new", token=tokens[0],
                                body={"status": "through PgBouncer after cleanup"})[0] == 200
        except OSError:  # web boots (BOOT_SECONDS)
            return False

    wait_until(posted, 60, "a post on new after cleanup")
