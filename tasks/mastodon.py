"""Mastodon on a host: code version, assets, services, health, home feeds, and the smoke test."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar

from . import mastodon_env, redis_cli, system
from .command import Cmd, Remote, Secret, Session, StepFailed, known
from .executor import one_host_task
from .facts import DatabaseFront, Fact, Journal, Output, SecretFileText, UnitEnabled, UnitState, stopped
from .settings import Settings

SERVICES = ("web", "sidekiq", "streaming")


def in_app(cfg: Settings, command: str, stream: bool = False) -> Cmd:
    """A Mastodon command as the mastodon user in its checkout, in production mode. rbenv's shims
    (where Mastodon's install guide puts ruby and bundle, and where its units look) come first on PATH:
    a non-interactive shell does not run `rbenv init` from .bashrc."""
    return Cmd(
        f'cd {cfg.mastodon_dir} && PATH="$HOME/.rbenv/shims:$HOME/.rbenv/bin:$PATH" RAILS_ENV=production '
        f"{command}",
        user=cfg.mastodon_user,
        stream=stream,
    )


def units(cfg: Settings, services: str) -> dict[str, str]:
    """'web,streaming' -> {'web': 'mastodon-web', ...}; an unknown name is an error listing the valid ones."""
    names = [x.strip() for x in services.split(",") if x.strip()]
    unknown = [x for x in names if x not in SERVICES]
    if unknown or not names:
        raise StepFailed(
            f"--services takes a comma-separated subset of {','.join(SERVICES)}; got {services!r}"
        )
    return {x: dict(zip(SERVICES, cfg.mastodon_services, strict=True))[x] for x in names}


# --- facts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health(Fact["list[str]"]):
    """Both health endpoints: web's answer, then streaming's (`down` when one does not answer)."""

    web_port: int
    streaming_port: int
    passes: ClassVar[str] = (
        "prints two lines, web's answer and streaming's: `OK` and `OK` when both are healthy"
    )

    def command(self) -> Cmd:
        return Cmd(
            f"for url in http://127.0.0.1:{self.web_port}/health "
            f"http://127.0.0.1:{self.streaming_port}/api/v1/streaming/health; do "
            f"echo $(curl -s -m 5 $url || echo down); done",
            user=None,
        )

    @staticmethod
    def parse(out: Output) -> list[str]:
        return out.stdout.split()


@dataclass(frozen=True)
class AssetsPresent(Fact[bool]):
    directory: str
    user: str
    passes: ClassVar[str] = "prints a file name when assets are precompiled; nothing when they are not"

    def command(self) -> Cmd:
        return Cmd(
            f"ls -A {self.directory}/public/packs {self.directory}/public/assets 2>/dev/null "
            f"| grep -v : | head -n 1",
            user=self.user,
        )

    @staticmethod
    def parse(out: Output) -> bool:
        return bool(out.stdout.strip())


@dataclass(frozen=True)
class EnvCopied(Fact[bool]):
    """Phase 2's "is this done?" for new's settings: .env.production was written by copy-config."""

    path: str
    passes: ClassVar[str] = "prints 1 when new's .env.production was written by copy-config, else 0"

    def command(self) -> Cmd:
        return Cmd(f"grep -cxF {shlex.quote(mastodon_env.HEADER)} {self.path}")

    @staticmethod
    def parse(out: Output) -> bool:
        return out.stdout.strip() not in ("", "0")


@dataclass(frozen=True)
class HomeFeedsPresent(Fact[bool]):
    """Whether the Redis that a host's Mastodon uses holds home feeds."""

    target: redis_cli.Target  # Mastodon's base Redis (redis_cli.base)
    passes: ClassVar[str] = "prints a `feed:home:<id>` key when home feeds exist; nothing when Redis has none"

    def command(self) -> Cmd:
        return redis_cli.cli(self.target, '--scan --pattern "${P}feed:home:*" | head -n 1')

    @staticmethod
    def parse(out: Output) -> bool:
        return bool(out.stdout.strip())


@dataclass(frozen=True)
class HttpsAnswer(Fact["tuple[int, str]"]):
    """curl to https://DOMAIN/PATH dialled at `address`: SNI, Host and certificate as clients see them.
    Prints the body, then the status code on the last line. A token travels on stdin (curl --config -)."""

    domain: str
    address: str
    path: str
    token: Secret | None = None
    post: str | None = None  # a JSON body
    passes: ClassVar[str] = "prints the answer's body, then its HTTP status on the last line: 200 is a pass"

    def command(self) -> Cmd:
        lines = [f'header = "Authorization: Bearer {self.token.reveal()}"'] if self.token else []
        if self.post is not None:
            lines += ['header = "Content-Type: application/json"', f"data = {json.dumps(self.post)}"]
        return Cmd(
            f"curl -sS -m 20 --resolve {self.domain}:443:{self.address} -w '\\n%{{http_code}}' "
            f"--config - https://{self.domain}{self.path}",
            user=None,
            stdin="\n".join(lines) + "\n",
            secrets=(self.token,) if self.token else (),
        )

    @staticmethod
    def parse(out: Output) -> tuple[int, str]:
        body, _, code = out.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body


def https_request(
    cfg: Settings, address: str, path: str, token: Secret | None = None, post: dict | None = None
) -> HttpsAnswer:
    return HttpsAnswer(cfg.domain, address, path, token, json.dumps(post) if post is not None else None)


def env_path(s: Session) -> str:
    return f"{s.settings.mastodon_dir}/.env.production"


def read_env(s: Session, remote: Remote) -> str | None:
    """A host's .env.production (full of secrets: never printed or logged); None when missing."""
    return remote.fact(SecretFileText(env_path(s), s.settings.mastodon_user))


def env_values(env_text) -> dict[str, str] | None:
    """A read .env.production as values (no file: none set); None in a plan, where it was not read."""
    return mastodon_env.parse(env_text or "") if known(env_text) else None


# --- steps -----------------------------------------------------------------------------------------


def precompile_assets(s: Session, remote: Remote) -> None:
    cfg = s.settings
    with s.step(
        "precompile assets",
        "new serves Mastodon's front end from precompiled assets (the front page fails without them)",
        undo="not needed: public/assets and public/packs only serve files",
    ):
        present = remote.fact(
            AssetsPresent(cfg.mastodon_dir, cfg.mastodon_user),
            then="when it prints a name (and no precompile was cut short), skip the next block",
        )
        if known(present) and present and system.cut_short(remote, "precompile") is None:
            s.say("assets already precompiled")
            return
        with system.unfinished(remote, "precompile"):  # a killed precompile leaves assets that look done
            remote.run(in_app(cfg, "bundle exec rails assets:precompile", stream=True))


def _wait_healthy(s: Session, remote: Remote, chosen: dict[str, str]) -> None:
    """Both health endpoints (of the chosen services) answer OK; else the units' journal is shown."""
    wanted = [x in chosen for x in ("web", "streaming")]
    cfg = s.settings
    try:
        remote.wait_for(
            Health(cfg.mastodon_web_port, cfg.mastodon_streaming_port),
            lambda answers: all(a == "OK" for a, w in zip(answers, wanted, strict=False) if w),
            what="the health endpoints answer OK",
            timeout=90,
            show=" ".join,
        )
    except StepFailed as error:
        journal = remote.fact(Journal(tuple(chosen.values())))
        raise StepFailed(f"{error}. The units' last journal lines:\n{journal}") from None


@dataclass(frozen=True)
class StartedSince(Fact["dict[str, bool]"]):
    """Per unit: whether it is active and was (re)started after the newest of `paths` last changed, so it
    runs with what they say (a web reload keeps its start time: this fact is for the other units)."""

    units: tuple[str, ...]
    paths: tuple[str, ...]
    passes: ClassVar[str] = (
        "prints `changed EPOCH` (the newest change of the files), then `UNIT STATE STARTED` per unit: a unit "
        "is current when `active` and started later"
    )

    def command(self) -> Cmd:
        files = " ".join(shlex.quote(p) for p in self.paths)
        lines = [f"echo changed $(stat -c %.6Y {files} 2>/dev/null | sort -n | tail -n 1)"]
        lines += [
            f'echo {u} $(systemctl is-active {u}) "$(systemctl show -p ActiveEnterTimestamp '
            f'--timestamp=us+utc --value {u})"'
            for u in self.units
        ]
        return Cmd("\n".join(lines))

    @staticmethod
    def parse(out: Output) -> dict[str, bool]:
        changed, current = 0.0, {}
        for line in out.stdout.splitlines():
            word, _, rest = line.partition(" ")
            if word == "changed":
                changed = float(rest or 0)
                continue
            state, _, started = rest.partition(" ")
            current[word] = state == "active" and _epoch(started) > changed
        return current


def _epoch(timestamp: str) -> float:
    """systemd's `Tue 2026-12-01 18:46:32.123456 UTC` as seconds since the epoch (0 when empty)."""
    try:
        return (
            datetime.strptime(timestamp.strip(), "%a %Y-%m-%d %H:%M:%S.%f %Z")
            .replace(tzinfo=timezone.utc)
            .timestamp()
        )
    except ValueError:
        return 0.0


def restart_stale(s: Session, remote: Remote, services: str, since: tuple[str, ...]) -> None:
    """Restart those of `services` that do not run or started before the newest of `since` changed."""
    chosen = units(s.settings, services)
    with s.step(
        f"Mastodon's {', '.join(chosen)} on {remote.role} run with the current settings",
        "each unit started after the last change of " + " and ".join(since) + "; any other is restarted",
        undo="not needed: a restart changes no state",
    ):
        current = remote.fact(
            StartedSince(tuple(chosen.values()), since), then="each unit that is not current is restarted"
        )
        for unit in chosen.values():
            if not known(current) or not current.get(unit):
                system.control_unit(remote, "restart", unit)
        _wait_healthy(s, remote, chosen)


def restart_services(
    s: Session,
    remote: Remote,
    services: str = "web,sidekiq,streaming",
    start: bool = False,
    enable: bool = False,
) -> None:
    """Reload web (its socket stays open, so no request is refused), restart sidekiq and streaming,
    then wait until both health endpoints answer OK."""
    chosen = units(s.settings, services)
    with s.step(
        f"{'start' if start else 'restart'} Mastodon on {remote.role}",
        "units: " + ", ".join(chosen.values()),
        undo="not needed: a reload or restart changes no state",
    ):
        if enable:
            remote.run(system.systemctl("enable", *chosen.values()))
        for name, unit in chosen.items():
            active = (
                remote.fact(UnitState(unit), then="a unit that is not active is started, not reloaded")
                == "active"
            )
            system.control_unit(
                remote, "start" if start and not active else "reload" if name == "web" else "restart", unit
            )
        _wait_healthy(s, remote, chosen)


def start_services(s: Session, remote: Remote, restart: bool) -> None:
    """Enable and start whatever unit is not yet; restart running ones only when `restart` (their
    configuration changed). Then wait for health."""
    chosen = units(s.settings, ",".join(SERVICES))
    with s.step(
        f"Mastodon runs on {remote.role}",
        "units enabled and active: " + ", ".join(chosen.values()),
        undo=f"ssh {remote.alias} -- sudo systemctl disable --now " + " ".join(chosen.values()),
    ):
        for name, unit in chosen.items():
            if remote.fact(UnitEnabled(unit), then="anything but `enabled`: enable it") != "enabled":
                remote.run(system.systemctl("enable", unit))
            if remote.fact(UnitState(unit), then="anything but `active`: start it") != "active":
                system.control_unit(remote, "start", unit)
            elif restart:
                system.control_unit(remote, "reload" if name == "web" else "restart", unit)
        _wait_healthy(s, remote, chosen)


def move_streaming_clients(s: Session) -> None:
    """Once old proxies to new: old's streaming server hears only old's Redis, where new's Mastodon publishes
    nothing, so its clients would hear nothing new until phase 3 stops it. Stopped now, it sends them to
    reconnect at once: through the proxy, to new's streaming server (and Mastodon's web client fetches
    what it missed on reconnect). Old's web and Sidekiq run on until phase 3 drains them."""
    unit = s.settings.mastodon_streaming_service
    with s.step(
        "old's streaming clients reconnect to new",
        f"{unit} stops on old: each WebSocket it held closes, and the client reconnects through the proxy "
        "to new's streaming server",
        undo=f"ssh {s.old.alias} -- sudo systemctl start {unit}",
    ):
        if not stopped(s.old.fact(UnitState(unit), then="anything but `inactive` or `failed`: stop it")):
            s.old.run(system.systemctl("stop", unit))


def feeds_present(s: Session, remote: Remote, env_text) -> bool | None:
    """Whether the host's Redis holds home feeds (None when planning)."""
    found = remote.fact(
        HomeFeedsPresent(redis_cli.base(env_values(env_text))),
        then="when it prints a key, the feeds are built: skip the next block",
    )
    return found if known(found) else None


def build_feeds(
    s: Session,
    remote: Remote,
    env_text,
    account: str | None = None,
    concurrency: int = 5,
    force: bool = False,
) -> None:
    cfg = s.settings
    with s.step(
        "build home feeds",
        "new's Redis starts empty: without this every home timeline would be blank",
        undo="not needed: feeds are a cache (tootctl feeds clear empties them)",
    ):
        if (
            not account
            and not force
            and feeds_present(s, remote, env_text)
            and system.cut_short(remote, "feeds-build") is None
        ):
            s.say("home feeds already built")
            return
        target = account or "--all"
        with system.unfinished(remote, "feeds-build"):  # any feed counts as built: a cut-short build too
            remote.run(
                in_app(cfg, f"bin/tootctl feeds build {target} --concurrency {int(concurrency)}", stream=True)
            )


def _token(cfg: Settings) -> Secret | None:
    if not cfg.smoke_test_token_file:
        return None
    return Secret(
        cfg.smoke_test_token_file.read_text().strip(), f"SMOKE_TEST_TOKEN_FILE ({cfg.smoke_test_token_file})"
    )


def smoke_test(s: Session, post: bool = False) -> None:
    """Requests to new directly (from old, as a client would after DNS moves): health, the front
    page, a home timeline; optionally a post, which writes to old's database through the tunnel."""
    cfg = s.settings
    with s.step(
        "smoke test of new",
        f"before traffic moves: https://{cfg.domain} on new ({cfg.new_address}) "
        "answers like the live instance",
        undo="not needed: the requests change nothing (a --smoke-post "
        "post is private; delete it in the web interface if you like)",
    ):
        token = _token(s.settings)
        checks = [
            ("/health", None, lambda code, body: code == 200 and body.strip() == "OK"),
            ("/", None, lambda code, body: code == 200),
        ]
        if token:
            checks.append(
                (
                    "/api/v1/timelines/home?limit=1",
                    token,
                    lambda code, body: code == 200 and body.strip() not in ("", "[]"),
                )
            )
        else:
            s.say("SMOKE_TEST_TOKEN_FILE is not set: home timelines are not checked")
        failed = []
        for path, auth, good in checks:
            code, body = s.old.fact(
                https_request(cfg, cfg.new_address, path, auth),
                planned=(200, "OK"),
                then="anything but 200 stops the phase before the proxy is switched",
            )
            if not s.planning and not good(code, body):
                failed.append(f"{path} answered {code}: {body.strip()[:200]}")
        if post and token:
            code, body = s.old.fact(
                https_request(
                    cfg,
                    cfg.new_address,
                    "/api/v1/statuses",
                    token,
                    post={
                        "status": f"mastodon-migration smoke test {time.strftime('%Y-%m-%d %H:%M:%S')}",
                        "visibility": "private",
                    },
                ),
                planned=(200, "{}"),
            )
            if not s.planning and code != 200:
                failed.append(f"a test post answered {code}: {body.strip()[:200]}")
        if failed:
            raise StepFailed("new is not ready for traffic: " + "; ".join(failed))


def use_local_database(s: Session) -> bool:
    """new's Mastodon talks to new's own (promoted) cluster. Returns whether the file changed."""
    cfg = s.settings
    with s.step(
        "point Mastodon at new's database",
        "new's .env.production reaches new's own cluster the way old's reached old's: the socket (peer) "
        f"where old used it, else 127.0.0.1:{cfg.pg_port}",
        undo="none after the promotion: new's database is the only primary",
    ):
        text, old_text = read_env(s, s.new), read_env(s, s.old)
        if text is None:
            raise StepFailed(f"new has no {env_path(s)}")
        old_values = env_values(old_text)
        front = s.old.fact(
            DatabaseFront(
                mastodon_env.database_address(old_values)[1] if old_values is not None else "<DB_PORT>"
            ),
            then="PgBouncer there: new takes PostgreSQL's own port (new runs none)",
        )
        pooled = known(front) and front.pgbouncer
        want = (
            mastodon_env.point_at_local_database(text, old_text or "", cfg.pg_port, pooled)
            if known(text) and known(old_text)
            else "<new's .env.production>"
        )
        if known(text) and want == text:
            return False
        secret = Secret(want, "new's .env.production, its database on new")
        s.new.write_file(env_path(s), want, owner=cfg.mastodon_user, mode="0600", secrets=(secret,))
        return True


@dataclass(frozen=True)
class CanWrite(Fact[bool]):
    """A write transaction as Mastodon logs in from its .env.production: as its Unix user, to DB_HOST (a
    socket directory means peer authentication), with DB_PASS when set (in the script, on stdin)."""

    host: str
    port: str
    user: str
    database: str
    password: Secret | None  # None: a plan, which does not know whether there is one
    unix_user: str = "mastodon"

    passes: ClassVar[str] = "prints a transaction id and exits 0 once Mastodon's role can write there"

    def command(self) -> Cmd:
        if self.password is None:
            password = "<export PGPASSWORD=DB_PASS from .env.production, or unset PGPASSWORD>"
        elif self.password.reveal():
            password = f"export PGPASSWORD={shlex.quote(self.password.reveal())}"
        else:
            password = "unset PGPASSWORD"
        return Cmd(
            f"{password}\npsql -w -XAtq -h {shlex.quote(self.host)} -p {self.port} -U {self.user} "
            f"-d {self.database} -c 'SELECT pg_current_xact_id()'",
            user=self.unix_user,
            secrets=(self.password,) if self.password else (),
        )

    @staticmethod
    def parse(out: Output) -> bool:
        return out.ok


def probe_write(s: Session) -> None:
    """The first write new's Mastodon accepts: a post through the public endpoint by the smoke-test
    account, else a write transaction as Mastodon's database role on new."""
    cfg = s.settings
    token = _token(cfg)
    if token:
        s.old.wait_for(
            https_request(
                cfg,
                "127.0.0.1",
                "/api/v1/statuses",
                token,
                post={
                    "status": f"mastodon-migration failover probe {time.strftime('%Y-%m-%d %H:%M:%S')}",
                    "visibility": "private",
                },
            ),
            lambda answer: answer[0] == 200,
            what="a post through old's public endpoint is accepted",
            timeout=120,
            interval=0.1,
            show=lambda answer: f"HTTP {answer[0]}",
        )
        return
    values = mastodon_env.parse(read_env(s, s.new) or "") if not s.planning else {}
    password = None if s.planning else Secret(values.get("DB_PASS", ""), "DB_PASS in new's .env.production")
    s.new.wait_for(
        CanWrite(
            values.get("DB_HOST") or "localhost",
            values.get("DB_PORT") or "5432",
            values.get("DB_USER") or "mastodon",
            values.get("DB_NAME") or "mastodon_production",
            password,
            cfg.mastodon_user,
        ),
        bool,
        what="Mastodon's database role can write on new",
        timeout=60,
        interval=0.1,
        show=lambda ok: "not yet",
    )


# --- tasks -----------------------------------------------------------------------------------------


@one_host_task("new")
def precompile(s: Session):
    """Precompile Mastodon's assets on new (RAILS_ENV=production bundle exec rails assets:precompile)."""
    precompile_assets(s, s.new)


@one_host_task(
    "new",
    help={
        "account": "rebuild one account's feed instead of all",
        "concurrency": "accounts rebuilt in parallel",
    },
)
def feeds_build(s: Session, account=None, concurrency=5):
    """Rebuild home feeds from the database (tootctl feeds build): new's Redis starts empty."""
    build_feeds(s, s.new, None, account=account, concurrency=concurrency, force=True)


@one_host_task(
    "new",
    "old",
    help={
        "services": "comma-separated subset: web,sidekiq,streaming",
        "start": "first start: start the units instead of reloading",
        "enable": "also enable the units at boot",
    },
)
def restart(s: Session, services="web,sidekiq,streaming", start=False, enable=False):
    """Reload Mastodon's web and restart sidekiq and streaming on one host, then wait for health."""
    (remote,) = s.hosts.values()
    restart_services(s, remote, services, start=start, enable=enable)
