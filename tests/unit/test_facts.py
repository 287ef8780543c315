"""Facts: each holds its command and its parser; the parsers are tested on output captured on the pair."""
import subprocess

import pytest

from tasks import facts, mastodon, nginx, redis_cli, sidekiq
from tasks.facts import Output, Unparseable

DF = """Filesystem         1-blocks        Used   Available Capacity Mounted on
/dev/vda       270553174016 24390258688 84554035200      23% /
"""
SS_PYTHON = 'LISTEN 0      5      127.0.0.1:5433 0.0.0.0:* users:(("python3",pid=21130,fd=3))\n'
SS_TWO = ('LISTEN 0 128 127.0.0.1:5433 0.0.0.0:* users:(("ssh",pid=77,fd=4))\n'
          'LISTEN 0 128 [::1]:5433 [::]:* users:(("ssh",pid=77,fd=5))\n')
# ClusterOnPort's script on old (Debian 12, PostgreSQL 15), running; pg_lsclusters lists a stopped one alike
LSCLUSTERS = "15 main /var/lib/postgresql/15/main hba_file = '/etc/postgresql/15/main/pg_hba.conf'\n"
# ... and on the variant pair's old (Debian 13): not named main, its data outside /var/lib/postgresql
LSCLUSTERS_VARIANT = "17 social /srv/pgdata hba_file = '/etc/postgresql/17/social/pg_hba.conf'\n"
STANDBY = "t|streaming|0/3000000|0/3000000|2026-11-25 20:07:39.1+00|12.5|7712197592948643839\n"
CONTROL = ("pg_control version number:            1300\nDatabase cluster state:               shut down\n"
           "Latest checkpoint location:           0/30866A0\nLatest checkpoint's TimeLineID:       1\n")


def test_server_version():
    assert facts.ServerVersion.parse(Output(0, "150013\n")) == 15
    assert facts.ServerVersion.parse(Output(0, "90624\n")) == 9
    with pytest.raises(Unparseable, match="could not connect"):
        facts.ServerVersion.parse(Output(2, "", "psql: error: could not connect to server\n"))


def test_replication_capacity():
    assert facts.ReplicationCapacity.parse(Output(0, "replica|10|9\n")) == facts.Capacity("replica", 10, 9)
    with pytest.raises(Unparseable, match="expected 3 fields"):
        facts.ReplicationCapacity.parse(Output(0, "replica|10\n"))


def test_cluster_identity():
    ident = facts.ClusterIdentity.parse(Output(0, "t|7312345678901234567|mastodon_production|"
                                                  "/var/lib/postgresql/15/main\n"))
    assert ident.in_recovery and ident.user_databases == ("mastodon_production",)
    fresh = facts.ClusterIdentity.parse(Output(0, "f|7312345678901234999||/var/lib/postgresql/15/main\n"))
    assert not fresh.in_recovery and fresh.user_databases == ()


def test_glibc_df_and_numbers():
    assert facts.Glibc.parse(Output(0, "glibc 2.36\n")) == "2.36"
    assert facts.FreeDisk.parse(Output(0, DF)) == 84554035200
    assert facts.DatabaseSize.parse(Output(0, "8029231\n")) == 8029231
    with pytest.raises(Unparseable):
        facts.DatabaseSize.parse(Output(0, "\n"))


def test_port_listeners():
    assert facts.Listeners.parse(Output(0, "")) == []
    assert facts.Listeners.parse(Output(0, SS_PYTHON)) == [facts.Listener("python3", 21130, 0)]
    assert {x.pid for x in facts.Listeners.parse(Output(0, SS_TWO))} == {77}


def test_unit_process_asks_ps_only_for_a_running_unit():
    script = facts.UnitProcess("x").command().script
    stopped = subprocess.run(["sh", "-c", script.replace("$(systemctl show -p MainPID --value x)", "0")],
                             capture_output=True, text=True)
    assert (stopped.stdout, stopped.stderr) == ("0\n", "")  # no `ps` usage text for PID 0
    assert facts.UnitProcess.parse(Output(0, "0\n")) == facts.Process(0, None)
    assert facts.UnitProcess.parse(Output(0, "47     0\n")) == facts.Process(47, 0)


def test_mastodon_revision():
    line = "3f2a9c0e5b1d  lib/mastodon/version.rb\n"
    assert facts.MastodonRevision.parse(Output(0, line)) == "3f2a9c0e5b1d"
    with pytest.raises(Unparseable, match="No such file"):
        facts.MastodonRevision.parse(Output(1, "", "sha256sum: lib/mastodon/version.rb: "
                                                   "No such file or directory\n"))


def test_human_bytes():
    assert facts.human_bytes(512) == "512 B"
    assert facts.human_bytes(3 * 1024 ** 3) == "3.0 GiB"


