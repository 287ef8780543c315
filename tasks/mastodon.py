"""Mastodon on a host: code version, assets, services, health, home feeds, and the smoke test."""
from __future__ import annotations

import json
import shlex
import time

from . import mastodon_env, redis_cli, system
from .command import Cmd, CommandFailed, Remote, Secret, Session, StepFailed, known
from .executor import one_host_task
from .facts import Output
from .settings import Settings

SERVICES = ("web", "sidekiq", "streaming")


def code_revision(cfg: Settings) -> Cmd:
    """The git revision of the checkout, or a checksum of the version file when it is no git checkout."""
    return Cmd(f"cd {cfg.mastodon_dir} && {{ git rev-parse HEAD 2>/dev/null || sha256sum lib/mastodon/version.rb; }}",
               user=cfg.mastodon_user)


def in_app(cfg: Settings, command: str, stream: bool = False) -> Cmd:
    """A Mastodon command as the mastodon user in its checkout, in production mode. rbenv's shims
    (where Mastodon's install guide puts ruby and bundle, and where its units look) come first on PATH:
    a non-interactive shell does not run `rbenv init` from .bashrc."""
    return Cmd(f'cd {cfg.mastodon_dir} && PATH="$HOME/.rbenv/shims:$HOME/.rbenv/bin:$PATH" RAILS_ENV=production '
               f"{command}", user=cfg.mastodon_user, stream=stream)


def units(cfg: Settings, services: str) -> dict[str, str]:
    """'web,streaming' -> {'web': 'mastodon-web', ...}; unknown names are an error that lists the valid ones."""
    names = [x.strip() for x in services.split(",") if x.strip()]
    unknown = [x for x in names if x not in SERVICES]
    if unknown or not names:
        raise StepFailed(f"--services takes a comma-separated subset of {','.join(SERVICES)}; got {services!r}")
    return {x: dict(zip(SERVICES, cfg.mastodon_services))[x] for x in names}


def health(cfg: Settings) -> Cmd:
    """Both health endpoints; prints two lines: web's and streaming's answer."""
    return Cmd(f"for url in http://127.0.0.1:{cfg.mastodon_web_port}/health "
               f"http://127.0.0.1:{cfg.mastodon_streaming_port}/api/v1/streaming/health; do "
               f"echo $(curl -s -m 5 $url || echo down); done", user=None)


def env_path(s: Session) -> str:
    return f"{s.settings.mastodon_dir}/.env.production"


def read_env(s: Session, remote: Remote) -> str | None:
    """A host's .env.production (full of secrets: never printed or logged); None when missing."""
    return remote.fact(Cmd(f"cat {env_path(s)}", user=s.settings.mastodon_user, secret_output=True),
                       lambda out: out.stdout if out.ok else None)


def env_values(env_text) -> dict[str, str] | None:
    """A read .env.production as values (no file: none set); None in a plan, where it was not read."""
    return mastodon_env.parse(env_text or "") if known(env_text) else None


# --- steps -----------------------------------------------------------------------------------------

def precompile_assets(s: Session, remote: Remote) -> None:
    cfg = s.settings
    s.step("precompile assets", "new serves Mastodon's front end from precompiled assets (the front page "
           "fails without them)", undo="nothing to undo: public/assets and public/packs only serve files")
    present = remote.fact(Cmd(f"ls -A {cfg.mastodon_dir}/public/packs {cfg.mastodon_dir}/public/assets 2>/dev/null "
                              f"| grep -v : | head -n 1", user=cfg.mastodon_user), lambda out: out.stdout.strip())
    if known(present) and present:
        print("  assets already precompiled", flush=True)
        return
    remote.run(in_app(cfg, "bundle exec rails assets:precompile", stream=True))


def _wait_healthy(s: Session, remote: Remote, chosen: dict[str, str]) -> None:
    """Both health endpoints (of the chosen services) answer OK; else the units' journal is shown."""
    wanted = [x in chosen for x in ("web", "streaming")]
    try:
        remote.wait_for(health(s.settings), lambda out: out.stdout.split(),
                        lambda answers: all(a == "OK" for a, w in zip(answers, wanted) if w),
                        what="the health endpoints answer OK", timeout=90, show=" ".join)
    except StepFailed as error:
        journal = remote.fact(Cmd(f"journalctl -u {' -u '.join(chosen.values())} -n 25 --no-pager"),
                              lambda out: out.stdout)
        raise StepFailed(f"{error}. The units' last journal lines:\n{journal}") from None


