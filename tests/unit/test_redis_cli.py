"""Which Redis the migration asks, found in .env.production exactly as Mastodon 4.3 finds it."""
import shutil
import subprocess
import time

import pytest

from tasks import redis_cli, sidekiq
from tasks.core import StepFailed
from tasks.facts import Output
from tasks.redis_cli import Target
from tasks.sidekiq_jobs import MOVED_JIDS, pipe_replies, plan_move


def test_the_base_redis_defaults_to_localhost_and_takes_each_setting():
    assert redis_cli.base({}) == Target("localhost", "6379", "0")
    assert redis_cli.base({"REDIS_HOST": "10.0.0.5", "REDIS_PORT": "6380", "REDIS_DB": "3",
                           "REDIS_USER": "mastodon", "REDIS_PASSWORD": "pw"}) == Target(
        "10.0.0.5", "6380", "3", "mastodon", "pw")


def test_a_url_wins_and_is_read_whole():
    values = {"REDIS_URL": "redis://:pw%40x@10.0.0.5:6380/2", "REDIS_HOST": "ignored", "REDIS_DB": "9"}
    assert redis_cli.base(values) == Target("10.0.0.5", "6380", "2", "", "pw@x")
    tls = redis_cli.base({"REDIS_URL": "rediss://u:p@r.example"})
    assert tls == Target("r.example", "6379", "0", "u", "p", tls=True)
    assert redis_cli.base({"REDIS_URL": "unix:///run/redis/redis.sock"}).socket


def test_sidekiq_uses_its_own_settings_only_with_a_url_or_a_host():
    base = {"REDIS_URL": "redis://:pw@127.0.0.1:6379/0", "REDIS_NAMESPACE": "social"}
    assert redis_cli.sidekiq(base) == redis_cli.base(base)
    # a password alone does not make a configuration: Mastodon falls back to the base one, whole
    assert redis_cli.sidekiq({**base, "SIDEKIQ_REDIS_PASSWORD": "other"}) == redis_cli.base(base)
    own = redis_cli.sidekiq({**base, "SIDEKIQ_REDIS_URL": "redis://:pw@127.0.0.1:6379/1"})
    assert (own.db, own.password, own.prefix) == ("1", "pw", "social:")
    by_host = redis_cli.sidekiq({"SIDEKIQ_REDIS_HOST": "10.0.0.7"})
    assert (by_host.host, by_host.port, by_host.db) == ("10.0.0.7", "6379", "0")


def test_sentinels_are_named_for_preflight_unless_a_url_overrides_them():
    sentinel = {"REDIS_SENTINELS": "10.0.0.1:26379", "REDIS_SENTINEL_MASTER": "mymaster"}
    assert redis_cli.sentinel_keys(sentinel) == ["REDIS_SENTINELS"]
    assert redis_cli.sentinel_keys({**sentinel, "REDIS_URL": "redis://r"}) == []
    assert redis_cli.sentinel_keys({"REDIS_SENTINELS": "10.0.0.1"}) == []  # no master name: not used


def test_scripts_name_the_namespace_and_keep_the_password_off_the_command_line():
    target = redis_cli.sidekiq(
        {"SIDEKIQ_REDIS_URL": "redis://u:s3cr%21t@127.0.0.1/1", "REDIS_NAMESPACE": "social"}
    )
    cmd = redis_cli.cli(target, 'LLEN "${P}queue:default"')
    assert "P=social:" in cmd.script and "--user u" in cmd.script and "-n 1" in cmd.script
    assert "s3cr!t" in cmd.input() and "s3cr!t" not in cmd.line() and "s3cr!t" not in cmd.shown()
    assert "P=<REDIS_NAMESPACE and a colon, or ''>" in redis_cli.cli(redis_cli.PLANNED, "PING").shown()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_a_namespaced_move_into_sidekiqs_own_database(tmp_path):
    """A real Redis with a password: jobs set aside under a namespace are read back and merged into
    Sidekiq's own database under the same namespace, where a namespaced Sidekiq looks for them."""
    secret = "pw-" + str(time.time_ns())
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f"port 16398\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {tmp_path}\nrequirepass {secret}\n"
    )
    conf.chmod(0o600)
    server = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
    try:
        values = {"REDIS_URL": f"redis://:{secret}@127.0.0.1:16398/0",
                  "SIDEKIQ_REDIS_URL": f"redis://:{secret}@127.0.0.1:16398/1", "REDIS_NAMESPACE": "social"}
        jobs = redis_cli.sidekiq(values)

        def run(body, stdin=None):
            cmd = redis_cli.script(jobs, body, stdin=stdin)
            return subprocess.run(["sh", "-s"], input=cmd.input(), text=True, capture_output=True)

        for _ in range(50):
            if run("r PING").stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        run("r ZADD \"${P}retry\" 1700000000 '{\"jid\":\"r1\"}'")
        run("r RPUSH \"${P}queue:push\" '{\"jid\":\"q1\"}'; r SADD \"${P}queues\" push")
        renamed = run(sidekiq.SET_ASIDE)
        assert renamed.stdout.strip() == "set aside: 2 jobs"
        listing = sidekiq.AsideJobs(jobs)
        listed = subprocess.run(["sh", "-s"], input=listing.command().input(), text=True, capture_output=True)
        found = listing.parse(Output(0, listed.stdout))
        sidekiq._require_found(renamed.stdout, found)
        with pytest.raises(StepFailed, match="2 jobs were set aside on old but only 0 are found"):
            sidekiq._require_found(renamed.stdout, [])
        assert sorted(a.target for a in found) == ["queue:push", "retry"]
        plan = plan_move(found, moved=set(), prefix=jobs.prefix)
        sent = run("r --pipe", stdin=plan.pipe)
        assert pipe_replies(sent.stdout) == (0, 2)
        assert run('r LRANGE "${P}queue:push" 0 -1').stdout.strip() == '{"jid":"q1"}'
        assert run('r SMEMBERS "${P}queues"').stdout.split() == ["push"]
        assert sorted(run(f'r SMEMBERS "${{P}}{MOVED_JIDS}"').stdout.split()) == ["q1", "r1"]
        assert run("r -n 0 DBSIZE").stdout.strip() == "0"  # the base database got nothing
        run(sidekiq.KEEP_MOVED)  # old's keys keep their jobs under the namespace, for undo
        kept = run('r --scan --pattern "${P}mastodon-migration:moved:*"').stdout.split()
        assert sorted(k.rsplit(":", 1)[-1] for k in kept) == ["push", "retry"]
        assert all(k.startswith("social:mastodon-migration:moved:") for k in kept)
        assert run("REDISCLI_AUTH= r PING").stdout.strip() != "PONG"  # the password was needed
    finally:
        server.terminate()
