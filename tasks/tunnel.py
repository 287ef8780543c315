"""The ssh tunnel from new to old that carries replication and, until failover, Mastodon's queries."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task

UNIT = "mastodon-migration-tunnel"


@two_host_task
def tunnel(s: Session):
    """Install a persistent, locked-down ssh tunnel on new to old's PostgreSQL (systemd unit)."""
    raise not_implemented(4)