def _systemctl(remote: Remote, action: str, unit: str) -> None:
    try:
        remote.run(system.systemctl(action, unit))
    except CommandFailed:
        journal = remote.fact(Cmd(f"journalctl -u {unit} -n 25 --no-pager"), lambda out: out.stdout)
        raise StepFailed(f"{unit} did not {action} on {remote.alias}. Its last journal lines:\n{journal}") from None


def restart_services(s: Session, remote: Remote, services: str = "web,sidekiq,streaming", start: bool = False,
                     enable: bool = False) -> None:
    """Reload web (its socket stays open, so no request is refused), restart sidekiq and streaming,
    then wait until both health endpoints answer OK."""
    chosen = units(s.settings, services)
    s.step(f"{'start' if start else 'restart'} Mastodon on {remote.role}", "units: " + ", ".join(chosen.values()),
           undo="none needed: a reload or restart changes no state")
    if enable:
        remote.run(system.systemctl("enable", *chosen.values()))
    for name, unit in chosen.items():
        active = remote.fact(system.unit_state(unit), lambda out: out.stdout.strip()) == "active"
        _systemctl(remote, "start" if start and not active else "reload" if name == "web" else "restart", unit)
    _wait_healthy(s, remote, chosen)


def start_services(s: Session, remote: Remote, restart: bool) -> None:
    """Enable and start whatever unit is not yet; restart running ones only when `restart` (their
    configuration changed). Then wait for health."""
    chosen = units(s.settings, ",".join(SERVICES))
    s.step(f"Mastodon runs on {remote.role}", "units enabled and active: " + ", ".join(chosen.values()),
           undo=f"ssh {remote.alias} -- sudo systemctl disable --now " + " ".join(chosen.values()))
    for name, unit in chosen.items():
        if remote.fact(system.unit_enabled(unit), lambda out: out.stdout.strip()) != "enabled":
            remote.run(system.systemctl("enable", unit))
        if remote.fact(system.unit_state(unit), lambda out: out.stdout.strip()) != "active":
            _systemctl(remote, "start", unit)
        elif restart:
            _systemctl(remote, "reload" if name == "web" else "restart", unit)
    _wait_healthy(s, remote, chosen)


def feeds_present(s: Session, remote: Remote, env_text) -> bool | None:
    """Whether the host's Redis holds home feeds (None when planning)."""
    values = env_values(env_text)
    found = remote.fact(redis_cli.cli(values, "--scan --pattern 'feed:home:*' | head -n 1"),
                        lambda out: bool(out.stdout.strip()))
    return found if known(found) else None


def build_feeds(s: Session, remote: Remote, env_text, account: str | None = None, concurrency: int = 5,
                force: bool = False) -> None:
    cfg = s.settings
    s.step("build home feeds", "new's Redis starts empty: without this every home timeline would be blank",
           undo="nothing to undo: feeds are a cache (tootctl feeds clear empties them)")
    if not account and not force and feeds_present(s, remote, env_text):
        print("  home feeds already built", flush=True)
        return
    target = account or "--all"
    remote.run(in_app(cfg, f"bin/tootctl feeds build {target} --concurrency {int(concurrency)}", stream=True))


def _token(cfg: Settings) -> Secret | None:
    if not cfg.smoke_test_token_file:
        return None
    return Secret(cfg.smoke_test_token_file.read_text().strip(), f"SMOKE_TEST_TOKEN_FILE ({cfg.smoke_test_token_file})")


def https_request(cfg: Settings, address: str, path: str, token: Secret | None = None, post: dict | None = None) -> Cmd:
    """curl to https://DOMAIN/PATH dialled at `address`: SNI, Host and certificate as clients see them.
    Prints the body, then the status code on the last line. A token travels on stdin (curl --config -)."""
    lines = [f'header = "Authorization: Bearer {token.reveal()}"'] if token else []
    if post is not None:
        lines += ['header = "Content-Type: application/json"', f"data = {json.dumps(json.dumps(post))}"]
    return Cmd(f"curl -sS -m 20 --resolve {cfg.domain}:443:{address} -w '\\n%{{http_code}}' "
               f"--config - https://{cfg.domain}{path}", user=None, stdin="\n".join(lines) + "\n",
               secrets=(token,) if token else ())


