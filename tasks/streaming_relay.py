"""The streaming relay: the WebSockets that users opened to old's streaming server keep hearing Mastodon
after the proxy switch, so no user sees a reconnect.

Old's nginx, reloaded to proxy, leaves the connections it already holds in its old workers, each one still
joined to old's streaming server. That server hears only old's Redis, while from the switch on new's
Mastodon publishes on new's. The relay (templates/streaming-relay.py, a unit on new) closes the gap:
- every message that new's Mastodon publishes on a streaming channel (`<ns>:timeline:*` in new's base
  Redis) is published on old's base Redis under the same name;
- old's presence keys (`<ns>:subscribed:*`, one per timeline that old's streaming server listens to) are
  copied into new's Redis with their time to live, since new's Sidekiq pushes a home-timeline update
  only for a timeline with that key.
It reaches old's Redis through a tunnel of its own (tunnel.Forward) that old allows to that one port,
with the credentials of old's .env.production (new's Redis has them too: redis_server) in a 0600 file.
Its unit says READY only once a probe published on new's Redis has reached old's.

Old's streaming server, the relay and its tunnel live as long as old's nginx: `cleanup --apply
--stop-old-nginx` stops them together, and the last clients reconnect, by then to new through DNS. Where
old's base Redis is not on old's loopback over TCP (a socket, TLS, another host), there is no relay:
phase 2 stops old's streaming server at the switch and its clients reconnect through the proxy.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from . import redis_cli, system, tunnel
from .command import Cmd, Session, known
from .core import Secret
from .facts import FileText, PathExists, SecretFileText, UnitState, stopped
from .mastodon import env_values, read_env
from .mastodon_env import LOCAL_HOSTS
from .templates import render

UNIT = "mastodon-migration-streaming-relay"
UNIT_FILE = system.unit_file(UNIT)
SCRIPT = "/usr/local/lib/mastodon-migration/streaming-relay.py"
SETTINGS_FILE = "/etc/mastodon-migration/streaming-relay.env"
RUNNING = UnitState(UNIT)
CLEANUP = "fab -H old,new cleanup --apply --stop-old-nginx"
REDIS_TUNNEL = tunnel.Tunnel("mastodon-migration-redis-tunnel", "Redis tunnel")


def redis_forward(s: Session, old_redis: redis_cli.Target) -> tunnel.Forward:
    return tunnel.Forward(
        REDIS_TUNNEL.unit,
        REDIS_TUNNEL.name,
        "old's Redis",
        s.settings.redis_tunnel_port,
        old_redis.port,
        "REDIS_TUNNEL_PORT",
        removed_by=CLEANUP,
    )


def unsupported(target: redis_cli.Target) -> str | None:
    """Why old's base Redis cannot be relayed to (None: it can): the relay's tunnel reaches a TCP port
    on old's loopback."""
    if target.socket:
        return f"old's Redis is on a socket ({target.host})"
    if target.tls:
        return "old's Redis is reached over TLS"
    if target is not redis_cli.PLANNED and target.host not in LOCAL_HOSTS:
        return f"old's Redis is on another host ({target.host})"
    return None


def _url(target: redis_cli.Target, host: str, port: int | str) -> str:
    login = f"{quote(target.user, safe='')}:{quote(target.password, safe='')}@" if target.password else ""
    return f"redis://{login}{host}:{port}/{target.db}"


def settings_text(s: Session, old_redis: redis_cli.Target) -> str:
    """The relay's settings: new's base Redis is old's settings on new's loopback (new runs with a copy of
    old's .env.production), old's is the same through the relay's tunnel."""
    host = "127.0.0.1" if old_redis.host in LOCAL_HOSTS else old_redis.host
    return (
        f"NEW_REDIS_URL={_url(old_redis, host, old_redis.port)}\n"
        f"OLD_REDIS_URL={_url(old_redis, '127.0.0.1', s.settings.redis_tunnel_port)}\n"
        f"REDIS_PREFIX={old_redis.prefix}\n"
    )


def unit_text(forward: tunnel.Forward) -> str:
    return render(
        "streaming-relay.service.j2", tunnel_unit=forward.unit, settings_file=SETTINGS_FILE, script=SCRIPT
    )


