"""nginx on old: the proxy that sends every request to new, validated before it is loaded, with undo."""

from __future__ import annotations

import difflib
import secrets
import shlex
from dataclasses import dataclass
from typing import ClassVar

from . import system
from .command import Cmd, CommandFailed, Remote, Session, StepFailed, known
from .executor import one_host_task
from .facts import CountLines, Fact, FileText, Output, PathExists, UnitState
from .templates import render

STATE_DIR = "/var/lib/mastodon-migration/nginx"
MARK_LINE = "# Written by mastodon-migration (render-nginx-proxy)"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ACCESS_LOG = "/var/log/nginx/access.log"


@dataclass(frozen=True)
class EnabledSites(Fact["list[str]"]):
    """The enabled nginx files (their real paths) whose server_name names the domain."""

    domain: str
    passes: ClassVar[str] = "prints exactly one file: the site that serves {domain}"

    def command(self) -> Cmd:
        return Cmd(
            f'grep -RlE "server_name[^;]*[[:space:]]{self.domain}([[:space:];]|$)" /etc/nginx/sites-enabled '
            "/etc/nginx/conf.d 2>/dev/null | xargs -r readlink -f | sort -u"
        )

    @staticmethod
    def parse(out: Output) -> list[str]:
        return [x for x in out.stdout.split() if x] if out.ok else []


@dataclass(frozen=True)
class ProxiesToNew(Fact["bool | None"]):
    """Phase 2's "is this done?": the site's first line is the mark of the proxy this tool writes
    (None: no such file)."""

    site: str
    passes: ClassVar[str] = "prints the site's first line: `" + MARK_LINE + "...` once old proxies to new"

    def command(self) -> Cmd:
        return Cmd(f"head -n 1 {shlex.quote(self.site)}")

    @staticmethod
    def parse(out: Output) -> bool | None:
        if not out.ok:
            return None
        return out.stdout.startswith(MARK_LINE)


@dataclass(frozen=True)
class Answers(Fact[bool]):
    """A request through old's own public endpoint (127.0.0.1 with the domain's name and certificate)."""

    domain: str
    path: str
    passes: ClassVar[str] = "prints `OK` (exit 0) when old's public endpoint answers {path}"

    def command(self) -> Cmd:
        return Cmd(
            f"curl -fsS -m 10 --resolve {self.domain}:443:127.0.0.1 https://{self.domain}{self.path}",
            user=None,
        )

    @staticmethod
    def parse(out: Output) -> bool:
        return out.ok


def find_site(remote: Remote, domain: str) -> str:
    """The one enabled nginx file that serves the domain (its real path)."""
    found = remote.fact(
        EnabledSites(domain),
        planned=[f"/etc/nginx/sites-available/{domain}"],
        then="its path is the site used below",
    )
    if len(found) != 1:
        where = ", ".join(found) if found else "no file"
        raise StepFailed(
            f"on {remote.alias}: expected one enabled nginx site with server_name {domain}, found {where}"
        )
    return found[0]


def require_proxy(s: Session) -> None:
    """Stopping old's Mastodon is downtime unless old's nginx already sends everything to new."""
    site = find_site(s.old, s.settings.domain)
    proxies = s.old.fact(ProxiesToNew(site), then="anything else: stop here and run phase2-proxy first")
    if known(proxies) and not proxies:
        raise StepFailed(
            "old's nginx does not proxy to new yet (run phase2-proxy first): stopping old's "
            "Mastodon now would be downtime. Nothing was changed."
        )


def backups(site: str) -> tuple[str, str]:
    """(the site as it was before the proxy, the version replaced last)."""
    name = site.rsplit("/", 1)[-1]
    return f"{STATE_DIR}/{name}.before-proxy", f"{STATE_DIR}/{name}.previous"


def proxy_text(s: Session, site: str) -> str:
    cfg = s.settings
    return render(
        "nginx-proxy.conf.j2",
        domain=cfg.domain,
        new_address=cfg.new_address,
        ca_bundle=CA_BUNDLE,
        backup=backups(site)[0],
    )


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
        raise StepFailed(
            f"nginx -t rejected the new site ({error.out.why()}). The previous site was put back "
            f"and nginx was not reloaded: {remote.alias} keeps serving as before."
        ) from None
    remote.run(system.systemctl("reload", "nginx"))