def _status_and_body(out: Output) -> tuple[int, str]:
    body, _, code = out.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def smoke_test(s: Session, post: bool = False) -> None:
    """Requests to new directly (from old, as a client would after DNS moves): health, the front
    page, a home timeline; optionally a post, which writes to old's database through the tunnel."""
    cfg = s.settings
    s.step("smoke test of new", f"before traffic moves: https://{cfg.domain} on new ({cfg.new_address}) answers "
           "like the live instance")
    token = _token(s.settings)
    checks = [("/health", None, lambda code, body: code == 200 and body.strip() == "OK"),
              ("/", None, lambda code, body: code == 200)]
    if token:
        checks.append(("/api/v1/timelines/home?limit=1", token,
                       lambda code, body: code == 200 and body.strip() not in ("", "[]")))
    else:
        print("  SMOKE_TEST_TOKEN_FILE is not set: home timelines are not checked", flush=True)
    failed = []
    for path, auth, good in checks:
        code, body = s.old.fact(https_request(cfg, cfg.new_address, path, auth), _status_and_body,
                                planned=(200, "OK"))
        if not s.planning and not good(code, body):
            failed.append(f"{path} answered {code}: {body.strip()[:200]}")
    if post and token:
        code, body = s.old.fact(https_request(cfg, cfg.new_address, "/api/v1/statuses", token, post={
            "status": f"mastodon-migration smoke test {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "visibility": "private"}), _status_and_body, planned=(200, "{}"))
        if not s.planning and code != 200:
            failed.append(f"a test post answered {code}: {body.strip()[:200]}")
    if failed:
        raise StepFailed("new is not ready for traffic: " + "; ".join(failed))


def use_local_database(s: Session) -> bool:
    """new's Mastodon talks to new's own (promoted) cluster. Returns whether the file changed."""
    cfg = s.settings
    s.step("point Mastodon at new's database", f"DB_HOST=127.0.0.1, DB_PORT={cfg.pg_port} in new's .env.production",
           undo="none after the promotion: new's database is the only primary")
    text = read_env(s, s.new)
    if text is None:
        raise StepFailed(f"new has no {env_path(s)}")
    want = mastodon_env.point_at_local_database(text, cfg.pg_port) if known(text) else "<new's .env.production>"
    if known(text) and want == text:
        return False
    secret = Secret(want, f"new's .env.production with DB_HOST=127.0.0.1, DB_PORT={cfg.pg_port}")
    s.new.write_file(env_path(s), want, owner=cfg.mastodon_user, mode="0600", secrets=(secret,))
    return True


def probe_write(s: Session) -> None:
    """The first write new's Mastodon accepts: a post through the public endpoint by the smoke-test
    account, else a write transaction as Mastodon's database role on new."""
    cfg = s.settings
    token = _token(cfg)
    if token:
        s.old.wait_for(https_request(cfg, "127.0.0.1", "/api/v1/statuses", token, post={
            "status": f"mastodon-migration failover probe {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "visibility": "private"}), _status_and_body, lambda answer: answer[0] == 200,
            what="a post through old's public endpoint is accepted", timeout=120, interval=0.1,
            show=lambda answer: f"HTTP {answer[0]}")
        return
    values = mastodon_env.parse(read_env(s, s.new) or "") if not s.planning else {}
    password = Secret(values.get("DB_PASS", ""), "DB_PASS in new's .env.production")
    s.new.wait_for(Cmd(f"export PGPASSWORD={shlex.quote(password.reveal())}; psql -XAtq -h 127.0.0.1 -p {cfg.pg_port} "
                       f"-U {values.get('DB_USER', 'mastodon')} -d {values.get('DB_NAME', 'mastodon_production')} "
                       "-c 'SELECT pg_current_xact_id()'", user=None, secrets=(password,)),
                   lambda out: out.ok, bool, what="Mastodon's database role can write on new", timeout=60,
                   interval=0.1, show=lambda ok: "not yet")


# --- tasks -----------------------------------------------------------------------------------------

@one_host_task("new")
def precompile(s: Session):
    """Precompile Mastodon's assets on new (RAILS_ENV=production bundle exec rails assets:precompile)."""
    precompile_assets(s, s.new)


@one_host_task("new", help={"account": "rebuild one account's feed instead of all",
                            "concurrency": "accounts rebuilt in parallel"})
def feeds_build(s: Session, account=None, concurrency=5):
    """Rebuild home feeds from the database (tootctl feeds build): new's Redis starts empty."""
    build_feeds(s, s.new, None, account=account, concurrency=concurrency, force=True)


@one_host_task("new", "old", help={"services": "comma-separated subset: web,sidekiq,streaming",
                                   "start": "first start: start the units instead of reloading",
                                   "enable": "also enable the units at boot"})
def restart(s: Session, services="web,sidekiq,streaming", start=False, enable=False):
    """Reload Mastodon's web and restart sidekiq and streaming on one host, then wait for health."""
    (remote,) = s.hosts.values()
    restart_services(s, remote, services, start=start, enable=enable)
