"""nginx on old: the proxy that sends every request to new, validated before it is loaded, with undo."""
from __future__ import annotations

import difflib
import secrets
import time

from . import system
from .command import Cmd, CommandFailed, Remote, Session, StepFailed, known
from .executor import one_host_task
from .facts import Output
from .templates import render

STATE_DIR = "/var/lib/mastodon-migration/nginx"
MARK_LINE = "# Written by mastodon-migration (render-nginx-proxy)"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _lines(out: Output) -> list[str]:
    return [x for x in out.stdout.split() if x] if out.ok else []


def _text(out: Output) -> str | None:
    return out.stdout if out.ok else None


def find_site(remote: Remote, domain: str) -> str:
    """The one enabled nginx file that serves the domain (its real path)."""
    found = remote.fact(Cmd(
        f'grep -RlE "server_name[^;]*[[:space:]]{domain}([[:space:];]|$)" /etc/nginx/sites-enabled /etc/nginx/conf.d '
        f'2>/dev/null | xargs -r readlink -f | sort -u'), _lines, planned=[f"/etc/nginx/sites-available/{domain}"])
    if len(found) != 1:
        where = ", ".join(found) if found else "no file"
        raise StepFailed(f"on {remote.alias}: expected one enabled nginx site with server_name {domain}, found {where}")
    return found[0]


def require_proxy(s: Session) -> None:
    """Stopping old's Mastodon is downtime unless old's nginx already sends everything to new."""
    site = find_site(s.old, s.settings.domain)
    text = s.old.fact(system.read_file(site), _text)
    if known(text) and not (text or "").startswith(MARK_LINE):
        raise StepFailed("old's nginx does not proxy to new yet (run phase2-proxy first): stopping old's "
                         "Mastodon now would be downtime. Nothing was changed.")


def backups(site: str) -> tuple[str, str]:
    """(the site as it was before the proxy, the version replaced last)."""
    name = site.rsplit("/", 1)[-1]
    return f"{STATE_DIR}/{name}.before-proxy", f"{STATE_DIR}/{name}.previous"


def proxy_text(s: Session, site: str) -> str:
    cfg = s.settings
    return render("nginx-proxy.conf.j2", domain=cfg.domain, new_address=cfg.new_address, ca_bundle=CA_BUNDLE,
                  backup=backups(site)[0])


def install_validated(remote: Remote, site: str, text: str | None, source: str | None = None) -> None:
    """Replace the site (with `text`, or a copy of `source`), check the whole configuration with
    nginx -t, and reload only if it passes; otherwise put the previous file back and say why."""
    previous = backups(site)[1]
    remote.run(Cmd(f"install -D -m 0644 {site} {previous}"))
    if source:
        remote.run(Cmd(f"install -m 0644 {source} {site}"))
    else:
        remote.write_file(site, text)
    try:
        remote.run(Cmd("nginx -t"))
    except CommandFailed as error:
        remote.run(Cmd(f"install -m 0644 {previous} {site}"))
        raise StepFailed(f"nginx -t rejected the new site ({error.out.why()}). The previous site was put back "
                         f"and nginx was not reloaded: {remote.alias} keeps serving as before.") from None
    remote.run(system.systemctl("reload", "nginx"))


def enable_proxy(s: Session, check: bool = False) -> None:
    cfg = s.settings
    s.step("proxy old to new", f"old's nginx sends every request for {cfg.domain} to new, WebSockets included",
           undo="fab -H old render-nginx-proxy --undo")
    site = find_site(s.old, cfg.domain)
    text = proxy_text(s, site)
    current = s.old.fact(system.read_file(site), _text, planned="")
    if known(current) and current == text:
        print(f"  {site} already proxies to new", flush=True)
        return
    if check:
        print("".join(difflib.unified_diff((current or "").splitlines(True), text.splitlines(True),
                                           f"{site} (now)", f"{site} (proxy)")) if known(current) else text)
        return
    if not (known(current) and current.startswith(MARK_LINE)):
        s.old.run(Cmd(f"install -D -m 0644 {site} {backups(site)[0]}"))
    install_validated(s.old, site, text)


def disable_proxy(s: Session) -> None:
    s.step("undo the proxy", "old's nginx serves the domain itself again, from the site kept before the proxy")
    site = find_site(s.old, s.settings.domain)
    before = backups(site)[0]
    if s.old.fact(Cmd(f"test -f {before}"), lambda out: out.ok, planned=True) is False:
        raise StepFailed(f"nothing to undo: {before} does not exist on {s.old.alias}")
    current = s.old.fact(system.read_file(site), _text)
    if known(current) and not current.startswith(MARK_LINE):
        print(f"  {site} does not proxy: nothing to undo", flush=True)
        return
    install_validated(s.old, site, None, source=before)


def probe_through_old(s: Session, timeout: float = 20) -> None:
    """A request to old's public endpoint must be answered by new (it shows in new's access log).
    A reload lets old workers finish with the previous configuration, so the probe is repeated."""
    cfg = s.settings
    s.step("verify the proxy", "a request through old's public endpoint reaches new")
    deadline = time.monotonic() + timeout
    while True:
        probe = secrets.token_hex(8)
        answered = s.old.fact(Cmd(f"curl -fsS -m 10 --resolve {cfg.domain}:443:127.0.0.1 "
                                  f"https://{cfg.domain}/health?mig-probe={probe}", user=None), lambda out: out.ok)
        seen = s.new.fact(Cmd(f"grep -c mig-probe={probe} /var/log/nginx/access.log"),
                          lambda out: out.stdout.strip() not in ("", "0"))
        if s.planning or (answered and seen):
            return
        if time.monotonic() > deadline:
            raise StepFailed(f"https://{cfg.domain}/health through old's nginx was "
                             + ("answered, but not by new" if answered else "not answered")
                             + f" within {timeout:.0f} s; undo with: fab -H old render-nginx-proxy --undo")
        time.sleep(0.5)


@one_host_task("old", help={"undo": "put the previous site back and reload",
                            "check": "show the diff and change nothing"})
def render_nginx_proxy(s: Session, undo=False, check=False):
    """Make old's nginx proxy the domain to new (validated with nginx -t; the old site is kept)."""
    if undo:
        disable_proxy(s)
    else:
        enable_proxy(s, check=check)
