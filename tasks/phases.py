"""The migration's phases, each composed from subsystem steps: `fab -H old,new phaseN-...`."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task


@two_host_task
def phase1_replicate(s: Session):
    """Phase 1: preflight, replication role, tunnel, base backup; new becomes a streaming replica."""
    raise not_implemented(4)


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
