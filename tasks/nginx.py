"""nginx on old: the proxy that sends every request to new, with validation and undo."""
from __future__ import annotations

from .command import Session
from .executor import not_implemented, one_host_task


@one_host_task("old", help={"undo": "put the previous site back and reload",
                            "check": "show the diff and change nothing"})
def render_nginx_proxy(s: Session, undo=False, check=False):
    """Make old's nginx proxy the domain to new (validated with nginx -t; the old site is kept)."""
    raise not_implemented(5)
