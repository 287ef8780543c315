import pytest

from tasks import facts
from tasks.facts import Output, Unparseable

DF = """Filesystem         1-blocks        Used   Available Capacity Mounted on
/dev/vda       270553174016 24390258688 84554035200      23% /
"""
SS_PYTHON = 'LISTEN 0      5      127.0.0.1:5433 0.0.0.0:* users:(("python3",pid=21130,fd=3))\n'
SS_TWO = ('LISTEN 0 128 127.0.0.1:5433 0.0.0.0:* users:(("ssh",pid=77,fd=4))\n'
          'LISTEN 0 128 [::1]:5433 [::]:* users:(("ssh",pid=77,fd=5))\n')


def test_pg_major():
    assert facts.pg_major(Output(0, "150013\n")) == 15
    assert facts.pg_major(Output(0, "90624\n")) == 9
    with pytest.raises(Unparseable, match="could not connect"):
        facts.pg_major(Output(2, "", "psql: error: could not connect to server\n"))


def test_replication_capacity():
    cap = facts.replication_capacity(Output(0, "replica|10|9\n"))
    assert cap == facts.ReplicationCapacity("replica", 10, 9)
    with pytest.raises(Unparseable, match="expected 3 fields"):
        facts.replication_capacity(Output(0, "replica|10\n"))


def test_cluster_identity():
    ident = facts.cluster_identity(Output(0, "t|7312345678901234567|mastodon_production|/var/lib/postgresql/15/main\n"))
    assert ident.in_recovery and ident.user_databases == ("mastodon_production",)
    fresh = facts.cluster_identity(Output(0, "f|7312345678901234999||/var/lib/postgresql/15/main\n"))
    assert not fresh.in_recovery and fresh.user_databases == ()


def test_glibc_df_and_numbers():
    assert facts.glibc_version(Output(0, "glibc 2.36\n")) == "2.36"
    assert facts.df_available_bytes(Output(0, DF)) == 84554035200
    assert facts.first_int(Output(0, "8029231\n")) == 8029231
    with pytest.raises(Unparseable):
        facts.first_int(Output(0, "\n"))


def test_port_listeners():
    assert facts.port_listeners(Output(0, "")) == []
    assert facts.port_listeners(Output(0, SS_PYTHON)) == [facts.Listener("python3", 21130, 0)]
    assert {x.pid for x in facts.port_listeners(Output(0, SS_TWO))} == {77}


def test_mastodon_revision():
    line = "3f2a9c0e5b1d  lib/mastodon/version.rb\n"
    assert facts.mastodon_revision(Output(0, line)) == "3f2a9c0e5b1d"
    with pytest.raises(Unparseable, match="No such file"):
        facts.mastodon_revision(Output(1, "", "sha256sum: lib/mastodon/version.rb: No such file or directory\n"))


def test_human_bytes():
    assert facts.human_bytes(512) == "512 B"
    assert facts.human_bytes(3 * 1024 ** 3) == "3.0 GiB"
