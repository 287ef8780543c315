"""Preflight judgements: pure functions from command output to PASS / WARN / FAIL with a reason."""

from __future__ import annotations

from dataclasses import dataclass

from . import facts
from .facts import Output, Unparseable
from .settings import Settings

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
DISK_FACTOR = 1.2  # new needs room for old's databases plus WAL written during the copy


@dataclass(frozen=True)
class Check:
    name: str
    host: str
    status: str
    detail: str


def sudo(host: str, out: Output) -> Check:
    if out.ok:
        return Check("ssh and sudo", host, PASS, "ssh works, sudo needs no password")
    return Check(
        "ssh and sudo", host, FAIL, f"sudo -n true failed ({out.why()}); give the ssh user passwordless sudo"
    )


def pg_versions(cfg: Settings, old: Output, new: Output) -> Check:
    majors = {}
    for host, out in (("old", old), ("new", new)):
        try:
            majors[host] = facts.ServerVersion.parse(out)
        except Unparseable as error:
            return Check(
                "PostgreSQL version", host, FAIL, f"no PostgreSQL answers on port {cfg.pg_port}: {error}"
            )
    if majors["old"] != majors["new"]:
        return Check(
            "PostgreSQL version",
            "both",
            FAIL,
            f"old runs {majors['old']}, new runs {majors['new']}: a physical replica needs the same "
            f"major version; install postgresql-{majors['old']} on new",
        )
    return Check("PostgreSQL version", "both", PASS, f"both run PostgreSQL {majors['old']}")


def primary_ready(cfg: Settings, out: Output) -> Check:
    name = "replication settings"
    try:
        cap = facts.ReplicationCapacity.parse(out)
    except Unparseable as error:
        return Check(name, "old", FAIL, str(error))
    problems = []
    if cap.wal_level not in ("replica", "logical"):
        problems.append(f"wal_level is {cap.wal_level}: set wal_level = replica and restart PostgreSQL")
    if cap.free_wal_senders < 2:
        problems.append(
            f"{cap.free_wal_senders} free WAL sender(s), pg_basebackup -Xs needs 2: raise max_wal_senders"
        )
    if cap.free_slots < 1:
        problems.append("no free replication slot: raise max_replication_slots")
    if problems:
        return Check(name, "old", FAIL, "; ".join(problems))
    return Check(
        name,
        "old",
        PASS,
        f"wal_level={cap.wal_level}, {cap.free_wal_senders} free WAL senders, {cap.free_slots} free slots",
    )


def glibc(old: Output, new: Output) -> Check:
    try:
        versions = facts.Glibc.parse(old), facts.Glibc.parse(new)
    except Unparseable as error:
        return Check("glibc", "both", WARN, f"could not compare: {error}")
    if versions[0] != versions[1]:
        return Check(
            "glibc",
            "both",
            WARN,
            f"old has glibc {versions[0]}, new {versions[1]}: collations may differ and text indexes "
            "can break on a physical copy; plan a REINDEX of text indexes after the move",
        )
    return Check("glibc", "both", PASS, f"both have glibc {versions[0]}")


def new_cluster(
    cfg: Settings, identity: Output, entries: Output, old_identity: Output, data_dir: str
) -> Check:
    """new's data directory (pg_lsclusters' for PG_PORT) must hold nothing, the default empty cluster, or a
    replica of old."""
    name = "new's data directory"
    if not identity.ok:  # no cluster answers: the directory must be empty
        if entries.ok and not entries.stdout.strip():
            return Check(name, "new", PASS, f"{data_dir} is empty")
        return Check(
            name,
            "new",
            FAIL,
            f"no cluster answers on port {cfg.pg_port} and {data_dir} "
            "is not empty; start the default cluster or empty the directory",
        )
    try:
        ident = facts.ClusterIdentity.parse(identity)
    except Unparseable as error:
        return Check(name, "new", FAIL, str(error))
    if ident.in_recovery:
        try:
            primary = facts.ClusterIdentity.parse(old_identity).system_identifier
        except Unparseable:
            primary = None
        if ident.system_identifier == primary:
            return Check(name, "new", PASS, "already a replica of old")
        return Check(name, "new", FAIL, "a replica of another primary; move it aside (basebackup --force)")
    if ident.user_databases:
        return Check(
            name,
            "new",
            FAIL,
            f"holds databases {', '.join(ident.user_databases)}; basebackup --force would move them aside",
        )
    return Check(name, "new", PASS, "a fresh default cluster (no user databases)")


