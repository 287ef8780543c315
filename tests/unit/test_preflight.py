from tasks import checks, preflight
from tasks.facts import Output

from .test_facts import DF, SS_PYTHON

DATA = "/var/lib/postgresql/15/main"
# StandbySettings as the pair's hosts print it: Debian's defaults (new), and the same on old until it is tuned
DEFAULTS = ("max_connections|100\nmax_locks_per_transaction|64\nmax_prepared_transactions|0\n"
            "max_wal_senders|10\nmax_worker_processes|8\n")


LSCLUSTERS = f"15 main {DATA} hba_file = '/etc/postgresql/15/main/pg_hba.conf'\n"
# RedisServer's script as redis-cli 7 prints it; on new, old's password given to a Redis that has none
INFO_OLD = "# Server\nredis_version:7.0.15\nrun_id:5f0c1d\nconfig_file:/etc/redis/redis.conf\n"
INFO_NEW = INFO_OLD.replace("5f0c1d", "77aa02")
NO_PASSWORD_YET = ("AUTH failed: ERR AUTH <password> called without any password configured for the default "
                   "user. Are you sure your configuration is correct?\n" + INFO_NEW)
PGBOUNCER = "program pgbouncer\nconfig /etc/pgbouncer/pgbouncer.ini\npool_mode transaction\n"


def healthy():
    old = {"sudo": Output(0), "version": Output(0, "150013\n"), "glibc": Output(0, "glibc 2.36\n"),
           "cluster": Output(0, LSCLUSTERS), "front": Output(0, "program postgres\n"),
           "base": Output(0, INFO_OLD), "Sidekiq": Output(0, INFO_OLD),
           "identity": Output(0, f"f|7301|mastodon_production|{DATA}\n"),
           "mastodon": Output(0, "abc123  lib/mastodon/version.rb\n"),
           "capacity": Output(0, "replica|10|10\n"), "size": Output(0, "52428800\n"),
           "standby": Output(0, DEFAULTS)}
    new = {"sudo": Output(0), "version": Output(0, "150013\n"), "glibc": Output(0, "glibc 2.36\n"),
           "cluster": Output(0, LSCLUSTERS), "base": Output(0, INFO_NEW), "Sidekiq": Output(0, INFO_NEW),
           "identity": Output(0, f"f|7399||{DATA}\n"),
           "mastodon": Output(0, "abc123  lib/mastodon/version.rb\n"),
           "entries": Output(0, "PG_VERSION\nbase\n"), "df": Output(0, DF), "listeners": Output(0, ""),
           "tunnel": Output(0, "0\n"), "standby": Output(0, DEFAULTS),
           "login": Output(2, "", "no tunnel yet")}
    return {"old": old, "new": new, "values": {"DB_HOST": "/var/run/postgresql", "REDIS_HOST": "127.0.0.1"}}


def by_name(results):
    return {r.name: r for r in results}


def test_a_healthy_pair_passes(example_settings):
    results = preflight.judge(example_settings, healthy())
    assert [r.status for r in results] == ["PASS"] * len(results)
    assert len(results) == 15
    table = preflight.table(results)
    assert table.splitlines()[0].split() == ["CHECK", "HOST", "RESULT", "DETAIL"]


def test_unreachable_host_stops_the_checks(example_settings):
    found = healthy()
    found["new"] = {"unreachable": Output(255, stderr="new: ssh failed: Server not found in known_hosts")}
    results = preflight.judge(example_settings, found)
    assert [(r.host, r.status) for r in results] == [("old", "PASS"), ("new", "FAIL")]
    assert "known_hosts" in results[1].detail


def test_each_bad_fact_fails_with_what_to_change(example_settings):
    found = healthy()
    found["new"]["version"] = Output(0, "160002\n")
    found["old"]["capacity"] = Output(0, "minimal|1|0\n")
    found["new"]["glibc"] = Output(0, "glibc 2.31\n")
    found["new"]["identity"] = Output(0, f"f|7399|other_db|{DATA}\n")
    found["new"]["df"] = Output(0, DF.replace("84554035200", "1000"))
    found["new"]["mastodon"] = Output(0, "def456\n")
    found["new"]["listeners"] = Output(0, SS_PYTHON)
    results = by_name(preflight.judge(example_settings, found))
    assert "install postgresql-15 on new" in results["PostgreSQL version"].detail
    assert "set wal_level = replica" in results["replication settings"].detail
    assert "raise max_wal_senders" in results["replication settings"].detail
    assert "raise max_replication_slots" in results["replication settings"].detail
    assert results["glibc"].status == "WARN" and "REINDEX" in results["glibc"].detail
    assert "other_db" in results["new's data directory"].detail
    assert results["free disk"].status == "FAIL"
    assert "check out old's version" in results["Mastodon version"].detail
    assert "python3 (pid 21130)" in results["tunnel port"].detail
    assert sum(r.status == "FAIL" for r in results.values()) == 6


def test_new_may_already_be_a_replica_of_old(example_settings):
    found = healthy()
    found["new"]["identity"] = Output(0, f"t|7301|mastodon_production|{DATA}\n")
    assert checks.new_cluster(example_settings, found["new"]["identity"], Output(0),
                              found["old"]["identity"], DATA).detail == "already a replica of old"
    found["new"]["identity"] = Output(0, f"t|9999|mastodon_production|{DATA}\n")
    assert checks.new_cluster(example_settings, found["new"]["identity"], Output(0),
                              found["old"]["identity"], DATA).status == "FAIL"


