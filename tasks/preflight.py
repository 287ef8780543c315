"""preflight: read-only checks on both hosts before anything changes."""

from __future__ import annotations

from invoke.exceptions import Exit

from . import access, checks, mastodon, mastodon_env, redis_cli, redis_server, tunnel
from .command import HostUnreachable, Remote, Session
from .executor import two_host_task
from .facts import (
    ClusterIdentity,
    ClusterOnPort,
    DatabaseFront,
    DatabaseSize,
    DataDirEntries,
    Fact,
    FreeDisk,
    Glibc,
    Listeners,
    MastodonRevision,
    Output,
    Raw,
    RedisServer,
    ReplicationCapacity,
    ServerVersion,
    StandbySettings,
    SudoWorks,
    UnitProcess,
    Unparseable,
)


def _gather(remote: Remote, questions: dict[str, Fact]) -> dict[str, Output]:
    """Each question's answer as it came (judged later); only "unreachable" when the host is out of reach."""
    try:
        return {name: remote.fact(Raw(fact)) for name, fact in questions.items()}
    except HostUnreachable as error:
        return {"unreachable": Output(255, stderr=str(error))}


def gather(s: Session) -> dict[str, dict[str, Output]]:
    cfg = s.settings
    common = {
        "sudo": SudoWorks(),
        "version": ServerVersion(cfg.pg_port),
        "glibc": Glibc(),
        "identity": ClusterIdentity(cfg.pg_port),
        "cluster": ClusterOnPort(cfg.pg_port),
        "mastodon": MastodonRevision(cfg.mastodon_dir, cfg.mastodon_user),
    }
    common["standby"] = StandbySettings(cfg.pg_port)
    old = dict(common, capacity=ReplicationCapacity(cfg.pg_port), size=DatabaseSize(cfg.pg_port))
    old_found = _gather(s.old, old)
    values = None if "unreachable" in old_found else mastodon.env_values(mastodon.read_env(s, s.old))
    redis = {use: RedisServer(target) for use, target in redis_server.targets(values).items()}
    if values is not None or s.planning:
        port = mastodon_env.database_address(values)[1] if values is not None else "<DB_PORT>"
        old_found |= _gather(s.old, dict(redis, front=DatabaseFront(port)))
    new_found = _gather(s.new, common)
    data_dir = _data_dir(new_found)
    new = dict(
        entries=DataDirEntries(data_dir),
        df=FreeDisk(data_dir.rsplit("/", 1)[0] or "/" if data_dir.startswith("/") else "<its parent>"),
        listeners=Listeners(cfg.tunnel_port),
        tunnel=UnitProcess(tunnel.UNIT),
        login=access.login_through_tunnel(s, values),
        **redis,
    )
    return {"old": old_found, "new": new_found | _gather(s.new, new), "values": values or {}}


def _data_dir(found: dict[str, Output]) -> str:
    """new's data directory as pg_lsclusters names it; Debian's usual one when that did not answer (the
    cluster check then says why)."""
    out = found.get("cluster")
    if not isinstance(out, Output):  # a plan
        return "<data_directory>"
    try:
        return ClusterOnPort(0).parse(out).data_dir
    except Unparseable:
        return "/var/lib/postgresql"


def judge(cfg, found: dict) -> list[checks.Check]:
    """Every preflight check from the gathered outputs (pure)."""
    results = []
    for host in ("old", "new"):
        if "unreachable" in found[host]:
            results.append(checks.Check("ssh and sudo", host, checks.FAIL, found[host]["unreachable"].stderr))
        else:
            results.append(checks.sudo(host, found[host]["sudo"]))
    if any(r.status == checks.FAIL for r in results):
        return results
    old, new, values = found["old"], found["new"], found["values"]
    return results + [
        checks.pg_versions(cfg, old["version"], new["version"]),
        *(checks.cluster_found(cfg, host, found[host]["cluster"]) for host in ("old", "new")),
        checks.primary_ready(cfg, old["capacity"]),
        checks.glibc(old["glibc"], new["glibc"]),
        checks.new_cluster(cfg, new["identity"], new["entries"], old["identity"], _data_dir(new)),
        checks.disk_space(old["size"], new["df"]),
        checks.mastodon_versions(cfg, old["mastodon"], new["mastodon"]),
        checks.tunnel_port(cfg, new["listeners"], new["tunnel"]),
        checks.standby_settings(old["standby"], new["standby"]),
        checks.mastodon_login(new["tunnel"], new["login"]),
        checks.database_front(values, mastodon_env.database_address(values), old["front"]),
        checks.redis_servers(redis_cli.sentinel_keys(values), redis_server.targets(values), old, new),
    ]


def table(results: list[checks.Check]) -> str:
    rows = [("CHECK", "HOST", "RESULT", "DETAIL")] + [(r.name, r.host, r.status, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3] for row in rows
    )


def run_preflight(s: Session) -> list[checks.Check]:
    """Gather and judge; in a plan, only list the checks."""
    with s.step("preflight", "read-only checks on both hosts before anything changes"):
        found = gather(s)
        if s.planning:
            s.note("each check above must pass before the migration starts (fab -H old,new preflight)")
            return []
        results = judge(s.settings, found)
        s.show(table(results))
        failed = [r for r in results if r.status == checks.FAIL]
        if failed:
            raise Exit(f"preflight: {len(failed)} check(s) failed; fix them and run preflight again", code=1)
        return results


@two_host_task
def preflight(s: Session):
    """Read-only checks on both hosts (ssh, sudo, PostgreSQL, disk, Mastodon, Redis, tunnel port)."""
    run_preflight(s)
