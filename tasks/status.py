"""status: where this migration stands, read from the hosts."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task


@two_host_task(help={"json": "print JSON instead of a table"})
def status(s: Session, json=False):
    """Show each phase as done, in progress or not started, with evidence, and the next command."""
    raise not_implemented(8)
