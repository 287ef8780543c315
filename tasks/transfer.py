"""Copying from old to new: nginx site, certificates, .env.production and local media."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task


@two_host_task(help={"force": "overwrite files on new that differ and were not written by this tool"})
def copy_config(s: Session, force=False):
    """Copy nginx, certificates and .env.production (pointed at the tunnel) from old to new."""
    raise not_implemented(5)
