"""PostgreSQL: facts and actions on both clusters (replication role, base backup, promotion)."""
from __future__ import annotations

from .command import Cmd, Session
from .executor import not_implemented, two_host_task
from .settings import Settings


def psql(sql: str, port: int, database: str = "postgres") -> Cmd:
    """SQL as the postgres superuser over the local socket; the SQL travels on stdin."""
    return Cmd(f"psql -XAtq -v ON_ERROR_STOP=1 -p {port} -d {database}", user="postgres", stdin=sql)


def server_version(cfg: Settings) -> Cmd:
    return psql("SHOW server_version_num;", cfg.pg_port)


def replication_capacity(cfg: Settings) -> Cmd:
    """wal_level | free WAL senders | free replication slots (see facts.replication_capacity)."""
    return psql(
        "SELECT current_setting('wal_level'),\n"
        "       current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication),\n"
        "       current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots);",
        cfg.pg_port)


def cluster_identity(cfg: Settings) -> Cmd:
    """in recovery | system identifier | user databases | data directory (see facts.cluster_identity)."""
    return psql(
        "SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()),\n"
        "       (SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database\n"
        "        WHERE datname NOT IN ('postgres', 'template0', 'template1')),\n"
        "       current_setting('data_directory');",
        cfg.pg_port)


def data_dir_entries(cfg: Settings) -> Cmd:
    """What the data directory holds when no cluster answers (a missing directory lists nothing)."""
    return Cmd(f"test ! -e {cfg.pg_data_dir} || ls -A {cfg.pg_data_dir}")


def database_size(cfg: Settings) -> Cmd:
    return psql("SELECT sum(pg_database_size(datname))::bigint FROM pg_database;", cfg.pg_port)


@two_host_task(help={"force": "move a non-empty data directory on new aside (never deleted)"})
def basebackup(s: Session, force=False):
    """Copy old's cluster to new with pg_basebackup through the tunnel; new becomes a streaming replica."""
    raise not_implemented(4)


@two_host_task(help={"json": "print JSON for scripts instead of a table"})
def replication_status(s: Session, json=False):
    """Show replication from both sides (LSNs, lag, slot); exit 0 only when healthy."""
    raise not_implemented(4)


@two_host_task(help={"max_lag_bytes": "refuse to promote when new is further behind than this"})
def promote(s: Session, max_lag_bytes=16 * 1024 * 1024):
    """Fence old's PostgreSQL, prove new has every WAL record, then promote new."""
    raise not_implemented(6)
