"""Entry point for `fab`: a flat namespace of every task (names with dashes). See README.md."""

from invoke import Collection

from tasks import mastodon, nginx, phases, postgres, preflight, runbook, status, transfer, tunnel
from tasks.dns import steps as dns

ns = Collection(
    preflight.preflight,
    tunnel.tunnel,
    postgres.replication_role,
    postgres.basebackup,
    postgres.replication_status,
    transfer.copy_config,
    mastodon.precompile,
    mastodon.feeds_build,
    mastodon.restart,
    nginx.render_nginx_proxy,
    phases.drain,
    phases.promote,
    dns.dns,
    status.status,
    runbook.runbook,
    phases.cleanup,
    phases.phase1_replicate,
    phases.phase2_proxy,
    phases.phase3_failover,
    phases.phase4_dns,
)
