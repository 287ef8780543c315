"""Sidekiq: drain old's workers without losing a job, and carry its durable state to new's Redis."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task


@two_host_task(help={"timeout": "seconds to wait for the queues to empty"})
def drain(s: Session, timeout=300):
    """Stop old's Mastodon after draining Sidekiq; move schedule/retry/dead jobs to new's Redis."""
    raise not_implemented(6)
