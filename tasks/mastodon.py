"""Mastodon on a host: its code version, assets, services and home feeds."""
from __future__ import annotations

from .command import Cmd, Session
from .executor import not_implemented, one_host_task
from .settings import Settings


def code_revision(cfg: Settings) -> Cmd:
    """The git revision of the checkout, or a checksum of the version file when it is no git checkout."""
    return Cmd(f"cd {cfg.mastodon_dir} && {{ git rev-parse HEAD 2>/dev/null || sha256sum lib/mastodon/version.rb; }}",
               user=cfg.mastodon_user)


@one_host_task("new")
def precompile(s: Session):
    """Precompile Mastodon's assets on new (RAILS_ENV=production bundle exec rails assets:precompile)."""
    raise not_implemented(5)


@one_host_task("new", help={"account": "rebuild one account's feed instead of all",
                            "concurrency": "accounts rebuilt in parallel"})
def feeds_build(s: Session, account=None, concurrency=5):
    """Rebuild home feeds from the database (tootctl feeds build): new's Redis starts empty."""
    raise not_implemented(5)


@one_host_task("new", "old", help={"services": "comma-separated subset: web,sidekiq,streaming",
                                   "start": "first start: start the units instead of reloading",
                                   "enable": "also enable the units at boot"})
def restart(s: Session, services="web,sidekiq,streaming", start=False, enable=False):
    """Reload Mastodon's web and restart sidekiq and streaming on one host, then wait for health."""
    raise not_implemented(5)