def start_relay(s: Session) -> bool:
    """Phase 2, before the proxy switch: the relay runs and has carried a probe. False when old's Redis
    cannot be relayed to (then old's streaming clients reconnect at the switch)."""
    old_redis = redis_cli.base(env_values(read_env(s, s.old)))
    why_not = unsupported(old_redis)
    if why_not:
        s.say(f"no streaming relay: {why_not}; old's streaming clients will reconnect to new at the switch")
        return False
    forward = redis_forward(s, old_redis)
    with s.step(
        "streaming relay",
        "old's streaming server keeps its WebSockets and hears what new's Mastodon publishes, through a "
        f"relay on new and a tunnel of its own to old's Redis (new's 127.0.0.1:{forward.local_port})",
        undo=f"ssh new -- sudo systemctl disable --now {UNIT} {forward.unit}",
    ):
        tunnel.ensure_forward(s, forward)
        _install(s, forward, old_redis)
    return True


def _install(s: Session, forward: tunnel.Forward, old_redis: redis_cli.Target) -> None:
    with s.step(
        "relay unit",
        f"{UNIT} on new: new's streaming channels published on old's Redis, old's presence keys "
        "copied to new's",
        undo=f"ssh new -- sudo systemctl disable --now {UNIT}",
    ):
        settings = settings_text(s, old_redis)
        secret = Secret(settings, "the relay's Redis URLs, with old's Redis password")
        files = (
            (SCRIPT, render("streaming-relay.py"), "0755", (), FileText(SCRIPT)),
            (SETTINGS_FILE, settings, "0600", (secret,), SecretFileText(SETTINGS_FILE)),
            (UNIT_FILE, unit_text(forward), "0644", (), FileText(UNIT_FILE)),
        )
        changed = False
        for path, text, mode, secrets, read in files:
            if s.new.fact(read, then="when it prints the file below, it need not be written") != text:
                s.new.write_file(path, text, mode=mode, secrets=secrets)
                changed = True
        state = s.new.fact(RUNNING, then="`active`: the relay runs; otherwise it is started below")
        if changed:
            s.new.run(system.systemctl("daemon-reload"))
            s.new.run(system.systemctl("enable", UNIT))
        if changed or state != "active":
            # Type=notify: this returns once the relay has carried a probe from new's Redis to old's
            system.control_unit(s.new, "restart", UNIT)


def relaying(s: Session) -> bool:
    """Whether the relay runs on new (True in a plan: the plan shows the relay's path)."""
    state = s.new.fact(RUNNING, then="`active`: the relay feeds old's streaming server, which keeps running")
    return not known(state) or state == "active"


def retire(s: Session) -> None:
    """Cleanup with --stop-old-nginx: old's streaming server stops (its last clients reconnect), then the
    relay and its tunnel go."""
    cfg = s.settings
    with s.step(
        "retire old's streaming server and the relay",
        "old's streaming server stops and its last clients reconnect (to new, by DNS); the relay, its "
        "settings and its tunnel go",
        undo="not needed: old no longer serves",
    ):
        unit = cfg.mastodon_streaming_service
        if not stopped(s.old.fact(UnitState(unit), then="anything but `inactive` or `failed`: stop it")):
            s.old.run(system.systemctl("stop", unit))
        system.remove_unit(s.new, UNIT)
        system.remove_files(s.new, SCRIPT, SETTINGS_FILE)
        folders = " ".join(os.path.dirname(path) for path in (SCRIPT, SETTINGS_FILE))
        s.new.run(
            Cmd(
                f'for d in {folders}; do if [ -d "$d" ]; then rmdir --ignore-fail-on-non-empty "$d"; fi; done'
            )
        )
        tunnel.remove_forward(s, REDIS_TUNNEL, "the relay has stopped")


def keep(s: Session) -> None:
    """Cleanup without --stop-old-nginx: what stays, and why."""
    if s.new.fact(PathExists(UNIT_FILE)) is True:
        s.say(
            f"kept: old's streaming server and the relay on new, for the WebSockets that old's nginx still "
            f"holds; once DNS has settled, `{CLEANUP}` retires them with old's nginx"
        )