def disk_space(old_size: Output, new_df: Output) -> Check:
    try:
        size, free = facts.DatabaseSize.parse(old_size), facts.FreeDisk.parse(new_df)
    except Unparseable as error:
        return Check("free disk", "new", FAIL, str(error))
    need = int(size * DISK_FACTOR)
    detail = f"{facts.human_bytes(free)} free, old's databases take {facts.human_bytes(size)}"
    if free < need:
        return Check("free disk", "new", FAIL, f"{detail}; free at least {facts.human_bytes(need)}")
    return Check("free disk", "new", PASS, detail)


def mastodon_versions(cfg: Settings, old: Output, new: Output) -> Check:
    revisions = {}
    for host, out in (("old", old), ("new", new)):
        try:
            revisions[host] = facts.MastodonRevision.parse(out)
        except Unparseable as error:
            return Check("Mastodon version", host, FAIL, f"{cfg.mastodon_dir}: {error}")
    if revisions["old"] != revisions["new"]:
        return Check(
            "Mastodon version",
            "both",
            FAIL,
            f"old is at {revisions['old'][:12]}, new at {revisions['new'][:12]}: "
            f"check out old's version in {cfg.mastodon_dir} on new",
        )
    return Check("Mastodon version", "both", PASS, f"same version ({revisions['old'][:12]})")


def standby_settings(old: Output, new: Output) -> Check:
    """new will be old's hot standby: each setting in facts.HOT_STANDBY_SETTINGS must be as high as old's."""
    name = "hot-standby settings"
    old_values, new_values = facts.StandbySettings.parse(old), facts.StandbySettings.parse(new)
    if old_values is None or new_values is None:
        return Check(name, "both", WARN, "not read (a cluster does not answer)")
    low = facts.too_low(old_values, new_values)
    if low:
        return Check(
            name,
            "new",
            WARN,
            "; ".join(f"{key} is {theirs} on new, {ours} on old" for key, (ours, theirs) in low.items())
            + ": phase 1 raises them on new",
        )
    return Check(name, "new", PASS, "each is at least old's value")


def mastodon_login(tunnel: Output, login: Output) -> Check:
    """After phase 1: new's Mastodon can log into old's database through the tunnel, as it will in phase 2."""
    name = "Mastodon's database login"
    if not facts.UnitProcess.parse(tunnel).pid:
        return Check(name, "new", PASS, "checked once phase 1 has set up the tunnel")
    if login.ok:
        return Check(name, "new", PASS, "new's Mastodon logs into old's database through the tunnel")
    return Check(
        name,
        "new",
        WARN,
        f"new's Mastodon cannot log into old's database through the tunnel "
        f"({login.why()}): phase 1 sets that up; run it again",
    )


def tunnel_port(
    cfg: Settings, listeners: Output, tunnel: Output, port: int | None = None, setting: str = "TUNNEL_PORT"
) -> Check:
    """A tunnel's port on new (TUNNEL_PORT by default) must be free, or held by its unit's own ssh."""
    name, port = "tunnel port", port or cfg.tunnel_port
    if not listeners.ok:
        return Check(name, "new", FAIL, f"could not list listeners: {listeners.why()}")
    found = facts.Listeners.parse(listeners)
    if not found:
        return Check(name, "new", PASS, f"{port} is free")
    ours = facts.UnitProcess.parse(tunnel)
    if ours.pid and all(x.pid == ours.pid or (not x.pid and x.uid == ours.uid) for x in found):
        return Check(name, "new", PASS, f"{port} is held by the migration tunnel")
    holders = ", ".join(f"{x.process} (pid {x.pid})" if x.pid else f"a process of uid {x.uid}" for x in found)
    return Check(name, "new", FAIL, f"{port} is taken by {holders}; stop it or change {setting}")


