"""Copying from old to new: nginx site, certificates, .env.production and local media.

Files pass through the operator's connection (secrets on stdin, never logged). Media goes host to
host with rsync, pulled by new with a key that old allows only a read-only rsync of one directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import mastodon_env, nginx, system, tunnel
from .command import Cmd, Secret, Session, StepFailed, known
from .executor import two_host_task
from .facts import Fact, FileText, HomeDir, LinesWith, LinkTarget, Output, PathExists, PublicKey
from .mastodon import env_path, read_env

COPY_HEADER = "# Copied from old by mastodon-migration copy-config."
LETSENCRYPT = "/etc/letsencrypt"
MEDIA_KEY = "mastodon-migration-media"


def _cert_files(domain: str) -> str:
    return f"live/{domain} archive/{domain} renewal/{domain}.conf"


@dataclass(frozen=True)
class CertListing(Fact[str]):
    """Checksums of the domain's certificate files and the targets of its symlinks ('' when none)."""

    domain: str
    passes: ClassVar[str] = (
        "prints a checksum per certificate file and the target of each link: the same on "
        "both hosts once copied; nothing when there are none"
    )

    def command(self) -> Cmd:
        return Cmd(
            f"cd {LETSENCRYPT} 2>/dev/null && find {_cert_files(self.domain)} \\( -type f -exec sha256sum "
            "{} + \\) -o \\( -type l -printf '%l  %p\\n' \\) 2>/dev/null | sort"
        )

    @staticmethod
    def parse(out: Output) -> str:
        return out.stdout


@dataclass(frozen=True)
class CertArchive(Fact["str | None"]):
    """The domain's certificate files as a base64 tar (private keys: read for the tool only)."""

    domain: str
    passes: ClassVar[str] = (
        "prints the archive (base64): it holds private keys, so it goes straight into the next block"
    )

    def command(self) -> Cmd:
        return Cmd(f"tar -C {LETSENCRYPT} -czf - {_cert_files(self.domain)} | base64 -w0", secret_output=True)

    @staticmethod
    def parse(out: Output) -> str | None:
        return out.stdout if out.ok else None


# --- nginx site and certificates -------------------------------------------------------------------


def copy_site(s: Session, force: bool) -> bool:
    cfg = s.settings
    with s.step(
        "nginx site",
        f"new serves {cfg.domain} with old's own site (as before any proxy)",
        undo="the replaced file on new is kept as <file>.mig-<time>",
    ):
        site = nginx.find_site(s.old, cfg.domain)
        text = s.old.fact(
            FileText(site),
            planned=f"<old's {site}>",
            then="when it starts with the proxy's mark, the site before the proxy is copied instead",
        )
        if known(text) and text.startswith(nginx.MARK_LINE):  # old already proxies: copy the site it replaced
            text = s.old.fact(FileText(nginx.backups(site)[0]))
        if text is None:
            raise StepFailed(f"could not read old's site {site}")
        have = s.new.fact(
            FileText(site), then="when it is already old's site (with the copy's header), skip the next block"
        )
        changed = system.converge_file(
            s.new, site, f"{COPY_HEADER}\n{text}", have, header=COPY_HEADER, force=force
        )
        if site.startswith("/etc/nginx/sites-available/"):
            link = "/etc/nginx/sites-enabled/" + site.rsplit("/", 1)[-1]
            if s.new.fact(LinkTarget(link), then="when it prints the site, the link is in place") != site:
                s.new.run(Cmd(f"ln -sfn {site} {link}"))
                changed = True
        return changed


