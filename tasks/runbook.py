"""runbook: the whole migration as copy-paste Markdown, from the same steps the phases run."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, two_host_task


@two_host_task(help={"phase": "render only this phase (1-4)"})
def runbook(s: Session, phase=0):
    """Render the migration as a Markdown runbook (connects to nothing): fab -H old,new runbook > RUNBOOK.md"""
    raise not_implemented(8)