def test_the_cluster_is_found_from_the_host_whether_or_not_it_runs():
    place = facts.ClusterOnPort(5432).parse(Output(0, LSCLUSTERS))
    assert (place.unit, place.hba_file, place.start_conf, place.data_dir, place.bindir) == (
        "postgresql@15-main", "/etc/postgresql/15/main/pg_hba.conf", "/etc/postgresql/15/main/start.conf",
        "/var/lib/postgresql/15/main", "/usr/lib/postgresql/15/bin")
    # the name is pg_lsclusters', never the data directory's folder name
    variant = facts.ClusterOnPort(5432).parse(Output(0, LSCLUSTERS_VARIANT))
    assert (variant.unit, variant.data_dir, variant.bindir) == (
        "postgresql@17-social", "/srv/pgdata", "/usr/lib/postgresql/17/bin")
    unset = facts.ClusterOnPort(5432).parse(Output(0, "16 data /srv/pg/data\n"))  # hba_file unset: Debian's
    assert (unset.unit, unset.hba_file) == ("postgresql@16-data", "/etc/postgresql/16/data/pg_hba.conf")
    with pytest.raises(Unparseable, match="no cluster on port 5432"):
        facts.ClusterOnPort(5432).parse(Output(0, ""))
    with pytest.raises(Unparseable, match="several clusters"):
        facts.ClusterOnPort(5432).parse(Output(0, LSCLUSTERS + LSCLUSTERS_VARIANT))
    with pytest.raises(Unparseable, match="will not touch"):  # a failed copy is removed: never a shallow path
        facts.ClusterOnPort(5432).parse(Output(0, "15 main /srv\n"))
    with pytest.raises(Unparseable, match="will not touch"):
        facts.ClusterOnPort(5432).parse(Output(0, "15 main /var/lib/postgresql\n"))


def test_unit_states_and_stopped():
    states = facts.UnitStates(("a", "b", "c")).parse(Output(3, "active\ninactive\n"))
    assert states == {"a": "active", "b": "inactive", "c": "unknown"}
    assert ([facts.stopped(s) for s in ("inactive", "failed", "active", "activating")]
            == [True, True, False, False])


def test_standby_control_data_and_lsn():
    standby = facts.StandbyState.parse(Output(0, STANDBY))
    assert standby.receiver_status == "streaming" and standby.replay_age_seconds == 12.5
    assert facts.StandbyState.parse(Output(2, "", "psql: error: connection refused")) is None
    control = facts.ControlData.parse(Output(0, CONTROL))
    assert control == facts.Control("shut down", "0/30866A0", 1)
    assert facts.lsn("1/0") > facts.lsn("0/FFFFFFFF")


def test_files_keys_and_matching_lines():
    assert facts.FileText("/x").parse(Output(1, "", "cat: /x: No such file or directory")) is None
    assert facts.PublicKey.parse(Output(0, "ssh-ed25519 AAAAC3Nz comment\n")) == "ssh-ed25519 AAAAC3Nz"
    assert facts.PublicKey.parse(Output(1, "", "No such file")) is None
    assert facts.LinesWith("/k", " tunnel").parse(Output(1, "")) == ""
    assert facts.LinesWith("/k", " tunnel", whole_line=True).command().script == "grep -sxF -- ' tunnel' /k"
    assert (facts.JsonFile.parse(Output(0, "{half")) is None
            and facts.JsonFile.parse(Output(0, '{"a": 1}')) == {"a": 1})


def test_a_batch_asks_several_facts_in_one_round_trip():
    batch = facts.Batch((("tunnel", facts.UnitState("t")), ("installed", facts.PathExists("/etc/t.service")),
                         ("feeds", mastodon.HomeFeedsPresent(redis_cli.base({"REDIS_PASSWORD": "hush"})))))
    cmd = batch.command()
    assert cmd.user == "root" and "<secret: the Redis password in .env.production>" in cmd.shown()
    ran = subprocess.run(["sh", "-s"], input=cmd.script.replace("systemctl is-active t", "echo active")
                         .replace("redis-cli", "echo feed:home:1; true"), capture_output=True, text=True)
    assert batch.parse(Output(0, ran.stdout)) == {"tunnel": "active", "installed": False, "feeds": True}
    assert batch.parse(Output(0, "@@ tunnel\ninactive\n")) == {"tunnel": "inactive", "installed": False,
                                                                "feeds": False}


def test_every_fact_says_what_its_answer_looks_like():
    """The runbook shows each check with what a pass looks like: no fact class may leave it out."""
    def subclasses(cls):
        return {cls} | {sub for child in cls.__subclasses__() for sub in subclasses(child)}
    silent = [cls.__name__ for cls in subclasses(facts.Fact)
              if cls not in (facts.Fact, facts.Raw, facts.Query, sidekiq.RedisFact) and not cls.passes]
    assert silent == []
    assert nginx.ProxiesToNew("/s").parse(Output(0, nginx.MARK_LINE + ": old proxies\n")) is True
