"""preflight: read-only checks on both hosts before anything changes."""

from __future__ import annotations

from invoke.exceptions import Exit

from . import access, checks, mastodon, tunnel
from .command import HostUnreachable, Remote, Session
from .executor import two_host_task
from .facts import (
    ClusterIdentity,
    DatabaseSize,
    DataDirEntries,
    Fact,
    FreeDisk,
    Glibc,
    Listeners,
    MastodonRevision,
    Output,
    Raw,
    ReplicationCapacity,
    ServerVersion,
    StandbySettings,
    SudoWorks,
    UnitProcess,
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
        "mastodon": MastodonRevision(cfg.mastodon_dir, cfg.mastodon_user),
    }
    common["standby"] = StandbySettings(cfg.pg_port)
    old = dict(common, capacity=ReplicationCapacity(cfg.pg_port), size=DatabaseSize(cfg.pg_port))
    old_found = _gather(s.old, old)
    values = None if "unreachable" in old_found else mastodon.env_values(mastodon.read_env(s, s.old))
    parent = cfg.pg_data_dir.rsplit("/", 1)[0] or "/"
    new = dict(
        common,
        entries=DataDirEntries(cfg.pg_data_dir),
        df=FreeDisk(parent),
        listeners=Listeners(cfg.tunnel_port),
        tunnel=UnitProcess(tunnel.UNIT),
        login=access.login_through_tunnel(s, values),
    )
    return {"old": old_found, "new": _gather(s.new, new)}


def judge(cfg, found: dict[str, dict[str, Output]]) -> list[checks.Check]:
    """Every preflight check from the gathered outputs (pure)."""
    results = []
    for host in ("old", "new"):
        if "unreachable" in found[host]:
            results.append(checks.Check("ssh and sudo", host, checks.FAIL, found[host]["unreachable"].stderr))
        else:
            results.append(checks.sudo(host, found[host]["sudo"]))
    if any(r.status == checks.FAIL for r in results):
        return results
    old, new = found["old"], found["new"]
    return results + [
        checks.pg_versions(cfg, old["version"], new["version"]),
        checks.primary_ready(cfg, old["capacity"]),
        checks.glibc(old["glibc"], new["glibc"]),
        checks.new_cluster(cfg, new["identity"], new["entries"], old["identity"]),
        checks.disk_space(old["size"], new["df"]),
        checks.mastodon_versions(cfg, old["mastodon"], new["mastodon"]),
        checks.tunnel_port(cfg, new["listeners"], new["tunnel"]),
        checks.standby_settings(old["standby"], new["standby"]),
        checks.mastodon_login(new["tunnel"], new["login"]),
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
    """Read-only checks on both hosts (ssh, sudo, PostgreSQL, disk, Mastodon version, tunnel port)."""
    run_preflight(s)
