"""The subsystems' own facts: each parser on the output its command prints on the pair's hosts."""
import pytest

from tasks import facts, mastodon, nginx, redis_cli, sidekiq, transfer, tunnel
from tasks.facts import Output

SENDERS = "15/main|127.0.0.1|streaming|0/3000148|0/3000148|0/3000148|0/3000148|0\n"
ZSET = '{"jid":"a1","class":"X"}\n1764600000.5\n{"jid":"b2","class":"Y"}\n1764600100\n'
PLAN = redis_cli.PLANNED
CERTS = ("3b1f...  archive/social.test/cert1.pem\n"
         "../../archive/social.test/cert1.pem  live/social.test/cert.pem\n")


@pytest.mark.parametrize("fact, out, expected", [
    (mastodon.Health(3000, 4000), Output(0, "OK\nOK\n"), ["OK", "OK"]),
    (mastodon.Health(3000, 4000), Output(0, "down\nOK\n"), ["down", "OK"]),
    (mastodon.AssetsPresent("/m", "mastodon"), Output(0, "application-4f2c.js\n"), True),
    (mastodon.AssetsPresent("/m", "mastodon"), Output(1, ""), False),
    (mastodon.EnvCopied("/m/.env.production"), Output(0, "1\n"), True),
    (mastodon.EnvCopied("/m/.env.production"), Output(1, "0\n"), False),
    (mastodon.EnvCopied("/m/.env.production"), Output(2, ""), False),  # no file yet
    (mastodon.HomeFeedsPresent(PLAN), Output(0, "feed:home:109\n"), True),
    (mastodon.HomeFeedsPresent(PLAN), Output(0, ""), False),
    (mastodon.HttpsAnswer("social.test", "127.0.0.1", "/health"), Output(0, "OK\n200"), (200, "OK")),
    (mastodon.HttpsAnswer("social.test", "127.0.0.1", "/health"), Output(7, "\n000"), (0, "")),
    (nginx.EnabledSites("social.test"), Output(0, "/etc/nginx/sites-available/social.test\n"),
     ["/etc/nginx/sites-available/social.test"]),
    (nginx.EnabledSites("social.test"), Output(123, ""), []),
    (nginx.ProxiesToNew("/s"), Output(0, "# Shaped like Mastodon's dist/nginx.conf (4.2+)\n"), False),
    (nginx.ProxiesToNew("/s"), Output(1, "", "head: cannot open '/s'"), None),
    (nginx.Answers("social.test", "/health"), Output(22, "", "curl: (22) 502"), False),
    (sidekiq.AsideJobs(PLAN), Output(0, "@@ zset mastodon-migration:moving:1T2:retry\n" + ZSET),
     [sidekiq.Aside("mastodon-migration:moving:1T2:retry", "retry",
                    [('{"jid":"a1","class":"X"}', "1764600000.5"),
                     ('{"jid":"b2","class":"Y"}', "1764600100")])]),
    (sidekiq.MovedJids(PLAN), Output(0, "a1\nb2\n"), {"a1", "b2"}),
    (mastodon.StartedSince(("mastodon-sidekiq", "mastodon-streaming"), ("/e",)),
     Output(0, "changed 1796142400.500000\nmastodon-sidekiq active Tue 2026-12-01 16:26:40.600000 UTC\n"
               "mastodon-streaming active Tue 2026-12-01 16:26:40.400000 UTC\n"),
     {"mastodon-sidekiq": True, "mastodon-streaming": False}),
    (mastodon.StartedSince(("mastodon-sidekiq",), ("/e",)),
     Output(0, "changed 1\nmastodon-sidekiq inactive \n"), {"mastodon-sidekiq": False}),
    (facts.TimelineFork("/d"), Output(0, "1\t0/5000148\tno recovery target specified\n"),
     facts.Fork(1, "0/5000148")),
    (facts.TimelineFork("/d"), Output(0, ""), None),
    (sidekiq.DurableLeft(PLAN), Output(0, "schedule\nretry\n"), ["schedule", "retry"]),
    (sidekiq.MovedKeys(PLAN), Output(0, "       2\n"), 2),
    (transfer.CertListing("social.test"), Output(0, CERTS), CERTS),
    (tunnel.INSTALLED, Output(1, ""), False),
    (facts.PresentPaths(("/a", "/b")), Output(2, "/b\n"), ["/b"]),
    (facts.CountLines("/p", "x:"), Output(1, "0\n"), 0),
    (facts.CountLines("/p", "x:"), Output(2, ""), 0),
    (facts.HomeDir("mastodon"), Output(0, "/home/mastodon\n"), "/home/mastodon"),
    (facts.LinkTarget("/etc/nginx/sites-enabled/s"), Output(0, "/etc/nginx/sites-available/s\n"),
     "/etc/nginx/sites-available/s"),
    (facts.UnitEnabled("nginx"), Output(1, "disabled\n"), "disabled"),
    (facts.PgReady(5433), Output(2, "127.0.0.1:5433 - no response\n"), False),
    (facts.Senders(5432), Output(0, SENDERS),
     [facts.Sender("15/main", "127.0.0.1", "streaming", *["0/3000148"] * 4, 0)]),
    (facts.SlotState(5432, "mig_new"), Output(0, "mig_new|f|extended|1048576\n"),
     facts.Slot("mig_new", False, "extended", 1048576)),
    (facts.SlotState(5432, "mig_new"), Output(0, ""), None),
    # DatabaseFront on the variant pair's old (PgBouncer on 6432), and on the default pair's (PostgreSQL)
    (facts.DatabaseFront(6432), Output(0, "program pgbouncer\nconfig /etc/pgbouncer/pgbouncer.ini\n"
                                          "pool_mode transaction\n"),
     facts.Front("pgbouncer", "/etc/pgbouncer/pgbouncer.ini", "transaction")),
    (facts.DatabaseFront(6432), Output(0, "program pgbouncer\nconfig /p.ini\npool_mode \n"),
     facts.Front("pgbouncer", "/p.ini", "session")),  # not set: PgBouncer's default
    (facts.DatabaseFront(5432), Output(0, "program postgres\n"), facts.Front("postgres")),
    (facts.DatabaseFront(5432), Output(0, ""), facts.Front("")),
])
def test_each_fact_reads_its_own_answer(fact, out, expected):
    assert fact.parse(out) == expected
    assert fact.describe() and fact.command().script  # what the runbook shows with it