def database_front(values: dict[str, str], address: tuple[str, int], front: Output) -> Check:
    """Names what old's Mastodon connects to; PgBouncer is kept for old and not used by new until the
    failover: new's Mastodon reaches PostgreSQL itself through the tunnel, which carries replication too."""
    name, (host, port) = "Mastodon's database connection", address
    where = f"{host}:{port}" if not host.startswith("/") else f"the socket in {host} (port {port})"
    found = facts.DatabaseFront.parse(front)
    if not found.pgbouncer:
        return Check(
            name, "old", PASS, f"old's Mastodon connects to {found.program or 'PostgreSQL'} at {where}"
        )
    detail = (
        f"old's Mastodon goes through PgBouncer at {where} ({found.config}, pool_mode={found.pool_mode}); "
        "it stays in old's path. New's Mastodon reaches old's PostgreSQL itself through the tunnel until "
        "the failover, then new's own PostgreSQL"
    )
    prepared = values.get("PREPARED_STATEMENTS", "true").strip().lower() != "false"
    if found.pool_mode == "transaction" and prepared:
        return Check(
            name,
            "old",
            WARN,
            detail + "; PREPARED_STATEMENTS is not false, which Mastodon requires behind transaction "
            "pooling: set PREPARED_STATEMENTS=false in old's .env.production",
        )
    return Check(name, "old", PASS, detail)


def redis_servers(
    sentinels: list[str], targets: dict, old: dict[str, Output], new: dict[str, Output]
) -> Check:
    """Each Redis of Mastodon's settings answers on old, and on new another server answers (new's own): a
    Redis both reach would hold one set of queues for two Sidekiqs. Sentinel is not supported."""
    name = "Redis"
    if sentinels:
        return Check(
            name,
            "old",
            FAIL,
            f"old's Mastodon uses Redis Sentinel ({', '.join(sentinels)}), which this tool does not support: "
            "move Redis by hand, or point Mastodon at the master with REDIS_URL first",
        )
    notes = []
    for use, target in targets.items():
        on_old, on_new = facts.RedisServer.parse(old[use]), facts.RedisServer.parse(new[use])
        if on_old.problem:
            return Check(name, "old", FAIL, f"old's {use} Redis ({target}) did not answer: {on_old.problem}")
        if on_new.run_id == on_old.run_id:
            return Check(
                name,
                "both",
                FAIL,
                f"old and new reach the same {use} Redis ({target.server}): this tool moves jobs from old's "
                "own Redis to new's; a shared Redis is not supported",
            )
        if on_new.problem and not on_new.no_password:
            return Check(
                name,
                "new",
                FAIL,
                f"new's {use} Redis at {target.server} does not take the settings of old's .env.production "
                f"({on_new.problem}): install redis-server on new, with old's user and password if any",
            )
        notes.append(f"{use}: {target}")
        if on_new.no_password:
            notes.append(f"new's Redis at {target.server} has no password yet: phase 2 gives it old's")
    return Check(name, "both", PASS, "; ".join(dict.fromkeys(notes)) + "; each host has its own")


def cluster_found(cfg: Settings, host: str, out: Output) -> Check:
    """pg_lsclusters names one cluster on PG_PORT: the paths the tool uses (unit, data, binaries) are its."""
    name = "PostgreSQL cluster"
    try:
        place = facts.ClusterOnPort(cfg.pg_port).parse(out)
    except Unparseable as error:
        return Check(name, host, FAIL, str(error))
    return Check(name, host, PASS, f"{place.version}/{place.name} in {place.data_dir} ({place.unit})")