def test_new_cluster_stopped(example_settings):
    down = Output(2, "", "psql: error: connection to server on socket failed")
    old = healthy()["old"]["identity"]
    assert checks.new_cluster(example_settings, down, Output(0, ""), old, DATA).detail == f"{DATA} is empty"
    assert checks.new_cluster(example_settings, down, Output(0, "PG_VERSION\n"), old, DATA).status == "FAIL"


def test_tunnel_port_held_by_our_tunnel_passes(example_settings):
    held = Output(0, 'LISTEN 0 128 127.0.0.1:5433 0.0.0.0:* users:(("ssh",pid=77,fd=4))\n')
    assert checks.tunnel_port(example_settings, held, Output(0, "77   101\n")).status == "PASS"
    assert checks.tunnel_port(example_settings, held, Output(0, "0 \n")).status == "FAIL"


def test_tunnel_port_held_by_another_users_process():
    """In a container root may not see another user's sockets' process; the uid still tells."""
    from tasks import settings
    cfg = settings.load("env/example.env")
    anonymous = Output(0, "LISTEN 0 128 127.0.0.1:5433 0.0.0.0:* uid:101 ino:95354 sk:1002 <->\n")
    assert checks.tunnel_port(cfg, anonymous, Output(0, "1416   101\n")).status == "PASS"
    foreign = checks.tunnel_port(cfg, anonymous, Output(0, "0 \n"))
    assert foreign.status == "FAIL" and "a process of uid 101" in foreign.detail


def test_a_tuned_old_names_each_setting_new_must_raise(example_settings):
    found = healthy()
    found["old"]["standby"] = Output(0, DEFAULTS.replace("max_connections|100", "max_connections|300")
                                     .replace("max_worker_processes|8", "max_worker_processes|16"))
    result = by_name(preflight.judge(example_settings, found))["hot-standby settings"]
    assert result.status == "WARN"
    assert result.detail == ("max_connections is 100 on new, 300 on old; max_worker_processes is 8 on new, "
                             "16 on old: phase 1 raises them on new")


def test_after_phase1_new_s_mastodon_must_log_in_through_the_tunnel(example_settings):
    found = healthy()
    found["new"]["tunnel"] = Output(0, "4711 111\n")  # the tunnel runs: phase 1 has set it up
    found["new"]["login"] = Output(2, "", "psql: error: connection to server at \"127.0.0.1\", port 5433 "
                                          "failed: fe_sendauth: no password supplied\n")
    result = by_name(preflight.judge(example_settings, found))["Mastodon's database login"]
    assert result.status == "WARN" and "fe_sendauth: no password supplied" in result.detail
    found["new"]["login"] = Output(0, "7781\n")
    assert by_name(preflight.judge(example_settings, found))["Mastodon's database login"].status == "PASS"


def test_no_cluster_or_two_on_the_port_fail_with_what_to_change(example_settings):
    found = healthy()
    found["new"]["cluster"] = Output(0, "")
    result = [r for r in preflight.judge(example_settings, found) if r.name == "PostgreSQL cluster"]
    assert [(r.host, r.status) for r in result] == [("old", "PASS"), ("new", "FAIL")]
    assert "no cluster on port 5432" in result[1].detail and "15/main in " + DATA in result[0].detail


def test_pgbouncer_on_old_is_named_and_prepared_statements_must_be_off(example_settings):
    found = healthy()
    found["old"]["front"] = Output(0, PGBOUNCER)
    found["values"] = {"DB_HOST": "127.0.0.1", "DB_PORT": "6432", "PREPARED_STATEMENTS": "false"}
    result = by_name(preflight.judge(example_settings, found))["Mastodon's database connection"]
    assert result.status == "PASS" and "PgBouncer at 127.0.0.1:6432" in result.detail
    assert "pool_mode=transaction" in result.detail
    found["values"].pop("PREPARED_STATEMENTS")
    result = by_name(preflight.judge(example_settings, found))["Mastodon's database connection"]
    assert result.status == "WARN" and "PREPARED_STATEMENTS=false" in result.detail


def test_redis_must_be_each_hosts_own_and_not_behind_sentinel(example_settings):
    found = healthy()
    found["new"]["base"] = found["new"]["Sidekiq"] = Output(0, NO_PASSWORD_YET)
    found["values"]["REDIS_URL"] = "redis://:pw@127.0.0.1:6379/0"
    result = by_name(preflight.judge(example_settings, found))["Redis"]
    assert result.status == "PASS" and "phase 2 gives it old's" in result.detail
    found["new"]["Sidekiq"] = Output(0, INFO_OLD)  # the same server answers on both hosts
    result = by_name(preflight.judge(example_settings, found))["Redis"]
    assert result.status == "FAIL" and "the same Sidekiq Redis" in result.detail
    found["new"]["Sidekiq"] = Output(0, "AUTH failed: WRONGPASS invalid username-password pair\nNOAUTH "
                                        "Authentication required.\n")
    result = by_name(preflight.judge(example_settings, found))["Redis"]
    assert result.status == "FAIL" and "NOAUTH" in result.detail
    found["values"] |= {"REDIS_SENTINELS": "10.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": ""}
    result = by_name(preflight.judge(example_settings, found))["Redis"]
    assert result.status == "FAIL" and "Sentinel" in result.detail