def test_secret_bearing_reads_keep_their_output_out_of_logs():
    assert facts.SecretFileText("/m/.env.production", "mastodon").command().secret_output
    assert transfer.CertArchive("social.test").command().secret_output
    assert sidekiq.AsideJobs(PLAN).command().secret_output  # job payloads
    pgpass = facts.CountLines("/var/lib/postgresql/.pgpass", "127.0.0.1:5433:*:r:", "postgres").command()
    assert pgpass.script.startswith("grep -csF ")  # only a count comes back, never the password line


# SHOW DATABASES on the variant pair's new after the failover (PgBouncer 1.24, Debian 13)
SHOW_DATABASES = (
    "name|host|port|database|force_user|pool_size|min_pool_size|reserve_pool_size|server_lifetime|pool_mode|"
    "load_balance_hosts|max_connections|current_connections|max_client_connections|current_client_connections"
    "|paused|disabled\n"
    "mastodon_production|/var/run/postgresql|5432|mastodon_production||20|0|0|3600|||0|11|0|35|0|0\n"
    "pgbouncer||6432|pgbouncer|pgbouncer|2|0|0|3600|statement||0|0|0|1|0|0\n(2 rows)\n"
)


def test_pgbouncer_names_its_server_and_whether_it_is_paused():
    from tasks import pgbouncer

    pool = pgbouncer.Pool("/var/run/postgresql", "5432", False)
    assert pgbouncer.PoolState(6432, "mastodon_production").parse(Output(0, SHOW_DATABASES)) == pool
    assert pgbouncer.PoolState(6432, "").parse(Output(0, SHOW_DATABASES)) == pool  # status: the first one
    paused = SHOW_DATABASES.replace("|35|0|0\n", "|35|1|0\n")
    assert pgbouncer.PoolState(6432, "mastodon_production").parse(Output(0, paused)).paused
    assert pgbouncer.PoolState(6432, "other").parse(Output(0, SHOW_DATABASES)) is None
    refused = Output(2, "", 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.6432"')
    assert pgbouncer.PoolState(6432, "mastodon_production").parse(refused) is None


# SHOW POOLS on the default pair's new after phase 2 (PgBouncer 1.18, Debian 12); the paused variant has
# clients queued, the longest for 1.25 s
SHOW_POOLS = (
    "database|user|cl_active|cl_waiting|cl_active_cancel_req|cl_waiting_cancel_req|sv_active|sv_active_cancel|"
    "sv_being_canceled|sv_idle|sv_used|sv_tested|sv_login|maxwait|maxwait_us|pool_mode\n"
    "mastodon_production|mastodon|36|0|0|0|0|0|0|4|0|0|0|0|0|transaction\n"
    "pgbouncer|pgbouncer|1|0|0|0|0|0|0|0|0|0|0|0|0|statement\n(2 rows)\n"
)


def test_the_longest_wait_is_read_from_show_pools():
    from tasks import pgbouncer

    assert pgbouncer.longest_wait(SHOW_POOLS, "mastodon_production") == 0
    waiting = SHOW_POOLS.replace("|36|0|0|0|0|0|0|4|0|0|0|0|0|", "|2|34|0|0|0|0|0|0|0|0|0|1|250000|")
    assert pgbouncer.longest_wait(waiting, "mastodon_production") == 1.25
    assert pgbouncer.longest_wait(SHOW_POOLS, "other") is None
    assert pgbouncer.longest_wait("", "mastodon_production") is None
