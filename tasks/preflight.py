"""preflight: read-only checks on both hosts before anything changes."""
from __future__ import annotations


from invoke.exceptions import Exit

from . import checks, mastodon, postgres, system, tunnel
from .command import HostUnreachable, Remote, Session, note
from .executor import two_host_task
from .facts import Output


def _raw(out: Output) -> Output:
    return out


def _gather(remote: Remote, commands: dict) -> dict[str, Output] | None:
    """Run each read-only command; None when the host cannot be reached."""
    try:
        return {name: remote.fact(cmd, _raw) for name, cmd in commands.items()}
    except HostUnreachable as error:
        return {"unreachable": Output(255, stderr=str(error))}


def gather(s: Session) -> dict[str, dict[str, Output]]:
    cfg = s.settings
    common = {"sudo": system.sudo_works(), "version": postgres.server_version(cfg), "glibc": system.glibc(),
              "identity": postgres.cluster_identity(cfg), "mastodon": mastodon.code_revision(cfg)}
    old = dict(common, capacity=postgres.replication_capacity(cfg), size=postgres.database_size(cfg))
    parent = cfg.pg_data_dir.rsplit("/", 1)[0] or "/"
    new = dict(common, entries=postgres.data_dir_entries(cfg), df=system.free_disk(parent),
               listeners=system.listeners(cfg.tunnel_port), tunnel=system.unit_process(tunnel.UNIT))
    return {"old": _gather(s.old, old), "new": _gather(s.new, new)}


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
    ]


def table(results: list[checks.Check]) -> str:
    rows = [("CHECK", "HOST", "RESULT", "DETAIL")] + [(r.name, r.host, r.status, r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3] for row in rows)


def run_preflight(s: Session) -> list[checks.Check]:
    """Gather and judge; in a plan, only list the checks."""
    s.step("preflight", "read-only checks on both hosts before anything changes")
    found = gather(s)
    if s.planning:
        note(s.mode, "each check above must pass before the migration starts (fab -H old,new preflight)")
        return []
    results = judge(s.settings, found)
    print(table(results), flush=True)
    failed = [r for r in results if r.status == checks.FAIL]
    if failed:
        raise Exit(f"preflight: {len(failed)} check(s) failed; fix them and run preflight again", code=1)
    return results


@two_host_task
def preflight(s: Session):
    """Read-only checks on both hosts (ssh, sudo, PostgreSQL, disk, Mastodon version, tunnel port)."""
    run_preflight(s)
