"""The migration's phases, each composed from subsystem steps: `fab -H old,new phaseN-...`."""
from __future__ import annotations

from . import mastodon, nginx, postgres, preflight, transfer, tunnel
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


def require_replication(s: Session, why: str) -> None:
    report = postgres.replication_report(s)
    if report is not None and not report["healthy"]:
        raise StepFailed(f"{why}: replication from old to new is not healthy; run "
                         "fab -H old,new replication-status, or phase1-replicate first. Nothing was changed.")


def proxy(s: Session, force: bool = False, smoke_post: bool = False) -> None:
    """Phase 2 as steps: new is prepared and proven before old's nginx sends it any traffic."""
    require_replication(s, "phase 2 needs new's replica")
    env_changed = transfer.copy_configuration(s, force=force)
    transfer.sync_media(s, "first pass, while old still takes uploads")
    mastodon.precompile_assets(s, s.new)
    mastodon.start_services(s, s.new, restart=env_changed)
    mastodon.build_feeds(s, s.new, transfer.read_env(s, s.new))
    mastodon.smoke_test(s, post=smoke_post)
    if mastodon.feeds_present(s, s.new, transfer.read_env(s, s.new)) is False:
        raise StepFailed("new's Redis holds no home feeds; the proxy was not switched")
    require_replication(s, "the proxy was not switched")
    nginx.enable_proxy(s)
    nginx.probe_through_old(s)
    transfer.sync_media(s, "final pass: uploads now land on new, so old's media is complete")


@two_host_task(help={"force": "replace files on new that this tool did not write (they are kept as backups)",
                     "smoke_post": "also post a test status through new (SMOKE_TEST_TOKEN_FILE's account)"})
def phase2_proxy(s: Session, force=False, smoke_post=False):
    """Phase 2: prepare new (config, media, assets, feeds), smoke-test it, then proxy old to new."""
    proxy(s, force=force, smoke_post=smoke_post)


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