def copy_certificates(s: Session, force: bool) -> bool:
    cfg = s.settings
    with s.step(
        "certificates",
        f"new gets {LETSENCRYPT} for {cfg.domain} (live, archive, renewal; links and modes kept)",
        undo="a replaced set is kept as /var/lib/mastodon-migration/letsencrypt-<time>.tgz on new",
    ):
        want = s.old.fact(CertListing(cfg.domain))
        if known(want) and not want.strip():
            raise StepFailed(f"old has no certificate for {cfg.domain} in {LETSENCRYPT}")
        have = s.new.fact(
            CertListing(cfg.domain), then="when it prints the same as old, skip the rest of this step"
        )
        if known(have) and have == want:
            return False
        if known(have) and have.strip():
            if not force:
                raise StepFailed(
                    f"new already has different certificate files for {cfg.domain}; nothing was "
                    "changed. Run again with --force to replace them (they are kept in a backup)."
                )
            s.new.run(
                Cmd(
                    f"mkdir -p /var/lib/mastodon-migration && tar -C {LETSENCRYPT} -czf "
                    f"/var/lib/mastodon-migration/letsencrypt-$(date +%Y%m%d%H%M%S).tgz "
                    f"{_cert_files(cfg.domain)}"
                )
            )
        archive = s.old.fact(CertArchive(cfg.domain), planned="<certificate archive from old>")
        secret = Secret(archive, f"old's certificate files for {cfg.domain} (tar, base64)")
        s.new.run(
            Cmd(
                f"install -d -m 0755 {LETSENCRYPT} && install -d -m 0700 {LETSENCRYPT}/live "
                f"{LETSENCRYPT}/archive && base64 -d | tar -C {LETSENCRYPT} -xzpf -",
                stdin=archive,
                secrets=(secret,),
            )
        )
        if known(want) and s.new.fact(CertListing(cfg.domain)) != want:
            raise StepFailed("the certificate files on new do not match old's after the copy")
        return True


# --- .env.production -------------------------------------------------------------------------------


def copy_env(s: Session, force: bool) -> bool:
    cfg = s.settings
    pooled = cfg.database_endpoint == "pgbouncer"
    database = (
        f"new's PgBouncer (DB_PORT={cfg.pgbouncer_port}, PREPARED_STATEMENTS=false), which reaches old's "
        "database through the tunnel"
        if pooled
        else f"the database through the tunnel (DB_HOST=127.0.0.1, DB_PORT={cfg.tunnel_port})"
    )
    with s.step(
        ".env.production",
        f"new's Mastodon uses old's settings, with {database} and old trusted as a proxy (TRUSTED_PROXY_IP)",
        undo="the replaced file on new is kept as .env.production.mig-<time>",
    ):
        old_text = read_env(s, s.old)
        if old_text is None:
            raise StepFailed(f"old has no readable {env_path(s)}")
        have = read_env(s, s.new)
        want = (
            mastodon_env.rewrite_for_new(
                old_text, cfg.tunnel_port, cfg.old_address_from_new, cfg.pgbouncer_port if pooled else 0
            )
            if known(old_text)
            else "<old's .env.production, rewritten>"
        )
        secret = Secret(
            want,
            f"old's .env.production with {database} and {cfg.old_address_from_new} added to TRUSTED_PROXY_IP",
        )
        changed = system.converge_file(
            s.new,
            env_path(s),
            want,
            have,
            header=mastodon_env.HEADER,
            force=force,
            owner=cfg.mastodon_user,
            mode="0600",
            secrets=(secret,),
        )
        if changed and known(old_text):
            s.show(mastodon_env.masked_diff(old_text, want, "old:.env.production", "new:.env.production"))
        return changed


def copy_configuration(s: Session, force: bool = False) -> bool:
    """Returns whether .env.production changed (running Mastodon units must then restart)."""
    certificates_changed = copy_certificates(s, force)
    site_changed = copy_site(s, force)
    if certificates_changed or site_changed:
        with s.step(
            "reload nginx on new",
            "new's nginx serves the copied site and certificates",
            undo="not needed: a reload changes no file",
        ):
            s.new.run(Cmd("nginx -t"))
            s.new.run(system.systemctl("reload", "nginx"))
    return copy_env(s, force)


# --- media -------------------------------------------------------------------------------------------


def _home(s: Session, remote) -> str:
    return remote.fact(HomeDir(s.settings.mastodon_user), planned=f"/home/{s.settings.mastodon_user}")


