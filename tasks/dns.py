"""DNS: move the domain's records from old's address to new's (Cloudflare, RFC 2136 or manual)."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task


@two_host_task(help={"plan": "show current and target values only",
                     "lower_ttl": "lower the TTL ahead of the cutover",
                     "verify": "ask every authoritative server",
                     "restore_ttl": "put the original TTL back",
                     "force": "switch before the old TTL has expired"})
def dns(s: Session, plan=False, lower_ttl=False, verify=False, restore_ttl=False, force=False):
    """Switch the domain's DNS records from old to new (compare-and-swap), or plan/verify it."""
    raise not_implemented(7)
