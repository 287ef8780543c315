"""The migration's phases, each composed from subsystem steps: `fab -H old,new phaseN-...`."""
from __future__ import annotations

from . import postgres, preflight, tunnel
from .command import Session, StepFailed
from .executor import not_implemented, two_host_task


def replicate(s: Session, max_rate: str = "") -> None:
    """Phase 1 as steps; each checks the real state first, so a re-run continues where it stopped."""
    preflight.run_preflight(s)
    postgres.ensure_replication_role(s)
    postgres.ensure_replication_hba(s)
    postgres.ensure_slot_wal_cap(s)
    tunnel.ensure_tunnel(s)
    postgres.run_basebackup(s, max_rate=max_rate)
    report = postgres.show_replication_status(s)
    if report is not None and not report["healthy"]:
        raise StepFailed("phase 1 ended but replication is not healthy (see above); run it again")


@two_host_task(help={"max_rate": "throttle the base backup, e.g. 50M, so the tunnel leaves room for the live site"})
def phase1_replicate(s: Session, max_rate=""):
    """Phase 1: preflight, replication role, tunnel, base backup; new becomes a streaming replica."""
    replicate(s, max_rate=max_rate)


@two_host_task
def phase2_proxy(s: Session):
    """Phase 2: prepare new (config, media, assets, feeds), smoke-test it, then proxy old to new."""
    raise not_implemented(5)


@two_host_task
def phase3_failover(s: Session):
    """Phase 3: drain old's Sidekiq, fence old, promote new with zero writes lost, restart Mastodon."""
    raise not_implemented(6)


@two_host_task
def phase4_dns(s: Session):
    """Phase 4: move DNS to new, verify at the authoritative servers, say when old may retire."""
    raise not_implemented(7)


@two_host_task(help={"apply": "act; without it only the plan is shown"})
def cleanup(s: Session, apply=False):
    """After DNS has settled: remove the tunnel, keys, pg_hba blocks, role and slot."""
    raise not_implemented(7)