def ensure_media_access(s: Session) -> str:
    """new's media key, allowed on old only for a read-only rsync of public/system. Returns new's key path."""
    cfg = s.settings
    with s.step(
        "media key",
        "new pulls public/system with a key old restricts to read-only rsync of that directory",
        undo=f"remove the line ending in {MEDIA_KEY} from old's ~{cfg.mastodon_user}/.ssh/authorized_keys",
    ):
        home = _home(s, s.new)
        key = f"{home}/.ssh/{MEDIA_KEY}"
        read = PublicKey(f"{key}.pub", cfg.mastodon_user)
        public = s.new.fact(read, then="when it prints a key, skip the next block")
        if not known(public) or public is None:
            s.new.run(
                Cmd(
                    f"mkdir -p -m 700 {home}/.ssh && ssh-keygen -q -t ed25519 -N '' -C {MEDIA_KEY} -f {key}",
                    user=cfg.mastodon_user,
                )
            )
            public = s.new.fact(read, planned="<new's media key>")
        authorized = f"{_home(s, s.old)}/.ssh/authorized_keys"
        line = (
            f'restrict,command="/usr/bin/rrsync -ro {cfg.mastodon_dir}/public/system" {public} {MEDIA_KEY}\n'
        )
        if (
            s.old.fact(
                LinesWith(authorized, f" {MEDIA_KEY}", cfg.mastodon_user),
                then="when it prints exactly the line below, skip the next block",
            )
            != line
        ):
            if s.old.fact(PathExists("/usr/bin/rrsync", "-x")) is False:
                raise StepFailed(
                    "old has no /usr/bin/rrsync (Debian's rsync package ships it); install rsync on old"
                )
            s.old.run(system.replace_lines(authorized, f" {MEDIA_KEY}", line, user=cfg.mastodon_user))
        known_hosts = f"{home}/.ssh/mastodon-migration.known_hosts"
        want = tunnel.known_hosts_line(s, tunnel.read_old_host_key(s))
        if (
            s.new.fact(
                FileText(known_hosts, cfg.mastodon_user),
                then="when it prints the line below, skip the next block",
            )
            != want
        ):
            s.new.write_file(known_hosts, want, owner=cfg.mastodon_user, mode="0644")
        return key


def remove_media_access(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "end media sync",
        "new's media key and old's permission for it go",
        undo="not needed: phase 2 creates them again",
    ):
        home = _home(s, s.new)
        system.remove_files(
            s.new,
            f"{home}/.ssh/{MEDIA_KEY}",
            f"{home}/.ssh/{MEDIA_KEY}.pub",
            f"{home}/.ssh/mastodon-migration.known_hosts",
        )
        system.remove_marked_lines(
            s.old, f"{_home(s, s.old)}/.ssh/authorized_keys", f" {MEDIA_KEY}", user=cfg.mastodon_user
        )


def sync_media(s: Session, why: str) -> None:
    cfg = s.settings
    with s.step(
        "media sync", why, undo="not needed: files are only added on new (no --delete), never changed on old"
    ):
        env = read_env(s, s.old)
        if known(env) and env is not None and not mastodon_env.local_media(mastodon_env.parse(env)):
            s.say("S3_ENABLED=true: media lives in object storage, nothing to copy")
            return
        key = ensure_media_access(s)
        home = key.rsplit("/.ssh/", 1)[0]
        s.new.run(
            Cmd(
                f"mkdir -p {cfg.mastodon_dir}/public/system && "
                f"rsync -a --info=stats1 -e 'ssh -i {key} -o BatchMode=yes -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={home}/.ssh/mastodon-migration.known_hosts "
                f"-p {cfg.old_ssh_port_from_new}' "
                f"{cfg.mastodon_user}@{cfg.old_address_from_new}:./ {cfg.mastodon_dir}/public/system/",
                user=cfg.mastodon_user,
                stream=True,
            )
        )


@two_host_task(help={"force": "overwrite files on new that differ and were not written by this tool"})
def copy_config(s: Session, force=False):
    """Copy nginx, certificates and .env.production (pointed at the tunnel) from old to new."""
    copy_configuration(s, force)