def enable_proxy(s: Session, check: bool = False) -> None:
    cfg = s.settings
    with s.step(
        "proxy old to new",
        f"old's nginx sends every request for {cfg.domain} to new, WebSockets included",
        undo="fab -H old render-nginx-proxy --undo",
    ):
        site = find_site(s.old, cfg.domain)
        text = proxy_text(s, site)
        current = s.old.fact(
            FileText(site), planned="", then="when it already is the proxy below, skip the rest of this step"
        )
        if known(current) and current == text:
            s.say(f"{site} already proxies to new")
            return
        if check:
            s.show(
                "".join(
                    difflib.unified_diff(
                        (current or "").splitlines(True),
                        text.splitlines(True),
                        f"{site} (now)",
                        f"{site} (proxy)",
                    )
                )
                if known(current)
                else text
            )
            return
        if not (known(current) and current.startswith(MARK_LINE)):
            s.old.run(Cmd(f"install -D -m 0644 {site} {backups(site)[0]}"))
        install_validated(s.old, site, text)


def disable_proxy(s: Session) -> None:
    with s.step(
        "undo the proxy",
        "old's nginx serves the domain itself again, from the site kept before the proxy",
        undo="fab -H old render-nginx-proxy (the proxy again)",
    ):
        site = find_site(s.old, s.settings.domain)
        before = backups(site)[0]
        if s.old.fact(PathExists(before, "-f"), planned=True, then="exit 1: nothing to undo") is False:
            raise StepFailed(f"nothing to undo: {before} does not exist on {s.old.alias}")
        if (
            s.old.fact(ProxiesToNew(site), then="anything else: the site does not proxy, nothing to undo")
            is False
        ):
            s.say(f"{site} does not proxy: nothing to undo")
            return
        install_validated(s.old, site, None, source=before)
        start_old_streaming(s)


def start_old_streaming(s: Session) -> None:
    """Old serves its own clients again, WebSockets included: its streaming server, which phase 2 stopped
    once the proxy ran, starts again (while old's web runs)."""
    cfg = s.settings
    unit = cfg.mastodon_streaming_service
    if (
        s.old.fact(UnitState(cfg.mastodon_web_service), then="`active`: old serves, so its streaming too")
        != "active"
    ):
        return
    if s.old.fact(UnitState(unit), then="anything but `active`: start it") != "active":
        s.old.run(system.systemctl("start", unit))


def probe_through_old(s: Session, timeout: float = 20) -> None:
    """A request to old's public endpoint must be answered by new (it shows in new's access log).
    A reload lets old workers finish with the previous configuration, so the probe is repeated, each
    time with a new marker in its path."""
    cfg = s.settings
    with s.step(
        "verify the proxy",
        "a request through old's public endpoint reaches new",
        undo="not needed: a request changes nothing",
    ):

        def probe() -> tuple[bool, bool]:
            marker = f"/health?mig-probe={secrets.token_hex(8)}"
            answered = s.old.fact(Answers(cfg.domain, marker))
            seen = s.new.fact(
                CountLines(ACCESS_LOG, marker.split("?")[1]),
                then="1 or more: the probe's marker is in new's access log, new answered it",
            )
            return bool(answered), bool(seen)

        try:
            s.wait_until(
                probe,
                all,
                what="a probe through old appears in new's access log",
                timeout=timeout,
                interval=0.5,
                show=lambda seen: "answered, but not by new" if seen[0] else "not answered",
            )
        except StepFailed as error:
            raise StepFailed(
                f"https://{cfg.domain}/health through old's nginx: {error}; undo with: "
                "fab -H old render-nginx-proxy --undo"
            ) from None


@one_host_task(
    "old", help={"undo": "put the previous site back and reload", "check": "show the diff and change nothing"}
)
def render_nginx_proxy(s: Session, undo=False, check=False):
    """Make old's nginx proxy the domain to new (validated with nginx -t; the old site is kept)."""
    if undo:
        disable_proxy(s)
    else:
        enable_proxy(s, check=check)
